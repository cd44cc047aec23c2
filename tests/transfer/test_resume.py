"""A finished cell is reused only with the config it was trained with (no Ray: the check comes first)."""

import pytest

from tests.conftest import tiny_overrides
from vfmkd_ray import run_files
from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.transfer.cells import Backbone, cell_config, fingerprint, grid
from vfmkd_ray.transfer.runner import _check_earlier_cells, _run_cell


def test_a_finished_cell_is_reused_and_one_from_another_config_is_refused(tmp_path):
    cfg = load_config(
        None,
        [*tiny_overrides(tmp_path), "neck.type=yolov8_pafpn", "heads.det={type: yolov8, num_classes: 3}"],
    )
    backbone = Backbone("random", None)
    cell = grid(cfg, [backbone])[0]
    cell_cfg = cell_config(cfg, backbone, cell, str(tmp_path / "cells"))
    run_dir = run_files.run_dir_of(cell_cfg)
    outcome = {"status": "ok", "metrics": {"det/mAP": 0.25, "det/AP_small": None}}
    run_files.write_transfer_cell(run_dir, outcome | {"fingerprint": fingerprint(cell_cfg)})
    score, reused = _run_cell(cell_cfg, cell, "cell 1/1")
    assert reused and score.ok and score.metrics["det/mAP"] == 0.25
    assert score.metrics["det/AP_small"] != score.metrics["det/AP_small"]  # null comes back as NaN
    for status in ("ok", "failed", "running"):  # finished, failed, or interrupted mid-run
        run_files.write_transfer_cell(run_dir, outcome | {"status": status, "fingerprint": "another"})
        with pytest.raises(ConfigError, match=f"was {status} with another config"):
            _check_earlier_cells({cell: cell_cfg})
