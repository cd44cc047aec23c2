"""``vfmkd export``: every format round-trips, carries its target's key layout, and refuses bad input."""

import io
from pathlib import Path

import onnxruntime
import pytest
import timm
import torch
import yaml

from tests.models.mmyolo_layout import mmyolo_state_shapes
from vfmkd_ray.cli import main
from vfmkd_ray.config import load_config
from vfmkd_ray.handoff.command import run_check, run_export
from vfmkd_ray.handoff.registry import make_format
from vfmkd_ray.handoff.source import ExportError
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.students import StudentConfig, build_student

YOLO = StudentConfig(name="yolov8_cspdarknet", size="n")
HGNET = StudentConfig(name="timm/hgnetv2_b4")
REPVIT = StudentConfig(name="timm/repvit_m0_9")
MAMBAOUT = StudentConfig(name="timm/mambaout_femto")  # channels-last features
SIZE = 64


def _student(cfg: StudentConfig, seed: int = 0):
    torch.manual_seed(seed)
    student = build_student(cfg).eval()
    # Non-trivial BN statistics, so a file that loads only conv weights would not pass.
    for module in student.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return student


def _save(payload, path: Path) -> str:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    return str(path)


def _outputs(model, images):
    with torch.no_grad():
        return [t.float() for t in model(images)]


ROUND_TRIPS = [
    (fmt, cfg) for fmt in ("mmdet", "mmyolo", "safetensors", "onnx") for cfg in (YOLO, HGNET, REPVIT)
] + [("rtdetrv2", HGNET), ("timm", HGNET), ("timm", REPVIT), ("timm", MAMBAOUT), ("onnx", MAMBAOUT)]


@pytest.mark.parametrize(("fmt", "cfg"), ROUND_TRIPS, ids=lambda v: v if isinstance(v, str) else v.name)
def test_round_trip(fmt, cfg, tmp_path):
    student = _student(cfg)
    source = _save({"backbone": student.state_dict()}, tmp_path / "best_backbone.pth")
    out = tmp_path / "exported" / f"backbone{make_format(fmt).suffix}"
    result = run_export(source, fmt, str(out), cfg, input_size=SIZE)
    assert result.report.ok and result.files[0] == str(out)
    images = torch.randn(2, 3, SIZE, SIZE)
    expected = _outputs(student, images)
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = [torch.from_numpy(a) for a in session.run(None, {"images": images.numpy()})]
        for ours, theirs in zip(expected, got, strict=True):
            torch.testing.assert_close(theirs, ours, atol=1e-3, rtol=1e-3)
        return
    if fmt == "timm":
        model = timm.create_model(
            cfg.name.removeprefix("timm/"),
            pretrained=True,
            features_only=True,
            pretrained_cfg_overlay={"file": str(out)},
        ).eval()
        got = _outputs(model, images)
        got = [
            g.permute(0, 3, 1, 2) if g.shape[1] != e.shape[1] else g
            for g, e in zip(got, expected, strict=True)
        ]
    else:
        fresh = build_student(cfg).eval()
        fresh.load_state_dict(make_format(fmt).read_back(out, cfg), strict=True)
        got = _outputs(fresh, images)
    for ours, theirs in zip(expected, got, strict=True):
        torch.testing.assert_close(theirs, ours, atol=0, rtol=0)


# RT-DETRv2 HGNetv2 'L' (rtdetrv2_pytorch/src/nn/backbone/hgnetv2.py), worked out by hand from its
# arch config: stem [3, 32, 48]; stage = (in, mid, out, blocks, downsample, light, kernel, layers).
RTDETR_HGNETV2_L_SAMPLE = {
    "backbone.stem.stem1.conv.weight": (32, 3, 3, 3),
    "backbone.stem.stem2a.conv.1.weight": (16, 32, 2, 2),  # 'same' padding: Sequential(ZeroPad2d, Conv2d)
    "backbone.stem.stem2b.conv.1.weight": (32, 16, 2, 2),
    "backbone.stem.stem3.conv.weight": (32, 64, 3, 3),
    "backbone.stem.stem4.conv.weight": (48, 32, 1, 1),
    "backbone.stem.stem4.bn.running_var": (48,),
    "backbone.stages.0.blocks.0.layers.0.conv.weight": (48, 48, 3, 3),
    "backbone.stages.0.blocks.0.aggregation_squeeze_conv.conv.weight": (64, 48 + 6 * 48, 1, 1),
    "backbone.stages.0.blocks.0.aggregation_excitation_conv.conv.weight": (128, 64, 1, 1),
    "backbone.stages.1.downsample.conv.weight": (128, 1, 3, 3),
    "backbone.stages.1.blocks.0.layers.0.conv.weight": (96, 128, 3, 3),
    "backbone.stages.2.blocks.1.layers.0.conv1.conv.weight": (192, 1024, 1, 1),
    "backbone.stages.2.blocks.2.layers.5.conv2.conv.weight": (192, 1, 5, 5),
    "backbone.stages.3.blocks.0.aggregation_squeeze_conv.conv.weight": (1024, 1024 + 6 * 384, 1, 1),
    "backbone.stages.3.blocks.0.aggregation_excitation_conv.bn.num_batches_tracked": (),
}
# stem 5 ConvBN; stages: downsample (0/1/1/1) + blocks x (layers x (1 or 2) + 2 aggregation) ConvBN.
RTDETR_HGNETV2_L_CONVBN = 5 + (6 + 2) + (1 + 6 + 2) + (1 + 3 * (12 + 2)) + (1 + 12 + 2)


def test_rtdetrv2_export_carries_rtdetrv2_hgnetv2_names_and_shapes(tmp_path):
    source = _save(_student(HGNET).state_dict(), tmp_path / "state.pth")
    out = tmp_path / "rtdetrv2_hgnetv2_l.pth"
    result = run_export(source, "rtdetrv2", str(out), HGNET)
    payload = torch.load(out, weights_only=True)
    assert set(payload) == {"model"}, "no 'ema': RT-DETRv2 would read that instead"
    shapes = {k: tuple(v.shape) for k, v in payload["model"].items()}
    for key, shape in RTDETR_HGNETV2_L_SAMPLE.items():
        assert shapes[key] == shape, key
    assert len(shapes) == 6 * RTDETR_HGNETV2_L_CONVBN  # conv weight + 5 BatchNorm entries each
    assert "missed 0, unmatched 0" in result.report.describe()
    snippet = yaml.safe_load(Path(result.files[1]).read_text())
    assert snippet["RTDETR"] == {"backbone": "HGNetv2"}
    assert snippet["HGNetv2"] == {
        "name": "L",
        "return_idx": [1, 2, 3],
        "pretrained": False,
        "freeze_at": 0,  # RT-DETRv2's rtdetrv2_hgnetv2_l_6x_coco.yml recipe
        "freeze_norm": True,
    }
    assert snippet["HybridEncoder"]["in_channels"] == [512, 1024, 2048]


def test_mmyolo_export_carries_mmyolo_yolov8_names(tmp_path):
    source = _save(_student(YOLO).state_dict(), tmp_path / "state.pth")
    result = run_export(source, "mmyolo", str(tmp_path / "yolov8n_backbone.pth"), YOLO)
    payload = torch.load(result.files[0], weights_only=True)
    expected = {f"backbone.{k}": shape for k, shape in mmyolo_state_shapes("n").items()}
    assert {k: tuple(v.shape) for k, v in payload["state_dict"].items()} == expected
    assert payload["meta"]["vfmkd_student"] == "yolov8_cspdarknet-n"
    snippet = Path(result.files[1]).read_text()
    compile(snippet, "snippet", "exec")
    assert "type='YOLOv8CSPDarknet'" in snippet and "widen_factor = 0.25" in snippet
    assert "prefix='backbone.'" in snippet and "last_stage_out_channels = 1024" in snippet


def test_training_checkpoint_and_its_run_config_are_found(tmp_path):
    student = _student(YOLO)
    run = tmp_path / "runs" / "demo"
    checkpoint = run / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    model = build_model(load_config(None, ["distill.terms={edge: {type: edge}}"])).model
    _save(
        {"model": model.state_dict(), "optimizer": {}, "counters": {"epoch": 1}},
        checkpoint / "training_state.pt",
    )
    (run / "resolved_config.yaml").write_text(
        yaml.safe_dump({"student": {"name": "yolov8_cspdarknet", "size": "n"}})
    )
    result = run_export(str(checkpoint), "safetensors", str(tmp_path / "b.safetensors"))
    assert result.source_kind == "training checkpoint" and result.student == "yolov8_cspdarknet-n"
    # A checkpoint written before heads existed (a Distiller with the backbone under student.*).
    old = {f"student.{k}": v for k, v in student.state_dict().items()}
    _save({"distiller": old, "optimizer": {}, "counters": {"epoch": 1}}, checkpoint / "training_state.pt")
    result = run_export(str(checkpoint), "safetensors", str(tmp_path / "c.safetensors"))
    assert result.source_kind == "training checkpoint (before heads)"


def test_bad_inputs_are_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "out.pth"
    other = _save(_student(REPVIT).state_dict(), tmp_path / "repvit.pth")
    with pytest.raises(ExportError, match=r"repvit.pth \(state dict\) does not fit yolov8_cspdarknet-n"):
        run_export(other, "mmyolo", str(out), YOLO)
    good = tmp_path / "yolo.pth"
    _save(_student(YOLO).state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ExportError, match="truncated.pth is not a loadable checkpoint"):
        run_export(str(truncated), "mmyolo", str(out), YOLO)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        run_export(str(good), "tflite", str(out), YOLO)
    with pytest.raises(ExportError, match="RT-DETRv2 has no backbone with the architecture of yolov8"):
        run_export(str(good), "rtdetrv2", str(out), YOLO)
    with pytest.raises(ExportError, match="yolov8_cspdarknet-n is not a timm model"):
        run_export(str(good), "timm", str(out), YOLO)
    with pytest.raises(ExportError, match="list.pth holds a list, not a dict"):
        run_export(_save([1, 2, 3], tmp_path / "list.pth"), "mmyolo", str(out), YOLO)
    with pytest.raises(ExportError, match="holds neither a run's checkpoint, best model"):
        run_export(_save({"epoch": 3}, tmp_path / "counters.pth"), "mmyolo", str(out), YOLO)
    with pytest.raises(ExportError, match="no resolved_config.yaml next to"):
        run_export(str(good), "mmyolo", str(out))
    # A resolved config that is there but refused is named as such, not as missing.
    (tmp_path / "resolved_config.yaml").write_text("student: {}\nstudent: {}\n")
    with pytest.raises(
        ExportError, match="key 'student' is given twice in one mapping, at line 1 and line 2"
    ):
        run_export(str(good), "mmyolo", str(out))
    assert not out.exists() and not out.with_suffix(".mmyolo.py").exists()


def test_check_reports_missed_and_unmatched_keys(tmp_path):
    source = _save(_student(HGNET).state_dict(), tmp_path / "state.pth")
    out = tmp_path / "rt.pth"
    run_export(source, "rtdetrv2", str(out), HGNET)
    payload = torch.load(out, weights_only=True)
    del payload["model"]["backbone.stem.stem1.conv.weight"]
    payload["model"]["backbone.stem.stem4.bn.weight"] = torch.zeros(7)
    damaged = _save(payload, tmp_path / "damaged.pth")
    report = run_check(damaged, "rtdetrv2", HGNET)
    assert not report.ok
    assert report.missed == ["backbone.stem.stem1.conv.weight"]
    assert report.unmatched == ["backbone.stem.stem4.bn.weight"]
    assert main(["export", "--check", damaged, "--format", "rtdetrv2", "--student", "timm/hgnetv2_b4"]) == 1
    assert main(["export", "--check", str(out), "--format", "rtdetrv2", "--student", "timm/hgnetv2_b4"]) == 0


def test_cli_exports_to_s3_and_checks_onnx(s3_bucket, tmp_path, capsys):
    source = _save({"backbone": _student(YOLO).state_dict()}, tmp_path / "best_backbone.pth")
    out = f"{s3_bucket}/exports/yolov8n.onnx"
    args = ["--student", "yolov8_cspdarknet", "--size", "n"]
    assert (
        main(
            ["export", "--checkpoint", source, "--format", "onnx", "--out", out, "--input-size", "64", *args]
        )
        == 0
    )
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["export", "--check", out, "--format", "onnx", "--checkpoint", source, *args]) == 0
    assert "max abs error" in capsys.readouterr().out
    assert main(["export", "--check", out, "--format", "onnx", *args]) == 2  # needs the checkpoint
