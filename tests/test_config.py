from pathlib import Path

import pytest
import yaml

from vfmkd_ray.config import CONFIGS_DIR, ConfigError, dump_config, load_config, parse_override
from vfmkd_ray.detection.step import neck_info
from vfmkd_ray.losses.registry import build_loss_terms
from vfmkd_ray.models.teachers import describe_teacher
from vfmkd_ray.train.trainer import check_loss_terms


def test_every_repository_config_validates_and_its_loss_terms_build():
    paths = sorted(CONFIGS_DIR.glob("*.yaml"))
    assert paths, "configs/ holds no YAML"
    for path in paths:
        cfg = load_config(path)
        if cfg.task == "detection":  # its terms read the teacher detector's neck
            build_loss_terms(cfg.distill, neck_info(cfg.detection), {"detector": {"neck": (64, 1, 1)}})
            continue
        # The teachers' structure only: the checkpoints the configs name are not on this machine.
        shapes = {
            alias: describe_teacher(
                t.model_copy(update={"weights": "random", "sha256": None})
            ).feature_shapes()
            for alias, t in cfg.teachers.items()
        }
        check_loss_terms(cfg, shapes)


def test_a_term_on_an_unstored_layer_or_missing_stride_is_a_config_error():
    cfg = load_config(None, ["distill.terms.feature_mse.teacher_layer=fpn_s4"])
    with pytest.raises(ConfigError, match="teacher_layer 'fpn_s4' unknown; layers of teacher 'sam'"):
        check_loss_terms(cfg, {"sam": {"image_embed": (256, 16, 16)}})
    cfg = load_config(None, ["distill.terms.feature_mse.student_stride=64"])
    with pytest.raises(ConfigError, match="no feature level with stride 64"):
        check_loss_terms(cfg, {"sam": {"image_embed": (256, 16, 16)}})


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.epochs=3", "train.lr=1e-4", "distill.terms.edge.weight=0.25"])
    assert cfg.train.epochs == 3
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.distill.terms["edge"].weight == 0.25


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epochz=3"])
    message = str(err.value)
    assert "train.epochz" in message
    assert "epochs" in message and "batch_size" in message


def test_unknown_key_in_yaml_file_is_an_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"student": {"name": "yolov8_cspdarknet", "colour": "red"}}))
    with pytest.raises(ConfigError, match="student.colour"):
        load_config(path)


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["student.size=q"])
    assert "student.size" in str(err.value) and "'q'" in str(err.value)


def test_malformed_override_is_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="is a value"):
        load_config(None, ["train.epochs.max=3"])


def test_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips():
    cfg = load_config(None, ["train.epochs=4"])
    again = load_config(None, [])
    assert again != cfg
    reloaded = yaml.safe_load(dump_config(cfg))
    assert reloaded["train"]["epochs"] == 4
    assert reloaded["teachers"]["sam"]["weights"] == "random"


def test_teachers_are_named_and_terms_refer_to_them():
    cfg = load_config(
        None,
        [
            "teachers.dino.name=dinov2_vits14",
            "teachers.dino.weights=random",
            "distill.terms.dino_s32.type=feature_mse",
            "distill.terms.dino_s32.teacher=dino",
            "distill.terms.dino_s32.student_stride=32",
        ],
    )
    assert list(cfg.teachers) == ["sam", "dino"] and cfg.primary_teacher == "sam"
    with pytest.raises(ConfigError, match=r"distill.terms.dino_s32.teacher 'dino' .*teachers: \['sam'\]"):
        load_config(None, ["distill.terms.dino_s32.type=feature_mse", "distill.terms.dino_s32.teacher=dino"])
    with pytest.raises(ConfigError, match="teachers is empty"):
        load_config(None, ["teachers={}"])
    with pytest.raises(ConfigError, match="teachers.sam-2: an alias is letters"):
        load_config(None, ["teachers.sam-2.name=sam2_hiera_t"])
    with pytest.raises(ConfigError) as err:
        load_config(None, ["teachers.sam.layer=x"])
    assert "teachers.sam.layer" in str(err.value) and "layers" in str(err.value)
