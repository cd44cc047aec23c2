"""A small ``vfmkd tune`` on a real local Ray: ASHA stops the weak trial, the outputs are written,
and the best config trains with ``vfmkd train``."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_overrides
from vfmkd_ray.cli import main
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.tune.report import BEST_CONFIG, PLOT, RESULTS_CSV
from vfmkd_ray.tune.runner import run_tune

pytestmark = pytest.mark.ray


def test_tune_early_stops_writes_results_and_its_best_config_trains(local_ray, tmp_path, capsys):
    space = {"train.lr": {"kind": "grid", "values": [3e-3, 1e-9]}}  # the second barely moves
    raw = load_config(
        None, [*tiny_overrides(tmp_path), "train.epochs=2", "train.num_workers=1", "train.cpus_per_worker=1"]
    ).model_dump(mode="json")
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

    summary = run_tune(cfg)
    assert summary.num_trials == 2 and summary.num_early_stopped >= 1
    assert summary.best_params == {"train.lr": 3e-3}
    directory = Path(summary.directory)
    table = pd.read_csv(directory / RESULTS_CSV)
    assert sorted(table["train.lr"]) == [1e-9, 3e-3] and sorted(table["epochs"]) == [1, 2]
    assert (directory / PLOT).stat().st_size > 1000
    assert summary.table.splitlines()[2].startswith("| ")

    best = directory / BEST_CONFIG
    assert main(["train", str(best), "train.epochs=1"]) == 0
    assert "best backbone:" in capsys.readouterr().out
