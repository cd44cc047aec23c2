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
import math
from dataclasses import dataclass

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from vfmkd_ray import run_files, storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, set_dotted, validate_config
from vfmkd_ray.console import shows_ray_output
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.locations import check_locations
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.tracking.resolve import resolve_tracking
from vfmkd_ray.tracking.run_tracker import RunTracker
from vfmkd_ray.train.teacher_stores import check_stores
from vfmkd_ray.train.trainer import local_cpus_needed
from vfmkd_ray.tune.config import Dimension
from vfmkd_ray.tune.progress import TrialProgress
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
    cfg = cfg.model_copy(update={"tracking": resolve_tracking(cfg.tracking)})
    ensure_ray(spec.max_concurrent_trials * (local_cpus_needed(cfg) + 1))
    # MLflow nests every trial's run under one run of the whole search.
    parent = (
        RunTracker(cfg, directory, log.warning, run_name=name) if cfg.tracking.backend == "mlflow" else None
    )
    # A trial's driver holds one CPU (Tune's default) next to its Ray Train workers.
    trainable = tune.with_parameters(
        _trial,
        base=cfg.model_dump(mode="json"),
        trials_dir=storage.join(directory, TRIALS_DIR),
        parent_id=parent.run_id if parent else None,
    )
    max_t = spec.scheduler.max_t or cfg.train.epochs
    progress = TrialProgress(_num_trials(cfg), max_t, spec.metric)
    run_config = tune.RunConfig(
        name=name, storage_path=root, callbacks=[progress], verbose=None if shows_ray_output() else 0
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
                    max_t=max_t,
                    grace_period=spec.scheduler.grace_period,
                    reduction_factor=spec.scheduler.reduction_factor,
                ),
                search_alg=_search(cfg),
                num_samples=spec.num_samples,
                max_concurrent_trials=spec.max_concurrent_trials,
            ),
            run_config=run_config,
        )
    try:
        results = tuner.fit()
    except BaseException:
        if parent is not None:
            parent.end_open_children()
            parent.finish("FAILED")
        raise
    finally:
        progress.close()
    if parent is not None:
        _end_trial_runs(parent, results, storage.join(directory, TRIALS_DIR), max_t)
    errors = [r.error for r in results if r.error is not None]
    if len(errors) == len(results):
        if parent is not None:
            parent.finish("FAILED")
        raise RuntimeError(f"every trial of {directory} failed; the first: {errors[0]}")
    keys = list(spec.space)
    table = trial_table(
        results.get_dataframe(filter_metric=spec.metric, filter_mode=spec.mode), keys, spec.metric
    )
    best = results.get_best_result(spec.metric, spec.mode, scope="all")
    params = {key: best.config[key] for key in keys}
    chosen = best_config(cfg, params)
    write_outputs(directory, table, chosen, keys, spec.metric)
    best_metric = float(table[spec.metric].min() if spec.mode == "min" else table[spec.metric].max())
    if parent is not None:
        parent.result({f"best/{spec.metric}": best_metric}, {f"best.{k}": v for k, v in params.items()})
        parent.finish()
    return TuneSummary(
        directory=directory,
        num_trials=len(results),
        num_early_stopped=int((table["epochs"] < max_t).sum()),
        best_params=params,
        best_metric=best_metric,
        best_config=storage.join(directory, BEST_CONFIG),
        table=markdown(table, spec.metric, spec.mode, spec.top_k),
    )


def _trial(params: dict, base: dict, trials_dir: str, parent_id: str | None) -> None:
    """One trial: the base config with this trial's values, trained by Ray Train."""
    raw = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(raw, key, value)
    raw["name"] = ray.tune.get_context().get_trial_id()
    raw["train"]["storage_path"] = trials_dir
    from vfmkd_ray.train.trainer import run_training

    run_training(
        validate_config(raw),
        callbacks=[TuneReportCallback()],
        tune_trial={"parent_id": parent_id, "searched": params},
    )


def _end_trial_runs(parent: RunTracker, results, trials_dir: str, max_t: int) -> None:
    """Tune stops a trial as soon as it reports its last epoch (ASHA at max_t) or a rung cuts it,
    before its rank 0 ends its tracker run: each trial's run ends here, FINISHED when it trained every
    epoch, KILLED when stopped early, FAILED on an error; any run still open after that is KILLED."""
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id")
        record = run_files.read_tracking_record(storage.join(trials_dir, trial_id)) if trial_id else None
        if record and record.get("run_id"):
            epochs = int((result.metrics or {}).get("epoch", 0))
            status = "FAILED" if result.error else "FINISHED" if epochs >= max_t else "KILLED"
            parent.end_run(record["run_id"], status)
    parent.end_open_children()


def _num_trials(cfg: ExperimentConfig) -> int:
    """Tune's trial count: num_samples times every grid dimension's values."""
    grid = math.prod(len(d.values) for d in cfg.tune.space.values() if d.kind == "grid" and d.values)
    return cfg.tune.num_samples * grid


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
