"""The store index: written with the manifest, checked against it, and what resume and training
start read instead of scanning every part."""

from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import build_store_in_process
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.store import index as store_index
from vfmkd_ray.store.errors import FeatureStoreError
from vfmkd_ray.store.index import INDEX_NAME, build_index, read_index, scan_part
from vfmkd_ray.store.manifest import read_manifest
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.training.teacher_stores import check_stores


def test_precompute_writes_an_index_of_every_row_that_its_manifest_names(tiny_config):
    dataset = build_store_in_process(tiny_config)
    manifest = read_manifest(dataset)
    index = read_index(dataset, manifest.index_sha256)
    assert index.num_rows == manifest.row_count == 16
    scanned = pa.concat_tables([scan_part(p) for p in list_parts(dataset)])
    key = [("part", "ascending"), ("row_group", "ascending")]
    assert index.sort_by(key).equals(scanned.sort_by(key)), "the index equals a scan of the parts"
    assert set(index.column("row").to_pylist()) == {0}, "one row per row group"
    assert min(index.column("nbytes").to_pylist()) > 0


def test_an_index_changed_after_precompute_is_refused_naming_it(tiny_config):
    dataset = build_store_in_process(tiny_config)
    index_file = Path(dataset) / INDEX_NAME
    index_file.write_bytes(index_file.read_bytes() + b"x")
    with pytest.raises(FeatureStoreError, match=f"{index_file} is not the index the manifest names"):
        check_stores(tiny_config, read_image_records(tiny_config.data))
    index_file.unlink()
    with pytest.raises(FeatureStoreError, match=f"store {dataset} has no {INDEX_NAME}"):
        check_stores(tiny_config, read_image_records(tiny_config.data))


def test_only_parts_the_index_does_not_cover_are_scanned(tiny_config, monkeypatch):
    """An interrupted precompute's parts are not in the index yet: they are scanned, no others."""
    dataset = build_store_in_process(tiny_config)
    full = read_index(dataset, read_manifest(dataset).index_sha256)
    uncovered = full.column("part")[0].as_py()
    known = full.filter(pa.compute.not_equal(full.column("part"), uncovered))
    scanned = []
    real_scan = store_index.scan_part
    monkeypatch.setattr(store_index, "scan_part", lambda part: scanned.append(part) or real_scan(part))
    assert build_index(dataset, known).equals(full)
    assert [p.rsplit("/", 1)[-1] for p in scanned] == [uncovered]


def test_precompute_on_a_complete_store_scans_no_part_and_parses_the_dataset_once(
    two_teacher_config, monkeypatch
):
    from vfmkd_ray.data import coco
    from vfmkd_ray.store import precompute

    build_store_in_process(two_teacher_config, "sam")
    build_store_in_process(two_teacher_config, "dino")
    monkeypatch.setattr(store_index, "scan_part", lambda part: pytest.fail(f"scanned {part}"))
    parses = []
    real_read = coco.read_dataset
    monkeypatch.setattr(coco, "read_dataset", lambda cfg: parses.append(1) or real_read(cfg))
    summaries = precompute.run_precompute(two_teacher_config)
    assert [s.num_new for s in summaries] == [0, 0] and len(parses) == 1
