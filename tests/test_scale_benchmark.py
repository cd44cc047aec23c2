"""The scale benchmark's measurements at a tiny size: every stage runs, each stored byte is read once
per epoch (against twice when both passes read whole parts), the table gives growth exponents, and
the DataLoader peer yields every training row. No Ray."""

import mmap

import torch

from benchmarks.data_plane_peer import PartSamples
from benchmarks.scale import (
    ALIAS,
    PeakRss,
    build_store,
    decoder_for,
    growth_exponent,
    image_pool,
    measure_size,
    split_ids,
    table,
)
from vfmkd_ray.data.pipeline import SAMPLE_KEY_COLUMN, sample_key
from vfmkd_ray.store.index import load_index
from vfmkd_ray.store.manifest import StoreDataset
from vfmkd_ray.training.read_plan import plan_reads


def test_the_scale_benchmark_measures_every_stage_and_reads_each_byte_once(tmp_path):
    results = {rows: measure_size(str(tmp_path), rows) for rows in (130, 260)}
    for figures in results.values():
        assert figures["bytes read / used"][0] == 1.0
        assert figures["bytes read / used, whole parts twice (before)"][0] == 2.0
        assert all(seconds > 0 for stage, (seconds, _) in figures.items() if not stage.startswith("bytes"))
    text = table(results)
    assert text.splitlines()[0] == "| stage | 130 rows | 260 rows | growth exponent |"
    assert "| epoch pass (read + decode, in-process, no Ray) |" in text
    assert "| row index, old (a scan of every part) |" in text
    assert abs(growth_exponent([10, 100], [1.0, 10.0]) - 1.0) < 1e-9
    assert abs(growth_exponent([10, 100, 1000], [1.0, 100.0, 10_000.0]) - 2.0) < 1e-9


def test_the_data_loader_peer_yields_every_training_row_once(tmp_path):
    dataset = f"{tmp_path}/store"
    manifest, records = build_store(dataset, 100, image_pool(str(tmp_path)))
    store = StoreDataset(ALIAS, dataset, manifest)
    train = split_ids(records)["train"]
    plan = plan_reads(load_index(dataset, manifest.index_sha256), dataset, train, 0)
    loader = torch.utils.data.DataLoader(PartSamples(plan.row_groups, decoder_for(store)), batch_size=8)
    keys = [int(k) for raw in loader for k in raw[SAMPLE_KEY_COLUMN]]
    assert sorted(keys) == sorted(sample_key(i) for i in train)


def _touch_fresh_pages(size: int) -> None:
    """``size`` bytes of new anonymous memory, every page written, then unmapped: resident for
    certain, whatever malloc would have reused (in a long test process numpy's 64 MiB block can
    land on pages already resident, and RSS never rises)."""
    block = mmap.mmap(-1, size)
    block.write(b"\1" * size)
    block.close()


def test_peak_rss_sees_a_block_s_allocation_and_resets_between_blocks():
    with PeakRss() as first:
        _touch_fresh_pages(64 * 2**20)
    with PeakRss() as second:
        _touch_fresh_pages(2**20)
    assert first.mib > 32
    assert second.mib < 16  # the first block's peak is not the second's
