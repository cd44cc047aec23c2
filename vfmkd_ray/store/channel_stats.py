"""Per-channel statistics of every stored layer: what ``normalize: channel`` standardises targets by.

Computed exactly in one streaming pass: each part's writer measures its own rows as the store holds
them (the decoded stored values, codec error included) - count, mean and sum of squared deviations
per channel over every row and every position inside the image (the letterbox padding's response
left out, as the terms leave it out), in float64 - and keeps them in the part's Parquet footer.
``finalize_store`` merges the parts' figures (Chan et al.'s pairwise update, exact up to float64
rounding, and resumable: a part written by an interrupted precompute keeps its own) into the
manifest's per-channel mean and standard deviation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from vfmkd_ray.store import codecs
from vfmkd_ray.store.schema import feature_column, scale_column, shape_column

FOOTER_KEY = b"vfmkd.channel_stats"


class ChannelStats(BaseModel):
    """One layer's per-channel mean and standard deviation over the whole store."""

    model_config = ConfigDict(extra="forbid")

    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class RunningStats:
    """Count, mean and sum of squared deviations per channel (float64), mergeable."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @staticmethod
    def of(values_NC: np.ndarray) -> RunningStats:
        values = values_NC.astype(np.float64)
        mean = values.mean(axis=0)
        return RunningStats(len(values), mean, ((values - mean) ** 2).sum(axis=0))

    def merge(self, other: RunningStats) -> RunningStats:
        if not self.count:
            return other
        if not other.count:
            return self
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / count
        return RunningStats(count, mean, m2)

    def to_json(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @staticmethod
    def from_json(values: dict) -> RunningStats:
        return RunningStats(int(values["count"]), np.array(values["mean"]), np.array(values["m2"]))

    def channel_stats(self) -> ChannelStats:
        return ChannelStats(mean=self.mean.tolist(), std=np.sqrt(self.m2 / max(self.count, 1)).tolist())


def part_stats(
    table: pa.Table, layers: list[str], codec: str, input_size: int | None = None
) -> dict[str, RunningStats]:
    """The running statistics of each layer over a part's rows, from their stored bytes, over the
    positions whose cell centre lies inside the row's ``valid_h`` x ``valid_w`` of the teacher's
    ``input_size`` letterbox (every position without ``input_size``)."""
    valid_h, valid_w = table.column("valid_h").to_pylist(), table.column("valid_w").to_pylist()
    stats = {}
    for layer in layers:
        data = table.column(feature_column(layer)).to_pylist()
        scales = table.column(scale_column(layer)).to_pylist()
        shapes = table.column(shape_column(layer)).to_pylist()
        total = None
        for stored, scale, shape, height, width in zip(data, scales, shapes, valid_h, valid_w, strict=True):
            values = codecs.decode(
                stored, tuple(shape), codec, np.frombuffer(scale, np.float32) if scale else None
            )
            inside = inside_cells(tuple(shape[1:]), height, width, input_size)
            if not inside.any():
                continue  # an image thinner than one cell: nothing of it to count
            row = RunningStats.of(values[:, inside].T)
            total = row if total is None else total.merge(row)
        if total is not None:
            stats[layer] = total
    return stats


def inside_cells(grid_hw: tuple[int, int], valid_h: int, valid_w: int, input_size: int | None) -> np.ndarray:
    """``h x w`` bool: the cells whose centre lies inside the unpadded image."""
    rows, cols = grid_hw
    if input_size is None:
        return np.ones((rows, cols), bool)
    inside_y = (np.arange(rows) + 0.5) * input_size / rows < valid_h
    inside_x = (np.arange(cols) + 0.5) * input_size / cols < valid_w
    return inside_y[:, None] & inside_x[None, :]


def footer_metadata(stats: dict[str, RunningStats]) -> dict[bytes, bytes]:
    return {FOOTER_KEY: json.dumps({layer: s.to_json() for layer, s in stats.items()}).encode()}


def read_footer_stats(metadata: dict[bytes, bytes] | None) -> dict[str, RunningStats] | None:
    """A part's statistics from its footer's key-value metadata; None for a part written before them."""
    if not metadata or FOOTER_KEY not in metadata:
        return None
    return {layer: RunningStats.from_json(v) for layer, v in json.loads(metadata[FOOTER_KEY]).items()}


def merged(parts: list[dict[str, RunningStats] | None], layers: list[str]) -> dict[str, ChannelStats] | None:
    """The store's per-channel statistics; None when a part has none (a store from before them)."""
    if not parts or any(p is None for p in parts):
        return None
    out = {}
    for layer in layers:
        total = RunningStats(0, np.zeros(0), np.zeros(0))
        for part in parts:
            if layer in part:  # type: ignore[operator]
                total = total.merge(part[layer])  # type: ignore[index]
        out[layer] = total.channel_stats()
    return out


def normalized_term_stats(cfg, terms: dict) -> dict:
    """``<alias>/<layer>`` -> ``2 x C`` tensor (mean, std) of every target a ``normalize: channel``
    term of ``terms`` reads, from the stores of ``cfg``'s teachers (for ``vfmkd eval``, whose
    teachers run live).

    Raises:
        FeatureStoreError: such a teacher's store is missing or was made before the statistics.
    """
    import torch

    from vfmkd_ray.store.errors import FeatureStoreError
    from vfmkd_ray.store.manifest import normalized_targets

    out = {}
    for name, key, alias, layer, dataset, manifest in normalized_targets(cfg, terms, "channel"):
        stats = (
            None if manifest is None or manifest.channel_stats is None else manifest.channel_stats.get(layer)
        )
        if stats is None:
            raise FeatureStoreError(
                f"term {name} standardises teacher {alias}'s {layer} by its store's channel statistics, "
                f"but {dataset} holds none (no store, or one made before them)"
            )
        out[key] = torch.tensor([stats.mean, stats.std])
    return out
