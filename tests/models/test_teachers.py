"""Teacher registry contract: frozen, right shapes, weights from a URI with a checksum."""

import io

import numpy as np
import pytest
import torch

from vfmkd_ray import run_files
from vfmkd_ray.config import load_config
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.checkpoint_io import sha256_hex
from vfmkd_ray.models.teachers.build import TEACHERS, build_teacher, describe_teacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.run import RUN_TEACHER

SMALL_SIZE = {"sam": 64, "sam2": 64, "dinov2": 56, "dinov3": 64}
# Real forwards for the small variants; the large ones are checked structurally on the meta device.
RUN_FORWARD = {"sam_vit_b", "sam2_hiera_t", "dinov2_vits14", "dinov3_vits16"}


def _size(name: str) -> int:
    return SMALL_SIZE[name.split("_")[0]]


@pytest.mark.parametrize("name", [n for n in TEACHERS.names() if n != RUN_TEACHER])
def test_teacher_contract(name):
    cfg = TeacherConfig(name=name, weights="random", input_size=_size(name))
    meta = describe_teacher(cfg)
    assert meta.weights_id == "random(seed=0)"
    assert len(meta.layer_names) == len(meta.feature_info)
    if name not in RUN_FORWARD:
        return
    teacher = build_teacher(cfg)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training, "a teacher must stay in eval mode"
    images = torch.randn(2, 3, cfg.input_size, cfg.input_size, requires_grad=True)
    features = teacher(images)
    assert set(features) == set(teacher.layer_names)
    for layer, (channels, height, width) in teacher.feature_shapes().items():
        assert tuple(features[layer].shape) == (2, channels, height, width)
        assert not features[layer].requires_grad
    assert teacher.feature_shapes() == meta.feature_shapes()


def test_random_teacher_is_reproducible():
    cfg = TeacherConfig(name="sam_vit_b", weights="random", input_size=64)
    images = torch.randn(1, 3, 64, 64)
    a = build_teacher(cfg)(images)["image_embed"]
    b = build_teacher(cfg)(images)["image_embed"]
    torch.testing.assert_close(a, b)


def test_weights_are_required_explicitly():
    with pytest.raises(ValueError, match="teacher.weights is not set"):
        build_teacher(TeacherConfig(name="sam_vit_b", input_size=64))


def test_unknown_teacher_lists_valid_names():
    with pytest.raises(ValueError, match="unknown teacher 'sam_vit_q'.*sam_vit_b"):
        build_teacher(TeacherConfig(name="sam_vit_q", weights="random", input_size=64))


def _save(state: dict, path) -> str:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    return sha256_hex(buffer.getvalue())


def test_sam_checkpoint_loads_at_another_input_size_with_checksum(tmp_path):
    source = build_teacher(TeacherConfig(name="sam_vit_b", weights="random", input_size=128, random_seed=3))
    full_sam = {f"image_encoder.{k}": v for k, v in source.encoder.state_dict().items()}
    full_sam["mask_decoder.dummy"] = torch.zeros(1)  # other SAM parts are ignored
    path = tmp_path / "sam_vit_b.pth"
    digest = _save(full_sam, path)
    cfg = TeacherConfig(name="sam_vit_b", weights=str(path), sha256=digest, input_size=64)
    teacher = build_teacher(cfg)
    assert teacher.weights_id == f"sha256:{digest}"
    assert describe_teacher(cfg).weights_id == teacher.weights_id
    torch.testing.assert_close(
        teacher.encoder.patch_embed.proj.weight, source.encoder.patch_embed.proj.weight
    )
    assert teacher.encoder.pos_embed.shape == (1, 4, 4, 768)

    with pytest.raises(ValueError, match="checksum mismatch"):
        build_teacher(cfg.model_copy(update={"sha256": "0" * 64}))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_teacher(cfg.model_copy(update={"weights": str(tmp_path / "missing.pth"), "sha256": None}))


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov3_vits16"])
def test_dino_checkpoint_round_trip(tmp_path, name):
    size = _size(name)
    source = build_teacher(TeacherConfig(name=name, weights="random", input_size=size, random_seed=1))
    path = tmp_path / f"{name}.pth"
    _save(source.vit.state_dict(), path)
    teacher = build_teacher(TeacherConfig(name=name, weights=str(path), input_size=size))
    images = torch.randn(1, 3, size, size)
    features = teacher(images)["patch_tokens"]
    assert features.shape == (
        1,
        teacher.vit.embed_dim,
        size // teacher.spec.patch,
        size // teacher.spec.patch,
    )
    torch.testing.assert_close(features, source(images)["patch_tokens"])


def test_non_state_dict_file_is_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable weights file"):
        build_teacher(TeacherConfig(name="sam_vit_b", weights=str(path), input_size=64))


def test_sam2_fpn_levels_and_official_checkpoint_layout(tmp_path):
    source = build_teacher(TeacherConfig(name="sam2_hiera_t", weights="random", input_size=64, random_seed=2))
    assert source.feature_shapes() == {
        "fpn_s4": (256, 16, 16),
        "fpn_s8": (256, 8, 8),
        "fpn_s16": (256, 4, 4),
    }
    # The layout of the released sam2_hiera_*.pt files: the whole model under "model".
    official = {f"image_encoder.{k}": v for k, v in source.encoder.state_dict().items()}
    official["sam_mask_decoder.dummy"] = torch.zeros(1)
    path = tmp_path / "sam2_hiera_tiny.pt"
    _save({"model": official}, path)
    cfg = TeacherConfig(name="sam2_hiera_t", weights=str(path), input_size=64, layers=["fpn_s16", "fpn_s4"])
    teacher = build_teacher(cfg)
    assert teacher.selected_layers == ("fpn_s4", "fpn_s16")
    assert list(describe_teacher(cfg).feature_shapes()) == ["fpn_s4", "fpn_s16"]
    assert teacher.layer_strides() == {"fpn_s4": 4, "fpn_s16": 16}
    images = torch.randn(1, 3, 64, 64)
    features, expected = teacher(images), source(images)
    assert set(features) == {"fpn_s4", "fpn_s16"}
    torch.testing.assert_close(features["fpn_s16"], expected["fpn_s16"])


def test_unknown_layer_and_bad_input_size_are_named():
    with pytest.raises(ValueError, match=r"no layer \['fpn_s32'\].*fpn_s4"):
        describe_teacher(
            TeacherConfig(name="sam2_hiera_s", weights="random", input_size=64, layers=["fpn_s32"])
        )
    with pytest.raises(ValueError, match="multiple of 32 for sam2_hiera_b\\+, got 48"):
        describe_teacher(TeacherConfig(name="sam2_hiera_b+", weights="random", input_size=48))


def test_a_run_of_this_product_is_a_teacher(tmp_path):
    """A yolc detector run: its backbone and stride-4 neck levels are teacher layers whose
    ``feature_info`` matches what the frozen model outputs."""
    cfg = load_config(
        None,
        [
            "teachers={}",
            "distill.terms={}",
            "data.input_size=64",
            "neck={type: stride4, channels: 16}",
            "heads.det={type: yolc, num_classes: 3}",
        ],
    )
    model = build_model(cfg).model
    run_files.write_best(str(tmp_path), model, cfg.model_dump(mode="json"))
    weights = str(tmp_path / run_files.BEST_MODEL)
    teacher_cfg = TeacherConfig(name=RUN_TEACHER, weights=weights, input_size=64)
    teacher = build_teacher(teacher_cfg)
    assert teacher.layer_names == ("backbone_s4", "backbone_s8", "backbone_s16", "backbone_s32", "neck_s4")
    assert not any(p.requires_grad for p in teacher.parameters())
    images = torch.randn(2, 3, 64, 64)
    features = teacher(images)
    for layer, (channels, height, width) in teacher.feature_shapes().items():
        assert tuple(features[layer].shape) == (2, channels, height, width)
    model.eval()
    torch.testing.assert_close(features["neck_s4"], model.features(images).neck[0])
    assert describe_teacher(teacher_cfg).feature_shapes() == teacher.feature_shapes()
    with pytest.raises(ValueError, match="a run teacher needs weights"):
        build_teacher(TeacherConfig(name=RUN_TEACHER, weights="random", input_size=64))


def test_a_run_teachers_shapes_come_from_its_resolved_config_without_reading_its_weights(tmp_path):
    """Describing a run teacher (a driver's store and config checks) reads the run's config, not
    the weights file beside it: here unreadable, which only loading the teacher finds."""
    from vfmkd_ray.config import dump_config
    from vfmkd_ray.models.teachers.build import teacher_shapes

    cfg = load_config(
        None,
        [
            *("teachers={}", "distill.terms={}", "data.input_size=64", "neck={type: stride4, channels: 16}"),
            "heads.det={type: yolc, num_classes: 3}",
        ],
    )
    (tmp_path / run_files.RESOLVED_CONFIG).write_text(dump_config(cfg))
    (tmp_path / run_files.BEST_MODEL).write_bytes(b"not a checkpoint")
    teacher_cfg = TeacherConfig(name=RUN_TEACHER, weights=str(tmp_path / run_files.BEST_MODEL), input_size=64)
    shapes = teacher_shapes({"run": teacher_cfg})["run"]
    assert shapes["neck_s4"] == (16, 16, 16) and shapes["backbone_s32"][1:] == (2, 2)
    with pytest.raises(ValueError, match="best_model.pth is not a loadable weights file") as raised:
        build_teacher(teacher_cfg)
    assert "\n" not in str(raised.value) and "weights_only=False" not in str(raised.value)


def test_a_run_teacher_is_precomputed_into_a_store_that_verifies(tmp_path):
    """A yolov8 detector run as the teacher of a store: the precompute stages write its selected
    levels, and ``verify`` re-runs the teacher from the same file and finds every row intact."""
    from tests.conftest import build_store_in_process, tiny_overrides
    from vfmkd_ray.data.coco import read_image_records
    from vfmkd_ray.data.image_tensors import normalize
    from vfmkd_ray.data.samples import load_sample
    from vfmkd_ray.data.synthetic import write_synthetic_coco
    from vfmkd_ray.store.verify import verify_store

    detector = load_config(
        None,
        [
            *tiny_overrides(tmp_path),
            *("teachers={}", "distill.terms={}", "data.input_size=64", "neck.type=yolov8_pafpn"),
            "heads.det={type: yolov8, num_classes: 3}",
        ],
    )
    model = build_model(detector).model
    # Batch-norm statistics as a trained model has them, from its own data: untrained (running var
    # 1) they shrink the activations ~40x per level, below fp16's range by stride 32.
    write_synthetic_coco(detector.data)
    images = [
        load_sample(r.image_uri, None, 64, 0, "none")["image"] for r in read_image_records(detector.data)
    ]
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(normalize(torch.from_numpy(np.stack(images))))
    run_files.write_best(str(tmp_path / "detector"), model, detector.model_dump(mode="json"))
    weights = str(tmp_path / "detector" / run_files.BEST_MODEL)
    layers = "backbone_s8, neck_s16"
    cfg = load_config(
        None,
        [
            *(*tiny_overrides(tmp_path), "teachers={}", "distill.terms={}"),
            f"teachers.det={{name: run, weights: {weights}, input_size: 64, layers: [{layers}]}}",
            "distill.terms.p4={type: feature_mse, teacher: det, teacher_layer: neck_s16, student_stride: 16}",
        ],
    )
    dataset = build_store_in_process(cfg, "det")
    assert dataset.endswith("/run/64")
    report = verify_store(dataset, sample=3, weights=weights, check_all=True)
    assert report.passed, report.problems
    assert report.rows == 16 and report.sampled == 3 and report.min_cosine > 0.999
