"""The per-epoch order of the training stream, without Ray: the keys and permutations of
``data.epoch_order``, and ``data.ordered_blocks`` planning passes from them (its read tasks run in
this process)."""

import pyarrow as pa

from tests.conftest import load_config, tiny_overrides
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.data.epoch_order import block_rows, order_key, permutation, regrouped, worker_shuffle_seed
from vfmkd_ray.data.ordered_blocks import OrderedBlocks, SourceBlock

N = 50


def test_the_same_seed_and_epoch_give_the_same_order_and_other_epochs_or_seeds_another():
    first = permutation(N, order_key(0, 0))
    assert sorted(first) == list(range(N))
    assert permutation(N, order_key(0, 0)) == first, "reproducible on relaunch"
    assert permutation(N, order_key(0, 1)) != first, "each epoch its own order"
    assert permutation(N, order_key(1, 0)) != first, "each seed its own order"
    assert permutation(N, order_key(0, 0, copy=1)) != first, "each copy of a repeated split its own"
    assert permutation(N, order_key(-1, 0)) != first, "negative seeds work and differ"
    assert block_rows(order_key(0, 0), 3, N) != block_rows(order_key(0, 0), 4, N), "each block its own"


def test_worker_shuffle_seeds_differ_by_epoch_and_rank_and_repeat():
    seeds = {(epoch, rank): worker_shuffle_seed(7, epoch, rank) for epoch in range(4) for rank in range(4)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= s < 2**32 for s in seeds.values())
    assert worker_shuffle_seed(7, 2, 1) == seeds[(2, 1)]


def _pass(source: OrderedBlocks) -> list[int]:
    """The rows of one planned pass, its read tasks run in order."""
    return [x for task in source.get_read_tasks(1) for table in task() for x in table.column("x").to_pylist()]


def test_a_pass_reads_every_row_once_in_its_epochs_order():
    tables = [pa.table({"x": list(range(i * 4, i * 4 + 4))}) for i in range(6)]
    blocks = [SourceBlock(t.num_rows, lambda t=t: t) for t in tables]
    epoch = {"now": 0}
    shuffled = OrderedBlocks(blocks, lambda: order_key(3, epoch["now"]))
    in_list_order = OrderedBlocks(blocks)
    passes = []
    for now in (0, 1, 0):
        epoch["now"] = now
        passes.append(_pass(shuffled))
        assert sorted(passes[-1]) == list(range(24)), "every row once"
        assert _pass(in_list_order) == list(range(24)), "no order: the list's (validation)"
    assert passes[0] != passes[1] and passes[0] == passes[2]
    assert [task.metadata.num_rows for task in shuffled.get_read_tasks(1)] == [4] * 6
    first_block = permutation(6, order_key(3, 0))[0]
    assert passes[0][:4] == [first_block * 4 + i for i in block_rows(order_key(3, 0), first_block, 4)]


def test_shuffle_is_on_by_default_and_a_buffer_without_it_is_named(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path))
    assert cfg.data.shuffle and cfg.data.shuffle_buffer > 0
    assert not [line for line in config_warnings(cfg) if "shuffle" in line]
    off = load_config(None, [*tiny_overrides(tmp_path), "data.shuffle=false", "data.shuffle_buffer=32"])
    assert "data.shuffle_buffer has no effect: shuffle is false" in config_warnings(off)


def test_image_rows_are_regrouped_into_new_blocks_every_epoch():
    """Mosaic partners come from a sample's block: regrouped per pass, an image meets others."""
    first, again, later = (regrouped(20, 8, order_key(0, e)) for e in (0, 0, 1))
    assert first == again and [len(b) for b in first] == [8, 8, 4]
    assert sorted(r for b in first for r in b) == list(range(20))
    assert {frozenset(b) for b in first} != {frozenset(b) for b in later}  # other company, not just order
    assert regrouped(5, 2, None) == [[0, 1], [2, 3], [4]]
