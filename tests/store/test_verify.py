"""``vfmkd verify`` on stores built in-process from the real teacher."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import build_store_in_process
from vfmkd_ray.cli import main
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.schema import crc_column, row_checksum, scale_column
from vfmkd_ray.store.verify import verify_store


@pytest.mark.parametrize("codec", ["fp16", "int8"])
def test_a_fresh_store_verifies(tiny_config, codec):
    cfg = tiny_config.model_copy(update={"store": tiny_config.store.model_copy(update={"codec": codec})})
    dataset = build_store_in_process(cfg)
    report = verify_store(dataset, sample=3)
    assert report.passed, report.problems
    assert report.rows == 16 and report.parts == 4 and report.sampled == 3
    assert report.min_cosine > 0.999 and report.max_abs_error < 0.05


def test_hflip_store_replays_the_augmentation(tiny_config):
    cfg = tiny_config.model_copy(update={"store": tiny_config.store.model_copy(update={"augment": "hflip"})})
    report = verify_store(build_store_in_process(cfg), sample=6)
    assert report.passed, report.problems


def test_tampered_store_fails_and_the_cli_exits_1(tiny_config, capsys):
    dataset = build_store_in_process(tiny_config)
    part = list_parts(dataset)[0]
    table = pq.read_table(part)
    features = table.column("feat.image_embed").to_pylist()
    features[0] = bytes(len(features[0]))  # all zeros: wrong values, right shape
    checksums = table.column(crc_column("image_embed")).to_pylist()
    scale = table.column(scale_column("image_embed"))[0].as_py()
    checksums[0] = row_checksum(features[0], scale)  # a consistent row: only the teacher can tell
    for name, values in (("feat.image_embed", features), (crc_column("image_embed"), checksums)):
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    pq.write_table(table, part)
    report = verify_store(dataset, sample=16)
    assert not report.passed and any("cosine" in p for p in report.problems)

    assert main(["verify", "--store", dataset, "--sample", "16"]) == 1
    assert "verify: FAILED" in capsys.readouterr().out


def test_structure_problems_are_listed(tiny_config):
    dataset = build_store_in_process(tiny_config)
    parts = list_parts(dataset)
    duplicate = parts[0].replace("part-", "part-copy-")
    with open(parts[0], "rb") as src, open(duplicate, "wb") as dst:
        dst.write(src.read())
    report = verify_store(dataset, sample=0)
    assert any("duplicate (image id:view) rows" in p for p in report.problems)
    assert any("the manifest says 16" in p for p in report.problems)
    assert any("the index lists 0 rows the parts do not hold and lacks 4" in p for p in report.problems)


def test_store_with_real_weights_needs_them(tiny_config, tmp_path):
    import torch

    from vfmkd_ray.models.teachers.build import build_teacher

    weights = tmp_path / "sam.pth"
    sam = tiny_config.teachers["sam"]
    torch.save(build_teacher(sam).encoder.state_dict(), weights)
    cfg = tiny_config.model_copy(
        update={"teachers": {"sam": sam.model_copy(update={"weights": str(weights)})}}
    )
    dataset = build_store_in_process(cfg)
    with pytest.raises(ValueError, match="pass --weights"):
        verify_store(dataset, sample=1)
    assert verify_store(dataset, sample=2, weights=str(weights)).passed
