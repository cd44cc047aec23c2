"""``vfmkd transfer`` on a real local Ray, tiny settings: 2 backbones x 1 mode x 1 label fraction x
2 seeds, the backbone frozen, one worker per cell (DDP around a frozen backbone:
tests/training/test_freeze_backbone.py). One cell's worker fails (injected, no restarts): the table
and plot hold all four cells with that one marked failed; a relaunch reuses the three that finished
and retries the failed one."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from vfmkd_ray import run_files
from vfmkd_ray.cli import main
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.build import build_model
from vfmkd_ray.training.fault_injection import FAIL_ONCE_ENV

pytestmark = pytest.mark.ray


def test_transfer_reports_every_cell_and_a_relaunch_resumes(tmp_path, product_ray, monkeypatch, capsys):
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"0:{marker}")  # the first cell's first epoch, once
    overrides = [
        *tiny_overrides(tmp_path),
        *("neck.type=yolov8_pafpn", "heads.det={type: yolov8, num_classes: 3}", "train.max_failures=0"),
        *("transfer.modes=[frozen]", "transfer.label_fractions=[0.5]", "transfer.seeds=[0,1]"),
        *(
            "transfer.epochs=1",
            "data.synthetic.num_images=24",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
        ),
    ]
    cfg = load_config(None, overrides)
    write_synthetic_coco(cfg.data)
    # A backbone file as a distillation run leaves it (its training is not what is tested here).
    distilled = tmp_path / "distilled"
    run_files.write_best(str(distilled), build_model(cfg.model_copy(update={"seed": 7})).model, {})
    command = ["transfer", "configs/demo.yaml", *overrides, "--backbones"]
    command += [f"distilled={distilled / run_files.BEST_BACKBONE_SAFETENSORS}", "random=random"]

    assert main(command) == 1  # a failed cell: the command says so
    out = capsys.readouterr().out
    assert marker.exists(), "the injected failure did not happen"
    assert "4 cells, 1 failed" in out
    directory = tmp_path / "runs" / "tiny-transfer"
    rows = list(csv.DictReader(io.StringIO((directory / "transfer.csv").read_text())))
    assert [(r["backbone"], r["seed"], r["status"]) for r in rows] == [
        ("distilled", "0", "failed"),
        ("random", "0", "ok"),
        ("distilled", "1", "ok"),
        ("random", "1", "ok"),
    ]
    assert "InjectedFailure: injected failure at epoch 0" in rows[0]["error"]
    assert all(0.0 <= float(r["det/mAP"]) <= 1.0 for r in rows[1:])
    table = (directory / "transfer.md").read_text()
    assert "| frozen | 50% | distilled | 1 (1 failed) |" in table and "| frozen | 50% | random | 2 |" in table
    assert "count probe" in table and table.strip() in out
    assert (directory / "transfer.png").read_bytes()[:4] == b"\x89PNG"

    assert main(command) == 0
    out = capsys.readouterr().out
    assert "4 cells, 0 failed, 3 reused from an earlier launch" in out
    rows = list(csv.DictReader(io.StringIO((directory / "transfer.csv").read_text())))
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert Path(directory / "cells" / "distilled-frozen-f0.5-s0" / run_files.BEST_MODEL).exists()
