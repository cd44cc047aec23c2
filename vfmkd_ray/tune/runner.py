"""``vfmkd tune``: Ray Tune over the ``tune.space`` keys, one Ray Train run per trial.

Ray 2.60 style: a function trainable builds and fits one ``TorchTrainer`` per trial (through the
same ``run_training`` as ``vfmkd train``) and forwards its per-epoch metrics to Tune with
``TuneReportCallback``; ASHA stops the weak trials at its rungs. Trials train under
``<train.storage_path>/<name>-tune/trials/<key>/``. Launching the same tune again resumes it from
its own record (``tune.plan``: ``trials.json`` and the trials' runs), never from Tune's pickled
state: ended trials are kept, the others resume from their checkpoints, and the search goes on.
The driver holds the search's lease (``run_lease``): a second driver of the same search is refused.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from vfmkd_ray import run_config, run_files, run_lease, storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, validate_config
from vfmkd_ray.console import shows_ray_output
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.locations import check_locations
from vfmkd_ray.ray_errors import first_line
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.tracking.resolve import resolve_tracking
from vfmkd_ray.tracking.run_tracker import RunTracker
from vfmkd_ray.training.teacher_stores import check_stores
from vfmkd_ray.training.trainer import local_cpus_needed
from vfmkd_ray.tune import plan
from vfmkd_ray.tune.config import Dimension
from vfmkd_ray.tune.progress import TrialProgress
from vfmkd_ray.tune.report import BEST_CONFIG, best_config, markdown, trial_table, write_outputs
from vfmkd_ray.tune.search import PARAMS, TRIAL_KEY, Curve, KeyedASHA, RecordedSearch

log = logging.getLogger(__name__)
TUNE_FILES_DIR = "ray_tune"  # Tune's own files (never read back), apart from the search's record


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
    planned = _check_search(cfg)
    cfg.s3.apply()
    check_locations(cfg, reads=("data.root",), writes=("train.storage_path",), may_read=("store.root",))
    check_stores(cfg, read_image_records(cfg.data))  # every trial reads the stores: fail before any
    directory = storage.join(storage.absolute(cfg.train.storage_path), f"{cfg.name}-tune")
    cfg = cfg.model_copy(update={"tracking": resolve_tracking(cfg.tracking)})
    with run_lease.RunLease(directory, "vfmkd tune"):
        begun = storage.exists(storage.join(directory, plan.RECORD_FILE))  # a trial has started
        run_config.claim_resolved_config(directory, cfg, begun)
        return _search(cfg, directory, planned)


def _search(cfg: ExperimentConfig, directory: str, planned: list[dict] | None) -> TuneSummary:
    spec = cfg.tune
    max_t = spec.scheduler.max_t or cfg.train.epochs
    record = plan.read_record(directory)
    if record is None and plan.has_unrecorded_tune_state(directory):
        log.warning(
            "%s holds a search of an earlier vfmkd that only Tune's pickled state could resume, which is "
            "never read back (it could run code put into run storage): this search starts afresh",
            directory,
        )
    record = record or plan.SearchRecord()
    plan.check_record(record, cfg, planned, storage.join(directory, plan.RECORD_FILE))
    total = len(planned) if planned is not None else spec.num_samples
    ended = [t for t in record.trials if t.status in plan.ENDED]
    to_run = max(total - len(ended), 0)
    if ended:
        log.info("resuming tune %s: %d of %d trials ended, %d to run", directory, len(ended), total, to_run)
    # MLflow nests every trial's run under one run of the whole search.
    parent = (
        RunTracker(cfg, directory, log.warning, run_name=f"{cfg.name}-tune")
        if cfg.tracking.backend == "mlflow"
        else None
    )
    try:
        if to_run:
            _fit(cfg, directory, record, planned, to_run, max_t, parent)
    except BaseException:
        if parent is not None:
            parent.end_open_children()
            parent.finish("FAILED")
        raise
    return _summarise(cfg, directory, record, max_t, parent)


def _fit(cfg, directory, record, planned, to_run: int, max_t: int, parent) -> None:
    """Runs ``to_run`` trials with Tune; the record is kept current as they start and end."""
    spec = cfg.tune
    trials_dir = storage.join(directory, plan.TRIALS_DIR)
    ended = sum(t.status in plan.ENDED for t in record.trials)
    stopped = sum(t.status == "stopped" for t in record.trials)

    def curve_of(key: str) -> Curve:
        return plan.metric_curve(plan.trial_history(trials_dir, key), spec.metric)

    scheduler = _scheduler(cfg, max_t, {trial.key: curve_of(trial.key) for trial in record.trials})
    search = RecordedSearch(
        record,
        lambda changed: plan.write_record(directory, changed),
        curve_of,
        max_t,
        spec.metric,
        spec.mode,
        plan=planned,
        optuna=_optuna(cfg) if planned is None else None,
    )
    ensure_ray(spec.max_concurrent_trials * (local_cpus_needed(cfg) + 1), state_api=True)
    progress = TrialProgress(ended + to_run, max_t, spec.metric, earlier=(ended, stopped))
    trainable = tune.with_parameters(
        _trial,
        base=cfg.model_dump(mode="json"),
        trials_dir=trials_dir,
        parent_id=parent.run_id if parent else None,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            search_alg=search,
            num_samples=to_run,
            max_concurrent_trials=spec.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=TUNE_FILES_DIR,
            storage_path=directory,
            callbacks=[progress],
            verbose=None if shows_ray_output() else 0,
        ),
    )
    try:
        results = tuner.fit()
    finally:
        progress.close()
    for result in results:
        key = (result.config or {}).get(TRIAL_KEY)
        trial = record.by_key().get(key) if key else None
        if trial is not None and result.error is not None:
            record.set(trial.model_copy(update={"status": "failed", "error": first_line(result.error)}))
    plan.write_record(directory, record)
    if parent is not None:
        keys = [key for result in results if (key := (result.config or {}).get(TRIAL_KEY))]
        _end_trial_runs(parent, record, keys, trials_dir)


def _scheduler(cfg: ExperimentConfig, max_t: int, curves: dict[str, Curve]) -> KeyedASHA:
    """ASHA over the epochs, its rungs holding the curves the search's trials reported so far."""
    spec = cfg.tune
    scheduler = KeyedASHA(
        time_attr="epoch",
        metric=spec.metric,
        mode=spec.mode,
        max_t=max_t,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )
    for key, curve in curves.items():
        scheduler.seed(key, curve)
    return scheduler


def _summarise(cfg, directory: str, record: plan.SearchRecord, max_t: int, parent) -> TuneSummary:
    """The search's outcome from its record and its trials' metrics, over every launch."""
    spec = cfg.tune
    trials_dir = storage.join(directory, plan.TRIALS_DIR)
    failed = [t for t in record.trials if t.status == "failed"]
    if record.trials and len(failed) == len(record.trials):
        if parent is not None:
            parent.finish("FAILED")
        raise RuntimeError(f"every trial of {directory} failed; the first: {failed[0].error}")
    histories = {t.key: plan.trial_history(trials_dir, t.key) for t in record.trials}
    keys = list(spec.space)
    table = trial_table(record, histories, keys, spec.metric, spec.mode)
    if table.empty:
        raise RuntimeError(f"no trial of {directory} reported {spec.metric}")
    best_row = table.sort_values(spec.metric, ascending=spec.mode == "min").iloc[0]
    params = record.by_key()[best_row["trial"]].params
    chosen = best_config(cfg, params)
    write_outputs(directory, table, chosen, keys, spec.metric)
    best_metric = float(best_row[spec.metric])
    if parent is not None:
        parent.result({f"best/{spec.metric}": best_metric}, {f"best.{k}": v for k, v in params.items()})
        parent.finish()
    return TuneSummary(
        directory=directory,
        num_trials=len(record.trials),
        num_early_stopped=sum(t.status == "stopped" for t in record.trials),
        best_params=params,
        best_metric=best_metric,
        best_config=storage.join(directory, BEST_CONFIG),
        table=markdown(table, spec.metric, spec.mode, spec.top_k),
    )


def _trial(config: dict, base: dict, trials_dir: str, parent_id: str | None) -> None:
    """One trial: the base config with this trial's values, trained by Ray Train in trials/<key>."""
    from vfmkd_ray.training.trainer import run_training

    params = config[PARAMS]
    run_training(
        validate_config(plan.trial_config(base, params, config[TRIAL_KEY], trials_dir)),
        callbacks=[TuneReportCallback()],
        tune_trial={"parent_id": parent_id, "searched": params},
    )


def _end_trial_runs(parent: RunTracker, record: plan.SearchRecord, keys: list[str], trials_dir: str) -> None:
    """Tune stops a trial as soon as it reports its last epoch (ASHA at max_t) or a rung cuts it,
    before its rank 0 ends its tracker run: each trial of this launch (``keys``) has its run ended
    here, FINISHED when it trained every epoch, KILLED when stopped early, FAILED on an error; any run
    still open after that is KILLED."""
    statuses = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED", "started": "KILLED"}
    trials = record.by_key()
    for key in keys:
        tracked = run_files.read_tracking_record(storage.join(trials_dir, key))
        if tracked and tracked.get("run_id") and key in trials:
            parent.end_run(tracked["run_id"], statuses[trials[key].status])
    parent.end_open_children()


def _check_search(cfg: ExperimentConfig) -> list[dict] | None:
    """Before Ray starts: the search can run, and every value it may give a trial fits the schema.
    Returns the planned trials of a random or grid search (None for Optuna, which suggests them).

    Raises:
        ConfigError: naming the key and value, or what the search needs.
    """
    spec = cfg.tune
    planned = None
    if spec.search == "optuna":
        if grid := [key for key, dim in spec.space.items() if dim.kind == "grid"]:
            raise ConfigError(
                f"tune.space {grid}: tune.search optuna samples its values; use kind: choice, or "
                "tune.search: random for a grid"
            )
        if importlib.util.find_spec("optuna") is None:
            raise ConfigError("tune.search: optuna needs the optuna package (pip install -e '.[optuna]')")
    else:
        planned = plan.planned_params(spec.space, spec.num_samples, cfg.seed)
    plan.check_space(cfg, planned)
    return planned


def _sampler(dim: Dimension):
    if dim.kind == "uniform":
        return tune.uniform(dim.low, dim.high)
    if dim.kind == "loguniform":
        return tune.loguniform(dim.low, dim.high)
    if dim.kind == "choice":
        return tune.choice(dim.values)
    return tune.grid_search(dim.values)


def _optuna(cfg: ExperimentConfig):
    """Ray's OptunaSearch over the space (seeded by ``cfg.seed``), metric and mode set."""
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    space = {key: _sampler(dim) for key, dim in cfg.tune.space.items()}
    return OptunaSearch(space, metric=cfg.tune.metric, mode=cfg.tune.mode, sampler=TPESampler(seed=cfg.seed))
