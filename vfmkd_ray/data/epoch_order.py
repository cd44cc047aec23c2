"""The order of an epoch's training stream, from the run's seed and the epoch alone: the same
(seed, epoch) gives the same order on every launch, each epoch its own. MMEngine's
``DefaultSampler(shuffle=True)`` reseeds with seed + epoch the same way; a streamed, sharded store
has no global index to permute, so a pass permutes what it reads (the parts, and the rows inside
each part) and each worker shuffles a few batches' rows locally (Ray Data's local shuffle buffer).
Plain numpy, no Ray."""

from __future__ import annotations

import numpy as np

_U64 = 2**64


def order_key(seed: int, epoch: int, copy: int = 0) -> tuple[int, ...]:
    """The key of epoch ``epoch``'s read order; ``copy`` tells apart the copies of the training split
    one epoch streams (``data.repeat``)."""
    return (seed, epoch, copy)


def permutation(n: int, key: tuple[int, ...]) -> list[int]:
    """A permutation of ``range(n)`` fixed by ``key``: the same key, the same order."""
    return _rng(key).permutation(n).tolist()


def block_rows(key: tuple[int, ...], block: int, num_rows: int) -> list[int]:
    """The order a pass keyed ``key`` hands out the ``num_rows`` rows of its ``block``-th block (a
    store part; its place in the list the pass permutes, not in the pass)."""
    return permutation(num_rows, (*key, block))


def regrouped(num_rows: int, rows_per_block: int, key: tuple[int, ...] | None) -> list[list[int]]:
    """``num_rows`` rows in blocks of ``rows_per_block``, after a permutation of all of them by
    ``key`` (None: in order): each key's blocks hold other rows."""
    rows = permutation(num_rows, key) if key is not None else list(range(num_rows))
    return [rows[start : start + rows_per_block] for start in range(0, num_rows, rows_per_block)]


def worker_shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of worker ``rank``'s local shuffle buffer in epoch ``epoch``."""
    return int(_rng((seed, epoch, rank)).integers(2**32))


def _rng(key: tuple[int, ...]) -> np.random.Generator:
    # SeedSequence takes non-negative entropy: a negative seed maps to its 64-bit two's complement.
    return np.random.default_rng([part % _U64 for part in key])
