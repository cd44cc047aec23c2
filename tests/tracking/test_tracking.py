"""Experiment tracking against a real MLflow server on 127.0.0.1 and real TensorBoard event files,
read back with MLflow's client and TensorBoard's own reader: Ray-free."""

from __future__ import annotations

import math

import pytest

from vfmkd_ray import run_files, storage
from vfmkd_ray.config import load_config
from vfmkd_ray.tracking.run_tracker import SEARCH_PREFIX, RunTracker

mlflow = pytest.importorskip("mlflow")


def _cfg(tmp_path, *overrides: str):
    return load_config(None, [f"train.storage_path={tmp_path}/runs", "name=tracked", *overrides])


def _records(epochs: int = 3) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "step": 2 * e,
            "lr": 0.1 / e,
            "train/loss": 1.0 / e,
            "val/loss": 1.5 / e,
            "val/cos/x": 0.2 * e,
        }
        for e in range(1, epochs + 1)
    ]


def _client(uri: str):
    return mlflow.MlflowClient(tracking_uri=uri)


def test_a_run_sends_its_config_its_epochs_and_its_files(mlflow_uri, tmp_path):
    cfg = _cfg(tmp_path, "tracking.backend=mlflow", f"tracking.uri={mlflow_uri}", "tracking.experiment=t1")
    run_dir = str(tmp_path / "runs" / "tracked")
    warnings: list[str] = []
    tracker = RunTracker(cfg, run_dir, warnings.append)
    for record in _records():
        tracker.epoch(record | {"val/odd": math.nan})
    storage.write_bytes_atomic(run_files.path(run_dir, run_files.CURVES_PNG), b"\x89PNG picture")
    tracker.attach([run_files.CURVES_PNG, run_files.BEST_BACKBONE_SAFETENSORS])  # the second is absent
    tracker.finish()
    assert warnings == []

    client = _client(mlflow_uri)
    run = client.get_run(tracker_run_id(run_dir))
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["train.lr"] == str(cfg.train.lr) and run.data.params["name"] == "tracked"
    assert not any(key.startswith("s3.") for key in run.data.params)
    for key in ("val/loss", "val/cos/x", "lr", "step"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["epoch"], pytest.approx(r[key])) for r in _records()]
    assert "val/odd" not in run.data.metrics  # NaN is not sent
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == [run_files.CURVES_PNG]


def tracker_run_id(run_dir: str) -> str:
    return run_files.read_tracking_record(run_dir)["run_id"]


def test_a_relaunch_continues_the_same_run_and_children_name_their_parent(mlflow_uri, tmp_path):
    cfg = _cfg(tmp_path, "tracking.backend=mlflow", f"tracking.uri={mlflow_uri}", "tracking.experiment=t2")
    run_dir = str(tmp_path / "runs" / "tracked")
    first = RunTracker(cfg, run_dir, pytest.fail)
    first.epoch(_records()[0])  # ... and the worker dies
    relaunched = RunTracker(cfg.model_copy(update={"seed": 7}), run_dir, pytest.fail)  # changed config
    assert relaunched.run_id == first.run_id
    relaunched.epoch(_records()[1])
    relaunched.finish()
    client = _client(mlflow_uri)
    assert [m.step for m in client.get_metric_history(first.run_id, "val/loss")] == [1, 2]
    assert client.get_run(first.run_id).data.params["seed"] == "0"  # the first launch's

    child = RunTracker(
        cfg, str(tmp_path / "trial"), pytest.fail, parent_id=first.run_id, searched={"train.lr": 0.01}
    )
    child.finish()
    data = client.get_run(child.run_id).data
    assert data.tags["mlflow.parentRunId"] == first.run_id
    assert data.params[f"{SEARCH_PREFIX}train.lr"] == "0.01"


def test_a_dead_tracking_server_is_one_warning_and_nothing_else(tmp_path):
    cfg = _cfg(tmp_path, "tracking.backend=mlflow", "tracking.uri=http://127.0.0.1:9")
    warnings: list[str] = []
    tracker = RunTracker(cfg, str(tmp_path / "run"), warnings.append)
    for record in _records():
        tracker.epoch(record)
    tracker.finish()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("tracking (mlflow at http://127.0.0.1:9) stopped, could not start: ")
    assert "The run goes on" in warnings[0]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tensorboard_event_files_land_in_the_run_directory(tmp_path, where, request):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path)
    run_dir = f"{root}/runs/tracked"
    cfg = _cfg(tmp_path, "tracking.backend=tensorboard")
    tracker = RunTracker(cfg, run_dir, pytest.fail)
    for record in _records():
        tracker.epoch(record)
    tracker.finish()
    logdir = run_files.path(run_dir, run_files.TENSORBOARD_DIR)
    local = tmp_path / "read"
    for uri in storage.list_files(logdir, "events.out.tfevents.*"):
        (local / uri.rsplit("/", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        (local / uri.rsplit("/", 1)[-1]).write_bytes(storage.read_bytes(uri))
    events = EventAccumulator(str(local))
    events.Reload()
    values = [(e.step, e.value) for e in events.Scalars("val/loss")]
    assert values == [(r["epoch"], pytest.approx(r["val/loss"])) for r in _records()]


def test_a_kept_run_id_the_server_does_not_know_starts_a_new_run(mlflow_uri, tmp_path):
    cfg = _cfg(tmp_path, "tracking.backend=mlflow", f"tracking.uri={mlflow_uri}", "tracking.experiment=t3")
    run_dir = str(tmp_path / "runs" / "tracked")
    first = RunTracker(cfg, run_dir, pytest.fail)
    first.finish()
    _client(mlflow_uri).delete_run(first.run_id)
    record = run_files.read_tracking_record(run_dir)
    run_files.write_tracking_record(run_dir, record | {"run_id": "0" * 32})  # a server reset, say
    warnings: list[str] = []
    again = RunTracker(cfg, run_dir, warnings.append, background=True)
    again.epoch(_records()[0])
    again.finish()
    assert len(warnings) == 1 and warnings[0].startswith(f"tracking: cannot continue run {'0' * 32}")
    assert again.run_id not in (None, first.run_id, "0" * 32)
    assert run_files.read_tracking_record(run_dir)["run_id"] == again.run_id
    assert [m.step for m in _client(mlflow_uri).get_metric_history(again.run_id, "val/loss")] == [1]


def test_the_tracking_location_is_settled_on_the_driver(tmp_path, monkeypatch):
    from vfmkd_ray.config import ConfigError
    from vfmkd_ray.tracking.config import TrackingConfig
    from vfmkd_ray.tracking.resolve import MLFLOW_URI_ENV, resolve_tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MLFLOW_URI_ENV, raising=False)
    with pytest.raises(ValueError, match="set tracking.uri"):
        resolve_tracking(TrackingConfig(backend="mlflow"))
    monkeypatch.setenv(MLFLOW_URI_ENV, "http://127.0.0.1:5000")
    assert resolve_tracking(TrackingConfig(backend="mlflow")).uri == "http://127.0.0.1:5000"
    assert resolve_tracking(TrackingConfig(backend="mlflow", uri="sqlite:///m.db")).uri == (
        f"sqlite:///{tmp_path / 'm.db'}"
    )
    assert (
        resolve_tracking(TrackingConfig(backend="mlflow", uri="mlruns")).uri == (tmp_path / "mlruns").as_uri()
    )
    assert resolve_tracking(TrackingConfig(backend="tensorboard", uri="tb")).uri == str(tmp_path / "tb")
    # Credentials in the URI would be written to resolved_config.yaml: refused, and never echoed.
    with pytest.raises(ConfigError, match="must not carry credentials") as refused:
        _cfg(tmp_path, "tracking.backend=mlflow", "tracking.uri=http://me:hunter2@mlflow-host:5000")
    assert "hunter2" not in str(refused.value)
