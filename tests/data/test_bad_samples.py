"""Skip policy in the data stages: bad rows are recorded with their URI and dropped, never lost."""

import json

import numpy as np
import pytest

from tests.conftest import build_store_in_process, read_part_rows
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.image_loader import ImageLoader
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.samples import IMAGE_COLUMN
from vfmkd_ray.store.manifest import StoreDataset, read_manifest
from vfmkd_ray.store.parts import list_parts


def test_log_is_idempotent_per_sample_and_writes_jsonl(tmp_path):
    log = BadSampleLog(str(tmp_path / "bad"))
    sample = BadSample("7", "s3://b/7.png", "train", "cannot decode image s3://b/7.png")
    log.record(sample)
    log.record(sample)  # seen again in a later epoch
    log.record(BadSample("8", "s3://b/8.png", "missing-features", "no row"))
    assert log.count() == 2
    assert log.write_jsonl(str(tmp_path / "bad.jsonl")) == 2
    lines = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert {line["image_id"] for line in lines} == {"7", "8"}


def test_image_loader_skips_and_records_unreadable_images(tmp_path, tiny_config):
    from vfmkd_ray.data.synthetic import write_synthetic_coco

    write_synthetic_coco(tiny_config.data)
    good = f"{tiny_config.data.root}/images/000001.png"
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"garbage")
    batch = {
        "image_id": np.array(["1", "2", "3"]),
        "image_uri": np.array([good, str(corrupt), str(tmp_path / "missing.png")]),
        "aug_seed": np.zeros(3, np.int64),
    }
    with pytest.raises(BadImageError):
        list(ImageLoader(64, "none")(batch))
    log = BadSampleLog(str(tmp_path / "bad"))
    [out] = list(ImageLoader(64, "none", log)(batch))
    assert list(out["image_id"]) == ["1"] and out[IMAGE_COLUMN].shape == (1, 3, 64, 64)
    errors = {s.image_id: s.error for s in log.read_all()}
    assert "cannot decode image" in errors["2"] and "image not found" in errors["3"]


def test_decoder_skips_a_corrupt_image_and_a_mis_shaped_row(tmp_path, tiny_config):
    dataset = build_store_in_process(tiny_config)
    manifest = read_manifest(dataset)
    part = list_parts(dataset)[0]
    rows = read_part_rows(part)
    rows["feat.image_embed.shape"][0] = [256, 2, 2]
    with open(rows["image_uri"][1], "wb") as handle:
        handle.write(b"not a png")
    log = BadSampleLog(str(tmp_path / "bad"))
    outputs = list(
        TrainSampleDecoder(StoreDataset("sam", dataset, manifest), SampleSpec(64, "none"), log)(rows)
    )
    assert sum(len(o[IMAGE_COLUMN]) for o in outputs) == len(rows["image_id"]) - 2
    recorded = {s.image_id: s.error for s in log.read_all()}
    first, second = str(rows["image_id"][0]), str(rows["image_id"][1])
    assert "(256, 2, 2)" in recorded[first] and "cannot decode image" in recorded[second]


def test_the_datasets_own_bad_samples_join_the_runs_list_once(tmp_path):
    """The reader's findings (images left out for bad annotations, dropped boxes) are written with
    the run's list, not as a file each on every launch."""
    log = BadSampleLog(str(tmp_path / "bad"))
    log.record(BadSample("3", "s3://b/3.png", "train", "cannot decode image"))
    known = [
        BadSample("1", "s3://b/1.png", "annotations", "bad annotations (1): annotation 7: ..."),
        BadSample("2", "s3://b/2.png", "dropped-boxes", "degenerate boxes dropped (1): ..."),
    ]
    assert log.write_jsonl(str(tmp_path / "bad.jsonl"), known) == 2  # the note is no skipped sample
    lines = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [(line["stage"], line["image_id"]) for line in lines] == [
        ("annotations", "1"),
        ("dropped-boxes", "2"),
        ("train", "3"),
    ]
    assert log.count() == 1
