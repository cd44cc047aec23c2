"""``vfmkd tune``: Ray Tune over the ``tune.space`` keys, one Ray Train run per trial.

Ray 2.60 style: a function trainable builds and fits one ``TorchTrainer`` per trial (through the
same ``run_training`` as ``vfmkd train``) and forwards its per-epoch
metrics to Tune with ``TuneReportCallback``; ASHA stops the weak trials at its rungs. Trials keep
their checkpoints under ``<train.storage_path>/<name>-tune/trials/``. Launching the same tune
again resumes it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, set_dotted, validate_config
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.locations import check_locations
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.train.teacher_stores import check_stores
from vfmkd_ray.train.trainer import local_cpus_needed
from vfmkd_ray.tune.config import Dimension
from vfmkd_ray.tune.report import BEST_CONFIG, best_config, markdown, trial_table, write_outputs

log = logging.getLogger(__name__)
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class TuneSummary:
    directory: str
    num_trials: int
    num_early_stopped: int
    best_params: dict
    best_metric: float
    best_config: str
    table: str  # markdown of the top trials


def run_tune(cfg: ExperimentConfig) -> TuneSummary:
    spec = cfg.tune
    if not spec.space:
        raise ConfigError("tune.space is empty: name at least one dotted config key to search")
    _check_keys(cfg)
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",), writes=("train.storage_path",), may_read=("store.root",))
    check_stores(cfg, read_image_records(cfg.data))  # every trial reads the stores: fail before any
    name = f"{cfg.name}-tune"
    root = storage.absolute(cfg.train.storage_path)
    directory = storage.join(root, name)
    ensure_ray(spec.max_concurrent_trials * (local_cpus_needed(cfg) + 1))
    # A trial's driver holds one CPU (Tune's default) next to its Ray Train workers.
    trainable = tune.with_parameters(
        _trial, base=cfg.model_dump(mode="json"), trials_dir=storage.join(directory, TRIALS_DIR)
    )
    if tune.Tuner.can_restore(directory):
        log.info("resuming tune run %s", directory)
        tuner = tune.Tuner.restore(directory, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={key: _sampler(dim) for key, dim in spec.space.items()},
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                scheduler=ASHAScheduler(
                    time_attr="epoch",
                    max_t=spec.scheduler.max_t or cfg.train.epochs,
                    grace_period=spec.scheduler.grace_period,
                    reduction_factor=spec.scheduler.reduction_factor,
                ),
                search_alg=_search(cfg),
                num_samples=spec.num_samples,
                max_concurrent_trials=spec.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=name, storage_path=root),
        )
    results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    if len(errors) == len(results):
        raise RuntimeError(f"every trial of {directory} failed; the first: {errors[0]}")
    keys = list(spec.space)
    table = trial_table(
        results.get_dataframe(filter_metric=spec.metric, filter_mode=spec.mode), keys, spec.metric
    )
    best = results.get_best_result(spec.metric, spec.mode, scope="all")
    params = {key: best.config[key] for key in keys}
    chosen = best_config(cfg, params)
    write_outputs(directory, table, chosen, keys, spec.metric)
    max_t = spec.scheduler.max_t or cfg.train.epochs
    return TuneSummary(
        directory=directory,
        num_trials=len(results),
        num_early_stopped=int((table["epochs"] < max_t).sum()),
        best_params=params,
        best_metric=float(table[spec.metric].min() if spec.mode == "min" else table[spec.metric].max()),
        best_config=storage.join(directory, BEST_CONFIG),
        table=markdown(table, spec.metric, spec.mode, spec.top_k),
    )


def _trial(params: dict, base: dict, trials_dir: str) -> None:
    """One trial: the base config with this trial's values, trained by Ray Train."""
    raw = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(raw, key, value)
    raw["name"] = ray.tune.get_context().get_trial_id()
    raw["train"]["storage_path"] = trials_dir
    from vfmkd_ray.train.trainer import run_training

    run_training(validate_config(raw), callbacks=[TuneReportCallback()])


def _check_keys(cfg: ExperimentConfig) -> None:
    """Every searched key must be a config key that takes the dimension's values."""
    raw = cfg.model_dump(mode="json")
    for key, dim in cfg.tune.space.items():
        trial = copy.deepcopy(raw)
        set_dotted(trial, key, dim.example())
        try:
            validate_config(trial)
        except ConfigError as err:
            raise ConfigError(f"tune.space.{key}: {err}") from None


def _sampler(dim: Dimension):
    if dim.kind == "uniform":
        return tune.uniform(dim.low, dim.high)
    if dim.kind == "loguniform":
        return tune.loguniform(dim.low, dim.high)
    if dim.kind == "choice":
        return tune.choice(dim.values)
    return tune.grid_search(dim.values)


def _search(cfg: ExperimentConfig):
    if cfg.tune.search == "random":
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as err:
        raise ConfigError(
            f"tune.search: optuna needs the optuna package (pip install -e '.[optuna]'): {err}"
        ) from None
    return OptunaSearch()
