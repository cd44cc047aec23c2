"""Each stored byte is read once per epoch: the validation stream reads only the validation rows'
row groups, the training stream only the training rows' (of one view), through an instrumented
reader, in the index's order or an epoch's shuffled one; and several views per image."""

from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import build_store_in_process, load_config, tiny_overrides
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.epoch_order import order_key, permutation
from vfmkd_ray.data.ordered_blocks import OrderedBlocks
from vfmkd_ray.data.pipeline import (
    SAMPLE_KEY_COLUMN,
    STORED_BYTES_COLUMN,
    SampleSpec,
    TrainSampleDecoder,
    sample_key,
)
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.store import parts as store_parts
from vfmkd_ray.store.index import read_index
from vfmkd_ray.store.manifest import StoreDataset, read_manifest
from vfmkd_ray.store.ray_source import PART_COLUMN, ROW_GROUPS_COLUMN, part_blocks, read_parts
from vfmkd_ray.store.verify import verify_store
from vfmkd_ray.training.read_plan import plan_reads
from vfmkd_ray.training.streams import train_stream


@pytest.fixture
def reads(monkeypatch):
    """Every ``read_row_groups`` call of the store's reader: (part, row groups, their column-chunk
    bytes from the Parquet metadata)."""
    calls = []
    real_open = store_parts.open_parquet

    @contextmanager
    def instrumented(uri):
        with real_open(uri) as parquet:
            real_read = parquet.read_row_groups

            def read_row_groups(groups, *args, **kwargs):
                meta = parquet.metadata
                nbytes = sum(
                    meta.row_group(g).column(c).total_compressed_size
                    for g in groups
                    for c in range(meta.num_columns)
                )
                calls.append((uri, list(groups), nbytes))
                return real_read(groups, *args, **kwargs)

            parquet.read_row_groups = read_row_groups
            yield parquet

    monkeypatch.setattr(store_parts, "open_parquet", instrumented)
    return calls


def _pass(store: StoreDataset, index: pa.Table, ids: list[str], view: int) -> tuple[list[dict], int]:
    """One pass of a stream over ``ids`` at ``view``: the read stage, then the decode stage."""
    plan = plan_reads(index, store.uri, ids, view)
    items = pa.table({PART_COLUMN: list(plan.row_groups), ROW_GROUPS_COLUMN: list(plan.row_groups.values())})
    rows = read_parts(items)
    batch = {name: np.array(rows.column(name).to_pylist(), dtype=object) for name in rows.column_names}
    return list(TrainSampleDecoder(store, SampleSpec(64, store.manifest.augment))(batch)), plan.nbytes


def test_each_split_reads_the_bytes_of_its_own_rows_and_no_others(tiny_config, reads):
    dataset = build_store_in_process(tiny_config)
    store = StoreDataset("sam", dataset, read_manifest(dataset))
    index = read_index(dataset, store.manifest.index_sha256)
    ids = [r.image_id for r in read_image_records(tiny_config.data)]
    val = [i for i in ids if is_validation(i, 0.25)]
    splits = {"train": [i for i in ids if i not in val], "val": val}
    assert 0 < len(val) < len(ids)
    seen_groups = []
    for split, split_ids in splits.items():
        reads.clear()
        samples, planned = _pass(store, index, split_ids, 0)
        read_bytes = sum(nbytes for _, _, nbytes in reads)
        used_bytes = sum(int(s[STORED_BYTES_COLUMN].sum()) for s in samples)
        keys = [k for s in samples for k in s[SAMPLE_KEY_COLUMN].tolist()]
        assert sorted(keys) == sorted(sample_key(i) for i in split_ids), split
        assert read_bytes == used_bytes == planned, f"{split}: read {read_bytes}, used {used_bytes}"
        seen_groups += [(part, g) for part, groups, _ in reads for g in groups]
    assert len(seen_groups) == len(set(seen_groups)) == len(ids), "every row group once per epoch"
    # Read whole (as before the index), both passes together would read the store twice.
    whole = sum(
        m.row_group(g).column(c).total_compressed_size
        for part in store_parts.list_parts(dataset)
        for m in [store_parts.pq.ParquetFile(part).metadata]
        for g in range(m.num_row_groups)
        for c in range(m.num_columns)
    )
    assert int(pa.compute.sum(index.column("nbytes")).as_py()) == whole

    # A shuffled training pass (epoch 1's order, its read tasks run here) reads the same row groups,
    # once each, its parts in that epoch's permutation.
    reads.clear()
    plan = plan_reads(index, store.uri, splits["train"], 0)
    source = OrderedBlocks(part_blocks(plan.row_groups), lambda: order_key(tiny_config.seed, 1))
    rows = pa.concat_tables([table for task in source.get_read_tasks(1) for table in task()])
    assert sorted(rows.column("image_id").to_pylist()) == sorted(splits["train"])
    parts = list(plan.row_groups)
    assert [uri for uri, _, _ in reads] == [
        parts[i] for i in permutation(len(parts), order_key(tiny_config.seed, 1))
    ]
    used = int(pa.compute.sum(rows.column(STORED_BYTES_COLUMN)).as_py())
    assert sum(nbytes for *_, nbytes in reads) == used == plan.nbytes


def test_two_views_per_image_double_the_rows_and_epochs_alternate_them(tmp_path):
    cfg = load_config(None, [*tiny_overrides(tmp_path), "store.views_per_image=2", "store.augment=hflip"])
    dataset = build_store_in_process(cfg)
    manifest = read_manifest(dataset)
    index = read_index(dataset, manifest.index_sha256)
    records = read_image_records(cfg.data)
    assert manifest.views_per_image == 2 and manifest.row_count == index.num_rows == 2 * len(records)
    report = verify_store(dataset, sample=manifest.row_count)
    assert report.passed and report.sampled == 2 * len(records), "verify replays every row of both views"

    store = StoreDataset("sam", dataset, manifest)
    ids = [r.image_id for r in records]
    assert [train_stream(cfg, epoch) for epoch in range(3)] == ["train.view0", "train.view1", "train.view0"]
    seeds = {}
    for view in (0, 1):
        samples, _ = _pass(store, index, ids, view)
        assert sum(len(s[SAMPLE_KEY_COLUMN]) for s in samples) == len(ids)
        plan = plan_reads(index, dataset, ids, view)
        seeds[view] = {
            i: s
            for i, v, s in zip(
                *(index.column(c).to_pylist() for c in ("image_id", "view", "aug_seed")), strict=True
            )
            if v == view
        }
        assert sum(len(g) for g in plan.row_groups.values()) == len(ids)
    assert all(seeds[0][i] != seeds[1][i] for i in ids), "each view has its own augmentation seed"


def test_views_without_augmentation_are_refused(tmp_path):
    from vfmkd_ray.config import ConfigError

    with pytest.raises(ConfigError, match="views_per_image 2 with augment none stores identical views"):
        load_config(None, [*tiny_overrides(tmp_path), "store.views_per_image=2"])


def test_a_part_rewritten_after_precompute_is_named(tiny_config):
    import pyarrow.parquet as pq

    from vfmkd_ray.store.errors import FeatureStoreError

    dataset = build_store_in_process(tiny_config)
    part = store_parts.list_parts(dataset)[0]
    pq.write_table(pq.read_table(part), part)  # one row group: not the layout the index records
    with pytest.raises(
        FeatureStoreError, match=f"part {part} has 1 row groups, the store's index names row group 3"
    ):
        store_parts.read_row_groups(part, [0, 3])
