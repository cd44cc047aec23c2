"""Every registry entry answers its own declarations, and what it declares is what it does.

Core code (``config_checks``, the trainer's driver checks, export) loops over these answers
instead of testing type names, so an entry whose declaration disagrees with its behaviour would
slip past every check: a head that reads boxes without declaring them would train on a dataset
without categories, a student whose name no family claims would be parsed somewhere by prefix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.heads.test_head_contract import HEAD_CONFIGS
from vfmkd_ray.config import load_config
from vfmkd_ray.handoff.registry import FORMATS, make_format
from vfmkd_ray.heads.registry import HEADS
from vfmkd_ray.losses.base import StudentLevels
from vfmkd_ray.losses.registry import LOSS_TERMS, build_loss_terms
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.students import STUDENT_FAMILIES, StudentConfig, build_student, family_of
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet
from vfmkd_ray.models.teachers.build import TEACHERS
from vfmkd_ray.models.teachers.run import RUN_TEACHER
from vfmkd_ray.reads import Reads

PACKAGE = Path(__file__).parents[1] / "vfmkd_ray"

# One student of every family, with what its family must answer: (timm name, registry type).
FAMILY_EXAMPLES = {
    "registered": (StudentConfig(name="yolov8_cspdarknet", size="n"), None, None),
    "timm": (StudentConfig(name="timm/resnet18"), "resnet18", None),
    "mm": (StudentConfig(name="mm/mmdet.ResNet", mm={"depth": 18}), None, "mmdet.ResNet"),
}


def test_every_student_family_has_an_example():
    assert set(STUDENT_FAMILIES.names()) == set(FAMILY_EXAMPLES)


@pytest.mark.parametrize("family_name", sorted(FAMILY_EXAMPLES))
def test_a_student_family_resolves_its_names_and_answers_for_them(family_name):
    cfg, timm_name, registry_type = FAMILY_EXAMPLES[family_name]
    family = STUDENT_FAMILIES.get(family_name)
    assert family_of(cfg.name) is family and cfg.family is family
    assert cfg.timm_name == timm_name and cfg.registry_type == registry_type
    assert cfg.label.startswith(cfg.name)
    if family.described_by_name:  # what `vfmkd export --student NAME` relies on
        with torch.device("meta"):
            student = build_student(cfg)
        assert student.feature_info.channels()


def test_student_names_are_parsed_only_by_their_family():
    """No module spells a family's prefix but the family's own: every other place asks the student."""
    literal = re.compile(r"""["'](timm|mm)/["']""")
    spelled = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if literal.search(path.read_text(encoding="utf-8"))
    }
    assert spelled == {"models/students/timm_family.py", "models/students/mm_family.py"}


def _built_head(tmp_path, head_type):
    from tests.heads.test_head_contract import _config

    cfg = _config(tmp_path, head_type)
    parts = build_model(cfg)
    return cfg.heads["h"], parts.heads["h"]


@pytest.mark.parametrize("head_type", sorted(HEAD_CONFIGS))
def test_a_head_declares_the_ground_truth_and_teachers_it_reads(tmp_path, head_type):
    config, head = _built_head(tmp_path, head_type)
    reads = config.reads()
    assert isinstance(reads, Reads)
    needs = head.needs()
    assert reads.boxes == (needs.max_objects > 0), "declared boxes differ from the batches it asks for"
    assert reads.masks == (needs.max_masks > 0), "declared masks differ from the batches it asks for"
    read_aliases = {key.split("/")[0] for key in head.teacher_layers}
    assert read_aliases <= {alias for alias in reads.teachers.values() if alias is not None}
    assert reads.classes == getattr(config, "num_classes", None)
    assert all(isinstance(line, str) for line in config.settings_without_effect())
    assert config.with_files(lambda path: path) == config


def test_every_registered_head_has_a_declaration_case():
    assert set(HEADS.names()) == set(HEAD_CONFIGS)


@pytest.mark.parametrize("term_type", LOSS_TERMS.names())
def test_a_term_declares_the_ground_truth_and_teacher_it_reads(term_type):
    cfg = load_config(None, [f"distill.terms={{t: {{type: {term_type}, student_stride: 16}}}}"])
    config = cfg.distill.terms["t"]
    student = YOLOv8CSPDarknet("n")
    shapes = {"sam": {"image_embed": (256, 4, 4)}}
    [term] = build_loss_terms(cfg.distill, StudentLevels(student.feature_info), shapes).values()
    reads = config.reads()
    assert reads.boxes == (term.needs().max_objects > 0)
    assert bool(reads.teachers) == bool(term.teacher_layers)
    assert not reads.masks and reads.classes is None


def test_a_heads_file_is_declared_so_workers_get_it_absolute():
    cfg = load_config(
        None,
        [
            "neck={type: stride4, channels: 16}",
            "heads.h={type: yolc, num_classes: 3, kd: {teacher_ckpt: runs/t/best_model.pth}}",
        ],
    )
    head = cfg.heads["h"]
    assert head.reads().files == {"kd.teacher_ckpt": "runs/t/best_model.pth"}
    moved = head.with_files(lambda path: f"/abs/{path}")
    assert moved.kd.teacher_ckpt == "/abs/runs/t/best_model.pth" and head.kd.teacher_ckpt.startswith("runs/")


def test_every_teacher_is_registered_under_a_name_its_config_accepts():
    from vfmkd_ray.models.teachers.config import TeacherConfig

    for name in TEACHERS.names():
        weights = "runs/x/best_model.pth" if name == RUN_TEACHER else "random"
        assert TeacherConfig(name=name, weights=weights, input_size=64).name == name


@pytest.mark.parametrize("format_name", FORMATS.names())
def test_an_export_format_is_a_factory_that_answers_for_every_student(format_name):
    export_format = make_format(format_name, input_size=96)
    assert export_format.name == format_name and export_format.suffix.startswith(".")
    assert make_format(format_name) is not export_format  # no shared, stateful instance
    for cfg, _, _ in FAMILY_EXAMPLES.values():
        refusal = export_format.refusal(cfg)
        assert refusal is None or cfg.label in refusal
