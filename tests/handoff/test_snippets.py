"""The config snippets beside an export: absolute checkpoint paths (URIs kept), and backbone
freezing as the target's recipe unless ``--freeze-at``/``--freeze-norm`` say otherwise."""

from pathlib import Path

import pytest
import torch
import yaml

from tests.models.foreign_files import save_state
from vfmkd_ray import storage
from vfmkd_ray.cli import main
from vfmkd_ray.handoff.command import run_export
from vfmkd_ray.handoff.snippets import Freeze
from vfmkd_ray.handoff.source import ExportError
from vfmkd_ray.models.students import StudentConfig, build_student

YOLO = StudentConfig(name="yolov8_cspdarknet", size="n")
YOLO_ARGS = ["--student", "yolov8_cspdarknet", "--size", "n"]
HGNET_ARGS = ["--student", "timm/hgnetv2_b4"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Relative paths from here on: the working directory is ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _export(fmt: str, student_args: list[str], *flags: str) -> int:
    name = "hgnetv2_b4" if "timm/hgnetv2_b4" in student_args else "yolov8n"
    if not Path(f"{name}.pth").exists():
        cfg = StudentConfig(name=student_args[1], size=student_args[-1] if "--size" in student_args else "n")
        torch.manual_seed(0)
        save_state(build_student(cfg).state_dict(), Path(f"{name}.pth"))
    out = f"exports/{name}_{fmt}.pth"
    return main(
        ["export", "--checkpoint", f"{name}.pth", "--format", fmt, "--out", out, *student_args, *flags]
    )


def test_rtdetrv2_snippet_has_an_absolute_path_and_the_recipe_freezing(in_tmp):
    assert _export("rtdetrv2", HGNET_ARGS) == 0
    text = (in_tmp / "exports/hgnetv2_b4_rtdetrv2.rtdetrv2.yml").read_text()
    absolute = str(in_tmp / "exports/hgnetv2_b4_rtdetrv2.pth")
    assert f"-t {absolute} " in text and f"backbone in {absolute}." in text
    assert "-t exports/" not in text
    hgnetv2 = yaml.safe_load(text)["HGNetv2"]
    assert (hgnetv2["freeze_at"], hgnetv2["freeze_norm"]) == (0, True)
    assert "freeze_at: 0  # -1: nothing; 0: the stem; N: the stem and the first N stages" in text
    assert "freeze_norm: True  # True: every BatchNorm becomes FrozenBatchNorm2d" in text


def test_freeze_flags_change_the_rtdetrv2_snippet(in_tmp):
    assert _export("rtdetrv2", HGNET_ARGS, "--freeze-at", "4", "--freeze-norm", "false") == 0
    hgnetv2 = yaml.safe_load((in_tmp / "exports/hgnetv2_b4_rtdetrv2.rtdetrv2.yml").read_text())["HGNetv2"]
    assert (hgnetv2["freeze_at"], hgnetv2["freeze_norm"]) == (4, False)
    assert _export("rtdetrv2", HGNET_ARGS, "--freeze-at", "-1") == 0  # freeze_norm stays the recipe's
    hgnetv2 = yaml.safe_load((in_tmp / "exports/hgnetv2_b4_rtdetrv2.rtdetrv2.yml").read_text())["HGNetv2"]
    assert (hgnetv2["freeze_at"], hgnetv2["freeze_norm"]) == (-1, True)


@pytest.mark.parametrize("fmt", ["mmyolo", "mmdet"])
def test_mm_snippets_have_an_absolute_path_and_map_the_freeze_flags(in_tmp, fmt):
    assert _export(fmt, YOLO_ARGS) == 0
    snippet = in_tmp / f"exports/yolov8n_{fmt}.{fmt}.py"
    text = snippet.read_text()
    compile(text, "snippet", "exec")
    assert f"checkpoint='{in_tmp / f'exports/yolov8n_{fmt}.pth'}'" in text
    assert "frozen_stages=-1," in text and "norm_eval=False," in text  # YOLOv8CSPDarknet's defaults
    assert _export(fmt, YOLO_ARGS, "--freeze-at", "2", "--freeze-norm", "TRUE") == 0
    text = snippet.read_text()
    compile(text, "snippet", "exec")
    assert "frozen_stages=2," in text and "norm_eval=True," in text


def test_s3_uris_stay_uris(s3_bucket, tmp_path):
    torch.manual_seed(0)
    source = save_state(build_student(YOLO).state_dict(), tmp_path / "yolov8n.pth")
    out = f"{s3_bucket}/exports/yolov8n.pth"
    result = run_export(source, "mmyolo", out, YOLO)
    assert result.files == [out, f"{s3_bucket}/exports/yolov8n.mmyolo.py"]
    assert f"checkpoint='{out}'" in storage.read_text(result.files[1])


def test_freeze_flags_are_refused_where_they_would_do_nothing(in_tmp, capsys):
    assert _export("safetensors", YOLO_ARGS, "--freeze-at", "1") == 2
    assert "--format safetensors writes none" in capsys.readouterr().err
    assert _export("rtdetrv2", HGNET_ARGS, "--freeze-at", "5") == 2
    assert "--freeze-at 5: use -1 (nothing), 0 (the stem) or 1..4" in capsys.readouterr().err
    argv = ["export", "--check", "x.pth", "--format", "mmyolo", *YOLO_ARGS, "--freeze-norm", "true"]
    assert main(argv) == 2
    assert "not --check or --whole-detector" in capsys.readouterr().err
    with pytest.raises(ExportError, match="TIMMBackbone .* has no frozen_stages or norm_eval"):
        run_export("unread.pth", "mmdet", "out.pth", StudentConfig(name="timm/repvit_m0_9"), freeze=Freeze(0))
    assert not (in_tmp / "exports").exists()
