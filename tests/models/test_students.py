"""Contract tests over every student, and YOLOv8's MMYOLO key layout."""

import pytest
import torch

from tests.models.mmyolo_layout import MMYOLO_LAYOUT, mmyolo_state_shapes
from vfmkd_ray.models.students import KNOWN_TIMM_STUDENTS, STUDENTS, StudentConfig, build_student
from vfmkd_ray.models.students.yolov8_cspdarknet import BN_EPS, BN_MOMENTUM, YOLOV8_SIZES

STUDENT_CASES = [("yolov8_cspdarknet", size) for size in YOLOV8_SIZES] + [
    (name, "n") for name in KNOWN_TIMM_STUDENTS
]


def _build(name: str, size: str):
    torch.manual_seed(0)
    return build_student(StudentConfig(name=name, size=size))


@pytest.mark.parametrize(("name", "size"), STUDENT_CASES)
def test_student_contract(name, size):
    student = _build(name, size)
    side = student.fixed_input_size or 64
    images = torch.randn(2, 3, side, side)
    outputs = student(images)
    assert isinstance(outputs, tuple)
    info = student.feature_info
    assert len(outputs) == len(info)
    assert student.get_feature_dims() == info.channels()
    assert student.get_feature_strides() == info.reduction()
    for out, channels, stride in zip(outputs, info.channels(), info.reduction(), strict=True):
        assert tuple(out.shape) == (2, channels, side // stride, side // stride)

    sum(out.float().mean() for out in outputs).backward()
    no_grad = [n for n, p in student.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    fresh = _build(name, size)
    fresh.load_state_dict(student.state_dict(), strict=True)
    student.eval()
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(student(images), fresh(images), strict=True):
            torch.testing.assert_close(a, b)


def test_every_registered_student_is_covered():
    assert {name for name, _ in STUDENT_CASES} >= set(STUDENTS.names())


def test_unknown_student_names_valid_ones():
    with pytest.raises(ValueError, match="unknown student 'yolov9'.*yolov8_cspdarknet"):
        build_student(StudentConfig(name="yolov9"))
    with pytest.raises(ValueError, match="unknown timm model 'repvit_m9_9'"):
        build_student(StudentConfig(name="timm/repvit_m9_9"))


@pytest.mark.parametrize("size", sorted(MMYOLO_LAYOUT))
def test_yolov8_state_dict_matches_mmyolo_layout(size):
    state = _build("yolov8_cspdarknet", size).state_dict()
    expected = mmyolo_state_shapes(size)
    assert set(state) == set(expected)
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key


def test_yolov8_batchnorm_and_activation_follow_mmyolo():
    student = _build("yolov8_cspdarknet", "s")
    norms = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == BN_MOMENTUM == 0.03 and m.eps == BN_EPS == 0.001 for m in norms)
    assert any(isinstance(m, torch.nn.SiLU) for m in student.modules())
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)


def test_yolov8s_outputs_at_1024():
    student = _build("yolov8_cspdarknet", "s").eval()
    with torch.no_grad():
        outputs = student(torch.zeros(1, 3, 1024, 1024))
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (64, 256, 256),
        (128, 128, 128),
        (256, 64, 64),
        (512, 32, 32),
    ]


def test_an_mm_student_config_is_checked_against_its_name_without_the_stack():
    with pytest.raises(ValueError, match="differs from student.name"):
        StudentConfig(name="mm/mmdet.ResNet", mm={"type": "mmdet.RegNet"})
    with pytest.raises(ValueError, match="student.mm is the backbone dict"):
        StudentConfig(name="yolov8_cspdarknet", mm={"depth": 18})
    with pytest.raises(ValueError, match="student.mm.init_cfg would load weights"):
        StudentConfig(name="mm/mmdet.ResNet", mm={"init_cfg": {"type": "Pretrained"}})
    with pytest.raises(ValueError, match="student.mm.pretrained would load weights"):
        StudentConfig(name="mm/mmdet.ResNet", mm={"pretrained": "torchvision://resnet18"})
    StudentConfig(name="mm/mmpretrain.TIMMBackbone", mm={"model_name": "resnet18", "pretrained": False})
    with pytest.raises(ValueError, match="takes its outputs from student.mm"):
        StudentConfig(name="mm/mmdet.ResNet", out_indices=(1, 2))
    assert StudentConfig(name="mm/mmdet.ResNet", mm={"depth": 18}).label == "mm/mmdet.ResNet"
