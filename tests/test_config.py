from pathlib import Path

import pytest
import yaml

from vfmkd_ray.config import CONFIGS_DIR, ConfigError, dump_config, load_config, parse_override
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.models.teachers.build import teacher_shapes
from vfmkd_ray.training.trainer import check_model


def test_every_repository_config_validates_and_its_model_builds():
    paths = sorted(CONFIGS_DIR.glob("*.yaml"))
    assert {"multitask.yaml", "yolov8_sam2_coco.yaml", "yolc_tiny.yaml", "transfer_tiny.yaml"} <= {
        p.name for p in paths
    }
    for path in paths:
        # The teachers' structure only: the checkpoints the configs name are not on this machine.
        # yolc_tiny's and transfer_tiny's teachers are runs trained first: leave them out here.
        teacher_runs = {
            "yolc_tiny.yaml": ["heads.det.kd=null", "teachers={}", "distill.terms={}"],
            "transfer_tiny.yaml": ["teachers={}", "distill.terms={}"],
        }
        cfg = load_config(path, teacher_runs.get(path.name, []))
        parts = check_model(cfg, teacher_shapes(cfg.teachers))
        assert list(parts.heads) == list(cfg.heads) and list(parts.terms) == list(cfg.distill.terms)


def test_a_term_on_an_unstored_layer_or_missing_stride_is_a_config_error():
    cfg = load_config(None, ["distill.terms.feature_mse.teacher_layer=fpn_s4"])
    with pytest.raises(ConfigError, match="teacher_layer 'fpn_s4' unknown; layers of teacher 'sam'"):
        check_model(cfg, {"sam": {"image_embed": (256, 16, 16)}})
    cfg = load_config(None, ["distill.terms.feature_mse.student_stride=64"])
    with pytest.raises(ConfigError, match="no feature level with stride 64"):
        check_model(cfg, {"sam": {"image_embed": (256, 16, 16)}})


def test_heads_and_their_neck_are_validated_together():
    heads_only = ["teachers={}", "distill.terms={}", "data.input_size=64"]
    with pytest.raises(ConfigError, match=r"heads.det \(yolov8\): .*neck: \{type: yolov8_pafpn\}"):
        check_model(load_config(None, [*heads_only, "heads.det.type=yolov8", "heads.det.num_classes=3"]), {})
    with pytest.raises(ConfigError, match=r"heads.det \(yolc\): .*neck: \{type: stride4\}"):
        check_model(
            load_config(
                None,
                [*heads_only, "heads.det.type=yolc", "heads.det.num_classes=3", "neck.type=yolov8_pafpn"],
            ),
            {},
        )
    with pytest.raises(ConfigError, match="heads.det.num_classes"):
        load_config(None, [*heads_only, "heads.det.type=yolov8"])  # required, no silent 80
    with pytest.raises(ConfigError, match="heads.seg.features 'sam_s16' is not a distill.terms name"):
        load_config(None, ["heads.seg.type=sam_mask", "heads.seg.features=sam_s16"])
    with pytest.raises(ConfigError, match="nothing to train"):
        load_config(None, heads_only)
    with pytest.raises(ConfigError, match="data.input_size is not set"):
        load_config(
            None, ["teachers={}", "distill.terms={}", "heads.det.type=yolc", "heads.det.num_classes=3"]
        )


def test_old_detection_configs_fail_with_how_to_migrate(tmp_path: Path):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"task": "detection", "detection": {"num_classes": 3}}))
    with pytest.raises(ConfigError, match=r"task: detection is gone: .*heads: \{det: \{type: yolc"):
        load_config(old)
    with pytest.raises(ConfigError, match="distill.teacher_ckpt is gone .*moved into the yolc head"):
        load_config(None, ["distill.teacher_ckpt=x.pth"])
    assert load_config(None, ["task=features"]).distill.terms, "task: features is the default, dropped"


def test_settings_without_effect_are_named():
    cfg = load_config(
        None,
        [
            "teachers.dino.name=dinov2_vits14",
            "teachers.dino.weights=random",
            "neck.type=yolov8_pafpn",
        ],
    )
    lines = config_warnings(cfg)
    assert any(line.startswith("teachers.dino is read by no distill term or head") for line in lines)
    assert any(line.startswith("neck (yolov8_pafpn) feeds no head") for line in lines)
    assert not config_warnings(load_config(None))
    lone_seg = load_config(None, ["heads.seg={type: sam_mask, kd_weight: 2.0}"])
    assert any(
        "heads.seg.kd_weight/kd_temperature have no effect" in line for line in config_warnings(lone_seg)
    )
    with pytest.raises(ConfigError, match=r"\['edge'\] name both a head and a distill term"):
        load_config(None, ["heads.edge={type: sam_mask}"])
    lonely = load_config(None, ["distill.terms={edge: {type: edge}}", "distill.online_ratio=0.2"])
    assert any("distill.online_ratio has no effect" in line for line in config_warnings(lonely))


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


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_config_file_is_an_error_not_all_defaults(tmp_path: Path, text: str):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty.yaml is empty"):
        load_config(path)


@pytest.mark.parametrize("key", ["s3.secret_access_key", "s3.access_key_id", "s3"])
def test_a_badly_typed_secret_is_not_echoed(key: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}=1234567890"])
    assert key in str(err.value) and "1234567890" not in str(err.value) and "(hidden)" in str(err.value)


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
    with pytest.raises(ConfigError, match=r"distill.terms.feature_mse \(feature_mse\) reads a teacher"):
        load_config(None, ["teachers={}"])
    with pytest.raises(ConfigError, match="teachers.sam-2: an alias is letters"):
        load_config(None, ["teachers.sam-2.name=sam2_hiera_t"])
    with pytest.raises(ConfigError) as err:
        load_config(None, ["teachers.sam.layer=x"])
    assert "teachers.sam.layer" in str(err.value) and "layers" in str(err.value)
