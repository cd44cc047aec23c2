"""``student.weights`` in the layouts users keep: a plain timm state dict (with or without its
classifier), an MMYOLO checkpoint, and the product's own files; anything else is refused by name."""

import logging
from pathlib import Path

import pytest
import timm
import torch

from tests.models.foreign_files import (
    mmyolo_checkpoint,
    outputs,
    randomise_batchnorm,
    save_state,
    timm_features,
    timm_state,
)
from vfmkd_ray.models.checkpoint_io import sha256_hex
from vfmkd_ray.models.students import KNOWN_TIMM_STUDENTS, StudentConfig, build_student
from vfmkd_ray.models.students.weight_layouts import adapt_weights

LOGGER = "vfmkd_ray.models.students"

TIMM_FILES = [
    ("hgnetv2_b4", "hgnetv2_b4.pth", {}),
    ("hgnetv2_b4", "pytorch_model.bin", {"num_classes": 0}),  # the classifier removed
    ("repvit_m0_9", "model.safetensors", {}),
]


@pytest.mark.parametrize(("name", "file_name", "kwargs"), TIMM_FILES, ids=lambda v: str(v))
def test_plain_timm_weights_seed_the_student(name, file_name, kwargs, tmp_path, caplog):
    state = timm_state(name, **kwargs)
    path = save_state(state, tmp_path / file_name)
    cfg = StudentConfig(name=f"timm/{name}", weights=path, sha256=sha256_hex(Path(path).read_bytes()))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        student = build_student(cfg)
    for ours, timms in zip(outputs(student), outputs(timm_features(name, path)), strict=True):
        assert torch.equal(ours, timms)
    head = [k for k in state if k.startswith("head.")]  # all the feature extractor lacks
    assert head and f"read as timm {name} state dict" in caplog.text
    assert f"{len(student.state_dict())} keys matched, 0 missing, {len(head)} unexpected" in caplog.text


@pytest.mark.parametrize("name", KNOWN_TIMM_STUDENTS)
def test_every_known_timm_student_reads_its_plain_timm_state_dict(name):
    """Keys and shapes only, on the meta device: every student key found, only the head dropped."""
    model = name.removeprefix("timm/")
    with torch.device("meta"):
        student = build_student(StudentConfig(name=name))
        full = timm.create_model(model, pretrained=False).state_dict()
    state, report = adapt_weights(full, student, f"{model}.pth", name)
    assert set(state) == set(student.state_dict()) and report.num_matched == len(state)
    assert report.unexpected and len(report.unexpected) == len(full) - len(state)
    assert report.layout == f"timm {model} state dict"


def test_timm_weights_missing_or_misshaped_keys_fail_naming_file_and_key(tmp_path):
    state = timm_state("hgnetv2_b4")
    del state["stages.1.downsample.conv.weight"]
    path = save_state(state, tmp_path / "incomplete.pth")
    missing = r"1 missing keys \['stages\.1\.downsample\.conv\.weight'\]"
    with pytest.raises(ValueError, match=rf"incomplete\.pth does not fit timm/hgnetv2_b4.*: {missing}"):
        build_student(StudentConfig(name="timm/hgnetv2_b4", weights=path))
    state["stages.1.downsample.conv.weight"] = torch.zeros(128, 1, 5, 5)  # back, with a wrong kernel
    path = save_state(state, tmp_path / "misshaped.pth")
    misshaped = r"1 mis-shaped \['stages\.1\.downsample\.conv\.weight \(128, 1, 5, 5\) vs \(128, 1, 3, 3\)'\]"
    with pytest.raises(
        ValueError, match=rf"misshaped\.pth does not fit timm/hgnetv2_b4.*0 missing keys \[\], {misshaped}"
    ):
        build_student(StudentConfig(name="timm/hgnetv2_b4", weights=path))


def test_mmyolo_checkpoint_seeds_yolov8(tmp_path, caplog):
    torch.manual_seed(0)
    source = randomise_batchnorm(build_student(StudentConfig(name="yolov8_cspdarknet", size="n")))
    path = save_state(mmyolo_checkpoint(source.state_dict()), tmp_path / "yolov8_n_coco.pth")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        student = build_student(StudentConfig(name="yolov8_cspdarknet", size="n", weights=path))
    for ours, theirs in zip(outputs(student), outputs(source), strict=True):
        assert torch.equal(ours, theirs)
    assert "read as MMEngine checkpoint (backbone.*)" in caplog.text and "3 unexpected" in caplog.text
    with pytest.raises(ValueError, match=r"yolov8_n_coco\.pth does not fit yolov8_cspdarknet-s"):
        build_student(StudentConfig(name="yolov8_cspdarknet", size="s", weights=path))


def test_own_files_still_load_strictly(tmp_path):
    torch.manual_seed(0)
    source = randomise_batchnorm(build_student(StudentConfig(name="yolov8_cspdarknet", size="n")))
    state = source.state_dict()
    for path in (
        save_state({"backbone": state}, tmp_path / "best_backbone.pth"),
        save_state(dict(state), tmp_path / "best_backbone.safetensors"),
    ):
        student = build_student(StudentConfig(name="yolov8_cspdarknet", weights=path))
        assert all(torch.equal(a, b) for a, b in zip(outputs(student), outputs(source), strict=True))
    extra = save_state({**state, "neck.x": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth does not fit .* 1 unexpected \['neck\.x'\]"):
        build_student(StudentConfig(name="yolov8_cspdarknet", weights=extra))


def test_unreadable_weights_and_wrong_checksums_name_the_file(tmp_path):
    for name in ("garbage.bin", "garbage.safetensors"):
        (tmp_path / name).write_bytes(b"not weights at all")
        with pytest.raises(
            ValueError, match=rf"{name} is not a (loadable weights|readable safetensors) file"
        ):
            build_student(StudentConfig(name="timm/repvit_m0_9", weights=str(tmp_path / name)))
    path = save_state(timm_state("repvit_m0_9"), tmp_path / "repvit.pth")
    with pytest.raises(ValueError, match=r"checksum mismatch for .*repvit\.pth"):
        build_student(StudentConfig(name="timm/repvit_m0_9", weights=path, sha256="0" * 64))
