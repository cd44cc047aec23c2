"""``vfmkd export --checkpoint`` from weights users keep: plain timm state dicts and MMYOLO
checkpoints, including what ``--format mmyolo/mmdet`` itself writes (a round trip)."""

import pytest
import torch
from safetensors.torch import load_file

from tests.models.foreign_files import (
    mmyolo_checkpoint,
    outputs,
    randomise_batchnorm,
    save_state,
    timm_state,
)
from vfmkd_ray.cli import main
from vfmkd_ray.handoff.command import run_export
from vfmkd_ray.handoff.source import ExportError
from vfmkd_ray.models.students import StudentConfig, build_student

HGNET = StudentConfig(name="timm/hgnetv2_b4")
REPVIT = StudentConfig(name="timm/repvit_m0_9")
YOLO = StudentConfig(name="yolov8_cspdarknet", size="n")


def _without_head(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def test_plain_hgnetv2_pth_exports_to_rtdetrv2_and_timm(tmp_path):
    state = timm_state("hgnetv2_b4")
    source = save_state(state, tmp_path / "hgnetv2_b4.pth")
    result = run_export(source, "rtdetrv2", str(tmp_path / "rt.pth"), HGNET)
    assert result.report.ok and result.source_kind == "state dict"
    assert result.weights.layout == "timm hgnetv2_b4 state dict"
    assert (result.weights.num_matched, len(result.weights.missing)) == (480, 0)
    assert sorted(result.weights.unexpected) == sorted(k for k in state if k.startswith("head."))
    out = tmp_path / "hgnetv2_b4.safetensors"
    assert run_export(source, "timm", str(out), HGNET).report.ok
    exported = load_file(str(out))  # the full model's names again: the same tensors, less the head
    assert set(exported) == set(_without_head(state))
    assert all(torch.equal(exported[k], state[k]) for k in exported)


def test_plain_repvit_safetensors_exports_to_timm(tmp_path):
    state = timm_state("repvit_m0_9")
    source = save_state(state, tmp_path / "model.safetensors")
    out = tmp_path / "repvit.safetensors"
    result = run_export(source, "timm", str(out), REPVIT)
    assert result.report.ok and result.source_kind == "safetensors state dict"
    assert len(result.weights.unexpected) == len(state) - len(_without_head(state)) > 0
    exported = load_file(str(out))
    assert set(exported) == set(_without_head(state))
    assert all(torch.equal(exported[k], state[k]) for k in exported)


def test_timm_file_missing_a_backbone_key_is_refused(tmp_path):
    state = timm_state("repvit_m0_9")
    del state["stem.conv1.c.weight"]
    source = save_state(state, tmp_path / "broken.safetensors")
    out = tmp_path / "out.safetensors"
    with pytest.raises(
        ExportError, match=r"broken\.safetensors .*1 missing keys \['stem\.conv1\.c\.weight'\]"
    ):
        run_export(source, "timm", str(out), REPVIT)
    assert not out.exists()


def test_mmyolo_checkpoint_exports_and_mmyolo_exports_round_trip(tmp_path):
    torch.manual_seed(0)
    student = randomise_batchnorm(build_student(YOLO)).eval()
    source = save_state(mmyolo_checkpoint(student.state_dict()), tmp_path / "yolov8_n_coco.pth")
    result = run_export(source, "mmyolo", str(tmp_path / "backbone.pth"), YOLO)
    assert result.report.ok and result.source_kind == "MMEngine checkpoint"
    assert (result.weights.num_matched, len(result.weights.unexpected)) == (len(student.state_dict()), 3)
    # The product's own mmyolo export is an MMEngine checkpoint too: it reads back unchanged.
    again = run_export(result.files[0], "safetensors", str(tmp_path / "again.safetensors"), YOLO)
    assert again.weights.unexpected == ()
    seeded = build_student(YOLO.model_copy(update={"weights": again.files[0]}))
    assert all(torch.equal(a, b) for a, b in zip(outputs(seeded), outputs(student), strict=True))


def test_mmdet_export_of_a_timm_student_reads_back(tmp_path):
    torch.manual_seed(0)
    student = randomise_batchnorm(build_student(REPVIT)).eval()
    source = save_state(student.state_dict(), tmp_path / "repvit_own.pth")
    exported = run_export(source, "mmdet", str(tmp_path / "repvit_mmdet.pth"), REPVIT).files[0]
    seeded = build_student(REPVIT.model_copy(update={"weights": exported}))
    assert all(torch.equal(a, b) for a, b in zip(outputs(seeded), outputs(student), strict=True))


def test_cli_prints_how_the_checkpoint_was_read(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_state(timm_state("hgnetv2_b4", num_classes=0), tmp_path / "hgnetv2_b4.pth")
    argv = ["export", "--checkpoint", "hgnetv2_b4.pth", "--format", "rtdetrv2", "--out", "exports/hg.pth"]
    assert main([*argv, "--student", "timm/hgnetv2_b4"]) == 0
    printed = capsys.readouterr().out
    assert "timm/hgnetv2_b4 from state dict hgnetv2_b4.pth" in printed
    assert "read as timm hgnetv2_b4 state dict: 480 keys matched, 0 missing, 1 unexpected" in printed
    assert "(dropped: head.last_conv.0.weight)" in printed
