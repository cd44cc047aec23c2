"""Without the OpenMMLab stack, an ``mm/`` student is one line saying how to install it, from the
config check of ``vfmkd train`` and from ``vfmkd export`` alike; the rest of the product never
imports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.models.foreign_files import save_state
from vfmkd_ray import openmmlab
from vfmkd_ray.cli import main
from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.training.trainer import check_model

MM_RESNET = "mm/mmdet.ResNet"


@pytest.fixture
def no_stack(monkeypatch):
    """The stack made unimportable in this process (``None`` in ``sys.modules`` fails an import),
    whether or not this environment has it."""
    for name in list(sys.modules):
        if name.split(".")[0] in openmmlab.PACKAGES:
            monkeypatch.setitem(sys.modules, name, None)
    for name in openmmlab.PACKAGES:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(openmmlab, "_READY", False)


def test_an_mm_student_without_the_stack_is_a_config_error_saying_how_to_install_it(no_stack, tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}", f"student.name={MM_RESNET}", "student.mm.depth=18"])
    with pytest.raises(ConfigError, match=r"student 'mm/mmdet.ResNet' needs the OpenMMLab stack .*make mm"):
        check_model(cfg, {})


def test_export_of_an_mm_student_without_the_stack_is_one_line(no_stack, tmp_path, capsys):
    checkpoint = save_state({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "w.pth")
    config = tmp_path / "student.yaml"
    raw = yaml.safe_load(Path("configs/demo.yaml").read_text())
    raw["student"] = {"name": MM_RESNET, "mm": {"depth": 18}}
    config.write_text(yaml.safe_dump(raw))
    out = str(tmp_path / "o.pth")
    code = main(
        ["export", "--checkpoint", checkpoint, "--format", "mmdet", "--out", out, "--config", str(config)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "needs the OpenMMLab stack" in err[0] and "make mm" in err[0]


def test_export_refuses_an_mm_student_named_without_its_dict(tmp_path, capsys):
    checkpoint = save_state({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "w.pth")
    out = str(tmp_path / "o.pth")
    assert (
        main(
            ["export", "--checkpoint", checkpoint, "--format", "mmdet", "--out", out, "--student", MM_RESNET]
        )
        == 2
    )
    assert "is its backbone dict too (student.mm); give a config" in capsys.readouterr().err


def test_the_product_imports_no_openmmlab_package():
    modules = "vfmkd_ray.cli, vfmkd_ray.models.build, vfmkd_ray.handoff.formats, vfmkd_ray.training.trainer"
    stack = openmmlab.PACKAGES
    probe = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in {stack!r}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
