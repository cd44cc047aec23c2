"""A small ``vfmkd tune`` on a real local Ray: ASHA stops the weak trial, the outputs are written,
a relaunch reads no pickle from run storage, and the best config trains with ``vfmkd train``."""

import pickle
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import ray
import yaml

from tests.conftest import tiny_overrides
from tests.tune.test_search_record import _Payload
from vfmkd_ray.cli import main
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.run_files import read_metrics_log
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.tune.plan import read_record, write_record
from vfmkd_ray.tune.report import BEST_CONFIG, PLOT, RESULTS_CSV
from vfmkd_ray.tune.runner import run_tune

pytestmark = pytest.mark.ray


def test_tune_early_stops_writes_results_and_its_best_config_trains(
    product_ray, tmp_path, capsys, mlflow_uri
):
    """Each command starts the Ray it starts for a user, one after the other (the search's with the
    state API that lets Ray Train free a finished trial's CPUs)."""
    space = {"train.lr": {"kind": "grid", "values": [3e-3, 1e-9]}}  # the second barely moves
    raw = load_config(
        None, [*tiny_overrides(tmp_path), "train.epochs=2", "train.num_workers=1", "train.cpus_per_worker=1"]
    ).model_dump(mode="json")
    raw["tracking"] = {"backend": "mlflow", "uri": mlflow_uri, "experiment": "tune-e2e"}
    raw["tune"] = {
        "space": space,
        "num_samples": 1,
        "max_concurrent_trials": 1,  # in order: the good trial sets the rung's bar
        "scheduler": {"grace_period": 1, "reduction_factor": 2},
    }
    config_file = tmp_path / "tune.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    cfg = load_config(config_file)
    write_synthetic_coco(cfg.data)
    run_precompute(cfg)
    ray.shutdown()  # vfmkd precompute ends; vfmkd tune starts its own Ray

    # Tune's pickled state, planted in run storage where Tuner.restore would read it on a relaunch.
    directory = tmp_path / "runs" / f"{cfg.name}-tune"
    marker = tmp_path / "payload-ran"
    directory.mkdir(parents=True)
    (directory / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    summary = run_tune(cfg)
    assert not marker.exists()
    assert summary.num_trials == 2 and summary.num_early_stopped >= 1
    assert summary.best_params == {"train.lr": 3e-3}
    assert Path(summary.directory) == directory
    table = pd.read_csv(directory / RESULTS_CSV)
    assert sorted(table["train.lr"]) == [1e-9, 3e-3] and sorted(table["epochs"]) == [1, 2]
    assert (directory / PLOT).stat().st_size > 1000
    assert summary.table.splitlines()[2].startswith("| ")

    # One MLflow run for the search, a child run per trial with its searched value and its epochs.
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("tune-e2e").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == f"{cfg.name}-tune"
    assert parents[0].data.params["best.train.lr"] == "0.003"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(float(r.data.params["search.train.lr"]) for r in children) == [1e-9, 3e-3]
    for child in children:
        epochs = [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
    # Tune stops a trial before its rank 0 ends its run: the search ends each (the stopped one KILLED).
    statuses = {
        float(r.data.params["search.train.lr"]): client.get_run(r.info.run_id).info.status for r in children
    }
    assert statuses == {3e-3: "FINISHED", 1e-9: "KILLED"}
    assert client.get_run(parents[0].info.run_id).info.status == "FINISHED"

    # Relaunched as if the driver had died while the stopped trial ran: that trial resumes under its
    # own key (from its run's checkpoint, or afresh), ASHA seeded with both curves lets it finish.
    record = read_record(str(directory))
    stopped = next(t for t in record.trials if t.status == "stopped")
    record.set(stopped.model_copy(update={"status": "started"}))
    write_record(str(directory), record)
    ray.shutdown()  # the relaunch is a new driver, with a Ray of its own
    again = run_tune(cfg)
    assert not marker.exists()
    assert (again.num_trials, again.num_early_stopped, again.best_params) == (2, 0, {"train.lr": 3e-3})
    assert again.best_metric == summary.best_metric
    resumed = read_metrics_log(str(directory / "trials" / stopped.key))
    assert [r["epoch"] for r in resumed] == [1, 2]
    assert {t.key: t.status for t in read_record(str(directory)).trials} == {
        "trial_0000": "finished",
        "trial_0001": "finished",
    }
    # Everything ended: a third launch runs nothing and says the same.
    third = run_tune(cfg)
    assert (third.num_trials, third.best_params, third.best_metric) == (
        2,
        again.best_params,
        again.best_metric,
    )

    best = directory / BEST_CONFIG
    assert main(["train", str(best), "train.epochs=1"]) == 0
    assert "best backbone:" in capsys.readouterr().out
