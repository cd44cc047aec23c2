"""``student.name: mm/<scope>.<Type>``: any OpenMMLab registry backbone as a student, its levels
measured, its weights read from the files users have, and exported so the real class loads it."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tests.mm.real_classes import build_backbone, config_of, randomise, strict_load
from tests.models.foreign_files import save_state
from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.handoff.command import run_export
from vfmkd_ray.models.students import StudentConfig, build_student
from vfmkd_ray.training.trainer import check_model

pytestmark = pytest.mark.mm
RESNET18 = StudentConfig(name="mm/mmdet.ResNet", mm={"depth": 18, "out_indices": [0, 1, 2, 3]})


def test_registry_backbones_build_with_measured_levels():
    resnet = build_student(RESNET18)
    # The class's own init_weights ran: mmdet's zero_init_residual zeroes each block's last BN.
    assert resnet.body.layer1[0].bn2.weight.abs().sum() == 0
    assert resnet.get_feature_dims() == [64, 128, 256, 512]
    assert resnet.get_feature_strides() == [4, 8, 16, 32]
    assert type(resnet.body).__module__ == "mmdet.models.backbones.resnet"

    darknet = build_student(
        StudentConfig(name="mm/mmyolo.YOLOv8CSPDarknet", mm={"deepen_factor": 0.33, "widen_factor": 0.25})
    )
    ours = build_student(StudentConfig(name="yolov8_cspdarknet", size="n", out_indices=(2, 3, 4)))
    assert darknet.get_feature_dims() == ours.get_feature_dims() == [64, 128, 256]
    # The product's own YOLOv8CSPDarknet has MMYOLO's key names and shapes.
    theirs = {k.removeprefix("body."): tuple(v.shape) for k, v in darknet.state_dict().items()}
    assert theirs == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_a_student_with_compiled_ops_builds_on_the_meta_device():
    """The config check builds on the meta device; mmcv's DCNv2 has no meta kernel, so the levels
    are measured on a CPU copy."""
    dcn = {"type": "DCNv2", "deform_groups": 1, "fallback_on_stride": False}
    cfg = StudentConfig(
        name="mm/mmdet.ResNet", mm={"depth": 50, "dcn": dcn, "stage_with_dcn": [False, True, True, True]}
    )
    with torch.device("meta"):
        student = build_student(cfg)
    assert next(student.parameters()).is_meta
    assert student.get_feature_dims() == [256, 512, 1024, 2048]


def test_imagenet_resnet_weights_from_torchvision_load_into_an_mmdet_resnet_student(tmp_path):
    """A plain state dict of the class's own key names (torchvision's ResNet-18: same names as
    mmdet's ``ResNet``, plus the classifier ``fc``, dropped) seeds the student; its levels equal
    torchvision's ``layer1..4`` outputs."""
    torch.manual_seed(0)
    reference = randomise(torchvision.models.resnet18(), seed=4).eval()
    weights = save_state(reference.state_dict(), tmp_path / "resnet18.pth")
    student = build_student(RESNET18.model_copy(update={"weights": weights})).eval()

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        expected = []
        for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
            x = layer(x)
            expected.append(x)
        for ours, theirs in zip(student(images), expected, strict=True):
            torch.testing.assert_close(ours, theirs)


def test_an_mmdet_export_of_an_mm_student_builds_the_real_class_from_its_snippet(tmp_path):
    student = randomise(build_student(RESNET18), seed=5).eval()
    source = save_state(student.state_dict(), tmp_path / "best_backbone.pth")
    result = run_export(source, "mmdet", str(tmp_path / "resnet18_kd.pth"), RESNET18)
    state = torch.load(result.files[0], weights_only=True)["state_dict"]
    assert all(k.startswith("backbone.") and not k.startswith("backbone.body.") for k in state)

    snippet = config_of(result.files[1])
    assert snippet.model.neck.in_channels == [64, 128, 256, 512]
    real = build_backbone(snippet.model.backbone)
    assert strict_load(real, state, "backbone.") == ([], [])
    by_init_cfg = build_backbone(snippet.model.backbone)
    by_init_cfg.init_weights()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for module in (real, by_init_cfg):
            module.eval()
            for ours, theirs in zip(student(images), module(images), strict=True):
                torch.testing.assert_close(ours, theirs)
    # For MMYOLO the neck takes the measured levels too (not YOLOv8's widen_factor channels).
    mmyolo = run_export(source, "mmyolo", str(tmp_path / "resnet18_kd_mmyolo.pth"), RESNET18)
    neck = config_of(mmyolo.files[1]).model.neck
    assert neck.in_channels == [64, 128, 256, 512] and neck.widen_factor == 1.0
    # The export is a valid student.weights in turn (MMEngine checkpoint, backbone.* keys).
    again = build_student(RESNET18.model_copy(update={"weights": result.files[0]}))
    expected = student.state_dict()
    assert again.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in again.state_dict().items())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["student.name=mm/ResNet"], "mm/<scope>.<Type> with scope one of"),
        (["student.name=mm/mmdet.NoSuchNet"], "has no backbone 'mmdet.NoSuchNet'"),
        (["student.name=mm/mmdet.ResNet", "student.mm.depth=19"], "invalid depth 19"),
        (
            ["student.name=mm/mmdet.ResNet", "student.mm.depth=18", "student.mm.num_stages=9"],
            "AssertionError",
        ),
    ],
)
def test_bad_mm_students_fail_before_any_ray_work(overrides, message, tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=message):
        check_model(cfg, {})
