"""The transfer grid and each cell's fine-tune config, without Ray."""

import pytest

from tests.conftest import tiny_overrides
from vfmkd_ray.config import CONFIGS_DIR, ConfigError, load_config
from vfmkd_ray.transfer.cells import Backbone, cell_config, fingerprint, grid, parse_backbones

HEADS = ["heads.det.type=yolov8", "heads.det.num_classes=3", "neck.type=yolov8_pafpn"]


def _cfg(tmp_path, *more):
    return load_config(None, tiny_overrides(tmp_path) + HEADS + list(more))


def test_backbones_are_name_equals_uri_and_random_means_no_weights(tmp_path):
    distilled, random = parse_backbones([f"distilled={tmp_path}/b.safetensors", "random=random"])
    assert distilled == Backbone("distilled", f"{tmp_path}/b.safetensors") and random.uri is None
    for bad in (["nameonly"], ["a=x", "a=y"], ["bad name=x"], []):
        with pytest.raises(ConfigError):
            parse_backbones(bad)


def test_grid_has_one_cell_per_backbone_mode_fraction_and_seed(tmp_path):
    cfg = _cfg(tmp_path, "transfer.modes=[frozen,unfrozen]", "transfer.label_fractions=[1.0,0.1]")
    cells = grid(cfg, parse_backbones(["a=random", "b=random"]))
    assert len(cells) == 2 * 2 * 2 * 3
    assert len({c.name for c in cells}) == len(cells)
    assert cells[0].label_fraction == 0.1  # the cheap budget first


def test_a_cell_fine_tunes_the_heads_without_teachers_at_its_budget(tmp_path):
    cfg = _cfg(tmp_path, "data.repeat=2", "transfer.epochs=5")
    backbone = Backbone("distilled", "/weights/b.safetensors")
    frozen = next(c for c in grid(cfg, [backbone]) if c.mode == "frozen" and c.label_fraction == 0.1)
    cell = cell_config(cfg, backbone, frozen, str(tmp_path / "cells"))
    assert cell.name == "distilled-frozen-f0.1-s0"
    assert cell.student.weights == "/weights/b.safetensors" and cell.student.sha256 is None
    assert cell.teachers == {} and cell.distill.terms == {} and list(cell.heads) == ["det"]
    assert cell.input_size == cfg.input_size == 64  # kept although the teacher that set it is gone
    assert cell.data.label_fraction == 0.1 and cell.data.repeat == 2 * 10  # equal steps
    assert cell.train.freeze_backbone and cell.train.epochs == 5
    assert cell.train.storage_path == str(tmp_path / "cells")
    assert fingerprint(cell) == fingerprint(cell_config(cfg, backbone, frozen, str(tmp_path / "cells")))
    other_seed = next(c for c in grid(cfg, [backbone]) if c.mode == "frozen" and c.seed == 1)
    assert fingerprint(cell_config(cfg, backbone, other_seed, str(tmp_path / "cells"))) != fingerprint(cell)
    unequal = _cfg(tmp_path, "transfer.equal_steps=false")
    assert cell_config(unequal, backbone, frozen, str(tmp_path / "cells")).data.repeat == 1


def test_a_yolc_head_drops_its_teacher_run_and_a_config_without_heads_is_refused(tmp_path):
    cfg = load_config(CONFIGS_DIR / "yolc_tiny.yaml", [f"data.root={tmp_path}/data"])
    backbone = Backbone("random", None)
    cell = cell_config(cfg, backbone, grid(cfg, [backbone])[0], str(tmp_path / "cells"))
    assert cell.heads["det"].kd is None and cell.teachers == {}
    with pytest.raises(ConfigError, match="heads is empty"):
        cell_config(_cfg(tmp_path, "heads={}", "neck=null"), backbone, grid(cfg, [backbone])[0], "x")


def test_transfer_settings_are_checked(tmp_path):
    for bad in (
        "transfer.label_fractions=[0]",
        "transfer.label_fractions=[1.5]",
        "transfer.seeds=[]",
        "transfer.modes=[thawed]",
        "transfer.seeds=[1,1]",
    ):
        with pytest.raises(ConfigError):
            _cfg(tmp_path, bad)


def test_two_backbones_cells_differ_in_the_backbone_alone(tmp_path):
    cfg = _cfg(tmp_path)
    distilled, random = Backbone("distilled", "/w/b.safetensors", "ab" * 32), Backbone("random", None)
    first = [c for c in grid(cfg, [distilled, random]) if c.seed == 0 and c.mode == "frozen"]
    cell_a, cell_b = first[:2]  # the same budget, one per backbone
    a = cell_config(cfg, distilled, cell_a, "cells").model_dump()
    b = cell_config(cfg, random, cell_b, "cells").model_dump()
    assert a["student"] == {**b["student"], "weights": "/w/b.safetensors", "sha256": "ab" * 32}
    a.pop("student"), b.pop("student")
    assert a.pop("name") == "distilled-frozen-f0.1-s0" and b.pop("name") == "random-frozen-f0.1-s0"
    assert a == b


def test_the_fingerprint_ignores_where_a_cell_runs_but_not_what_it_learns(tmp_path):
    cfg = _cfg(tmp_path)
    backbone = Backbone("distilled", "/w/b.safetensors", "ab" * 32)
    cell = grid(cfg, [backbone])[0]
    base = fingerprint(cell_config(cfg, backbone, cell, "cells"))
    moved = _cfg(tmp_path, "train.cpus_per_worker=2", "train.max_failures=3", "data.decode_num_cpus=1")
    assert (
        fingerprint(cell_config(moved, Backbone("distilled", "/mnt/b.safetensors", "ab" * 32), cell, "x"))
        == base
    )
    assert (
        fingerprint(cell_config(cfg, Backbone("distilled", "/w/b.safetensors", "cd" * 32), cell, "cells"))
        != base
    )
    assert fingerprint(cell_config(_cfg(tmp_path, "train.lr=0.1"), backbone, cell, "cells")) != base


def test_a_frozen_sam_decoder_cannot_be_fine_tuned_without_its_teacher(tmp_path):
    cfg = load_config(CONFIGS_DIR / "multitask.yaml", [f"data.root={tmp_path}", "heads.seg.decoder=frozen"])
    backbone = Backbone("random", None)
    with pytest.raises(ConfigError, match="heads.seg: a frozen sam_mask decoder"):
        cell_config(cfg, backbone, grid(cfg, [backbone])[0], "cells")
    trainable = cell_config(
        load_config(CONFIGS_DIR / "multitask.yaml"), backbone, grid(cfg, [backbone])[0], "c"
    )
    assert trainable.heads["seg"].teacher is None and trainable.heads["seg"].features is None
