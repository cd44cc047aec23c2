"""A search's trials as data: the seeded plan of a random or grid search, each trial's key, its values
checked against the schema, and ``trials.json``, the record of what every trial of every launch did.

The record (plain JSON) and the trials' own run files are all a relaunch resumes from. Tune's own
state (``tuner.pkl``, its experiment state and searcher files) is never read back: those are
pickles, and unpickling a file from run storage, often a shared bucket, runs whatever code was put
into it. A trial trains in ``trials/<key>/`` as a Ray Train run, which resumes from its own
checkpoint (a JSON snapshot and a ``weights_only`` state file); its per-epoch metrics are that run's
``metrics.jsonl``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from vfmkd_ray import run_files, storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, set_dotted, validate_config
from vfmkd_ray.config_yaml import echo
from vfmkd_ray.schema import StrictModel
from vfmkd_ray.tune.config import Dimension

TRIALS_DIR = "trials"
RECORD_FILE = "trials.json"
# Files Tune wrote in a search directory before searches were recorded in trials.json.
TUNE_STATE_FILES = ("tuner.pkl",)
TrialStatus = Literal["started", "finished", "stopped", "failed"]
ENDED: tuple[TrialStatus, ...] = ("finished", "stopped")  # a relaunch does not run these again


class TrialRecord(StrictModel):
    key: str = Field(pattern=r"^trial_\d{4,}$")  # also the trial's run name: trials/<key>/
    params: dict[str, Any]  # dotted config key -> value
    status: TrialStatus
    error: str | None = None  # the first line of a failed trial's error


class SearchRecord(StrictModel):
    version: Literal[1] = 1
    trials: list[TrialRecord] = Field(default_factory=list)

    def by_key(self) -> dict[str, TrialRecord]:
        return {trial.key: trial for trial in self.trials}

    def set(self, trial: TrialRecord) -> None:
        self.trials = [t for t in self.trials if t.key != trial.key] + [trial]
        self.trials.sort(key=lambda t: t.key)


def trial_key(index: int) -> str:
    return f"trial_{index:04d}"


def key_index(key: str) -> int:
    return int(key.rsplit("_", 1)[-1])


def planned_params(space: dict[str, Dimension], num_samples: int, seed: int) -> list[dict[str, Any]]:
    """Every trial of a random or grid search, in order: ``num_samples`` passes over the grid's
    points, each trial drawing its sampled values from one generator seeded by ``seed``, so every
    launch of the same config plans the same trials."""
    grid_keys = [key for key, dim in space.items() if dim.kind == "grid"]
    points = list(itertools.product(*(space[key].values for key in grid_keys)))
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(num_samples):
        for point in points:
            fixed = dict(zip(grid_keys, point, strict=True))
            trials.append(
                {key: fixed[key] if key in fixed else _draw(dim, rng) for key, dim in space.items()}
            )
    return trials


def _draw(dim: Dimension, rng: np.random.Generator) -> Any:
    if dim.kind == "uniform":
        return float(rng.uniform(dim.low, dim.high))
    if dim.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(dim.low), math.log(dim.high))))
    return dim.values[int(rng.integers(len(dim.values)))]


def trial_config(base: dict[str, Any], params: dict[str, Any], key: str, trials_dir: str) -> dict[str, Any]:
    """The raw config of one trial: the search's config with the trial's values, its own run name
    and the search's trials folder as its storage."""
    raw = copy.deepcopy(base)
    for name, value in params.items():
        set_dotted(raw, name, value)
    raw["name"] = key
    raw["train"]["storage_path"] = trials_dir
    raw["tune"] = {}
    return raw


def check_space(cfg: ExperimentConfig, planned: list[dict[str, Any]] | None) -> None:
    """Before Ray starts: every value a dimension can take (each ``values`` entry; ``low`` and
    ``high``) is valid for its key, and so is every planned trial's whole config.

    Raises:
        ConfigError: naming the key, the value and what the schema says.
    """
    raw = cfg.model_dump(mode="json")
    for key, dim in cfg.tune.space.items():
        for value in dim.values if dim.values is not None else [dim.low, dim.high]:
            _check({key: value}, raw, f"tune.space.{key} value {echo(value)}")
    for index, params in enumerate(planned or []):
        _check(params, raw, f"tune trial {trial_key(index)} ({echo(params)})")


def _check(params: dict[str, Any], raw: dict[str, Any], what: str) -> None:
    trial = copy.deepcopy(raw)
    try:
        for key, value in params.items():
            set_dotted(trial, key, value)
        validate_config(trial)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from None


def check_record(
    record: SearchRecord, cfg: ExperimentConfig, planned: list[dict[str, Any]] | None, uri: str
) -> None:
    """The record is read from run storage: before Ray starts, each trial's values must be those
    this search plans for its key (random, grid), or values of the space that fit the schema (Optuna),
    so a changed or planted record cannot run other overrides.

    Raises:
        ValueError: naming the file and the trial.
    """
    raw = cfg.model_dump(mode="json")
    for trial in record.trials:
        if planned is not None:
            index = key_index(trial.key)
            if index >= len(planned) or trial.params != planned[index]:
                expected = echo(planned[index]) if index < len(planned) else "no such trial"
                raise ValueError(
                    f"{uri}: {trial.key} holds {echo(trial.params)}, but this search plans {expected}: "
                    "not a record of this search; move the search directory away to start afresh"
                )
        elif set(trial.params) != set(cfg.tune.space):
            raise ValueError(
                f"{uri}: {trial.key} sets {sorted(trial.params)}, not this search's tune.space keys "
                f"{sorted(cfg.tune.space)}: move the search directory away to start afresh"
            )
        else:
            _check(trial.params, raw, f"{uri}: {trial.key}")


def read_record(directory: str) -> SearchRecord | None:
    """The search's ``trials.json``; None when the search has not started.

    Raises:
        ValueError: naming the file when it is not a record this product writes.
    """
    uri = storage.join(directory, RECORD_FILE)
    if not storage.exists(uri):
        return None
    try:
        return SearchRecord.model_validate(json.loads(storage.read_text(uri)))
    except (ValueError, ValidationError) as err:
        first = str(err).splitlines()[0][:200]
        raise ValueError(
            f"{uri} is not a search record this product writes ({first}): move the search directory "
            "away to start the search afresh"
        ) from None


def write_record(directory: str, record: SearchRecord) -> None:
    storage.write_text_atomic(storage.join(directory, RECORD_FILE), record.model_dump_json(indent=1))


def has_unrecorded_tune_state(directory: str) -> bool:
    """Whether Tune's own state from before trials.json lies in ``directory`` (never resumed)."""
    return any(storage.exists(storage.join(directory, name)) for name in TUNE_STATE_FILES)


def trial_history(trials_dir: str, key: str) -> list[dict[str, float]]:
    """The per-epoch records of trial ``key``'s run (empty before its first epoch)."""
    return run_files.read_metrics_log(storage.join(trials_dir, key))


def metric_curve(history: list[dict[str, float]], metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of every epoch that reported ``metric``."""
    return [(int(r["epoch"]), float(r[metric])) for r in history if metric in r and "epoch" in r]
