"""PHI-S standardisation of a stored teacher layer (``normalize: phi_s``; RADIO's PHI-S,
arXiv 2410.01680): ``y = R U^T (x - mean) / alpha``, where ``U`` diagonalises the layer's channel
covariance, ``R`` is an orthogonal matrix that spreads the eigenvalues evenly over the channels (a
normalised Hadamard matrix when the channel count is a power of two, as in the paper; otherwise
Givens rotations that equalise the diagonal exactly: Schur-Horn's constructive proof), and
``alpha`` is the square root of the mean eigenvalue. Every output channel then has variance 1 and
the map keeps its geometry up to one scale (a rotation, not a whitening: directions of tiny
variance are not blown up, and the error budget is shared evenly across channels).

The covariance is estimated at precompute's finalize from a seeded sample of the store's plain rows
(``SAMPLE_ROWS`` rows, up to ``SAMPLE_CELLS`` cells of each inside the letterbox), their stored
values as training reads them; the transform is kept in ``phi_s.npz`` next to the manifest, which
names it with its sha256 and sample size.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from vfmkd_ray import storage
from vfmkd_ray.store import codecs
from vfmkd_ray.store.channel_stats import inside_cells
from vfmkd_ray.store.errors import FeatureStoreError
from vfmkd_ray.store.index_rows import VIEW_COLUMN
from vfmkd_ray.store.parts import read_row_groups
from vfmkd_ray.store.schema import feature_column, scale_column, shape_column

PHI_S_FILE = "phi_s.npz"
SAMPLE_ROWS = 256
SAMPLE_CELLS = 256


class PhiSFile(BaseModel):
    """The manifest's record of a store's PHI-S transforms."""

    model_config = ConfigDict(extra="forbid")

    file: str
    sha256: str
    rows: int  # stored rows the covariance was estimated from
    cells: dict[str, int]  # per layer, the cell vectors over all of them


@dataclass(frozen=True)
class PhiS:
    """``y = matrix @ (x - mean)`` per cell; ``matrix`` is orthogonal times ``1 / alpha``."""

    mean: np.ndarray  # C
    matrix: np.ndarray  # C x C

    @staticmethod
    def of(mean: np.ndarray, covariance: np.ndarray) -> PhiS:
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        alpha = np.sqrt(max(float(eigenvalues.mean()), 1e-24))
        rotation = spreading_rotation(eigenvalues)
        return PhiS(mean.astype(np.float64), rotation @ eigenvectors.T / alpha)

    def apply(self, values_NC: np.ndarray) -> np.ndarray:
        return (values_NC - self.mean) @ self.matrix.T

    def invert(self, standardized_NC: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self.matrix, standardized_NC.T).T + self.mean

    def packed(self) -> np.ndarray:
        """``(1 + C) x C`` float32: the mean, then the matrix (``Batch.teacher_phi_s``)."""
        return np.concatenate([self.mean[None], self.matrix]).astype(np.float32)


def hadamard(size: int) -> np.ndarray | None:
    """The normalised Sylvester Hadamard matrix of order ``size``; None unless a power of two."""
    if size < 1 or size & (size - 1):
        return None
    matrix = np.ones((1, 1))
    while len(matrix) < size:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix / np.sqrt(size)


def spreading_rotation(eigenvalues: np.ndarray) -> np.ndarray:
    """An orthogonal ``R`` with ``diag(R diag(eigenvalues) R^T)`` equal to their mean everywhere."""
    size = len(eigenvalues)
    if (matrix := hadamard(size)) is not None:
        return matrix
    target = float(np.mean(eigenvalues))
    current = np.diag(np.asarray(eigenvalues, np.float64))  # R diag(eigenvalues) R^T so far
    rotation = np.eye(size)
    # Schur-Horn: rotate the plane of the largest and the smallest diagonal entry so that the first
    # becomes the mean (between them, so some angle does it); each step fixes one entry for good.
    for _ in range(size - 1):
        diagonal = np.diag(current)
        i, j = int(np.argmax(diagonal)), int(np.argmin(diagonal))
        if diagonal[i] - diagonal[j] <= 1e-12 * max(abs(target), 1e-300):
            break
        a, b, m = diagonal[i], diagonal[j], current[i, j]
        # New entry i: (a + b) / 2 + (a - b) / 2 cos 2t + m sin 2t = radius cos(2t - delta) + mid.
        mid, half = (a + b) / 2, (a - b) / 2
        radius, delta = np.hypot(half, m), np.arctan2(m, half)
        theta = (delta + np.arccos(np.clip((target - mid) / radius, -1.0, 1.0))) / 2
        cos, sin = np.cos(theta), np.sin(theta)
        for matrix in (current, rotation):  # rows i, j
            row_i, row_j = matrix[i].copy(), matrix[j].copy()
            matrix[i], matrix[j] = cos * row_i + sin * row_j, -sin * row_i + cos * row_j
        col_i, col_j = current[:, i].copy(), current[:, j].copy()
        current[:, i], current[:, j] = cos * col_i + sin * col_j, -sin * col_i + cos * col_j
    return rotation


def sample_covariance(
    dataset: str, index: pa.Table, layers: list[str], codec: str, input_size: int, seed: int = 0
) -> tuple[dict[str, PhiS], int, dict[str, int]]:
    """Per layer the PHI-S transform of a seeded sample of ``dataset``'s view-0 rows (``index``:
    its ``store.index``); and the rows and cell vectors it saw (per layer)."""
    plain = index.filter(pa.compute.equal(index.column(VIEW_COLUMN), 0))
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(plain.num_rows, min(SAMPLE_ROWS, plain.num_rows), replace=False))
    parts = plain.column("part").to_pylist()
    groups = plain.column("row_group").to_pylist()
    by_part: dict[str, list[int]] = {}
    for n in picked:
        by_part.setdefault(parts[n], []).append(groups[n])
    sums: dict[str, tuple | None] = dict.fromkeys(layers)
    for part, wanted in by_part.items():
        table, _ = read_row_groups(storage.join(dataset, part), sorted(set(wanted)))
        for row in table.to_pylist():
            for layer in layers:
                shape = tuple(row[shape_column(layer)])
                scale = row[scale_column(layer)]
                values = codecs.decode(
                    row[feature_column(layer)],
                    shape,
                    codec,
                    np.frombuffer(scale, np.float32) if scale else None,
                )
                inside = np.flatnonzero(inside_cells(shape[1:], row["valid_h"], row["valid_w"], input_size))
                if len(inside) > SAMPLE_CELLS:
                    inside = np.sort(rng.choice(inside, SAMPLE_CELLS, replace=False))
                vectors = values.reshape(shape[0], -1)[:, inside].T.astype(np.float64)
                count, total, outer = sums[layer] or (0, 0.0, 0.0)
                sums[layer] = (count + len(vectors), total + vectors.sum(0), outer + vectors.T @ vectors)
    transforms = {}
    for layer, summed in sums.items():
        if summed is None or summed[0] < 2:
            raise FeatureStoreError(f"store {dataset}: too few cells of layer {layer} to estimate PHI-S")
        count, total, outer = summed
        mean = total / count
        transforms[layer] = PhiS.of(mean, outer / count - np.outer(mean, mean))
    return transforms, len(picked), {layer: int(summed[0]) for layer, summed in sums.items()}


def write_phi_s(dataset: str, transforms: dict[str, PhiS], rows: int, cells: dict[str, int]) -> PhiSFile:
    """Writes ``phi_s.npz`` (per layer ``<layer>.mean``, ``<layer>.matrix``) next to the manifest."""
    buffer = io.BytesIO()
    arrays = {}
    for layer, phi in transforms.items():
        arrays[f"{layer}.mean"], arrays[f"{layer}.matrix"] = phi.mean, phi.matrix
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    storage.write_bytes_atomic(storage.join(dataset, PHI_S_FILE), data)
    return PhiSFile(file=PHI_S_FILE, sha256=hashlib.sha256(data).hexdigest(), rows=rows, cells=cells)


def read_phi_s(dataset: str, record: PhiSFile) -> dict[str, PhiS]:
    """The store's PHI-S transforms, checked against the manifest's sha256.

    Raises:
        FeatureStoreError: the file is missing or not the one the manifest names.
    """
    uri = storage.join(dataset, record.file)
    if not storage.exists(uri):
        raise FeatureStoreError(f"store {dataset}'s manifest names {record.file}, which is missing")
    data = storage.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise FeatureStoreError(f"{uri} is not the file the store's manifest names (its sha256 differs)")
    # Plain arrays only: np.load refuses pickled objects by default.
    with np.load(io.BytesIO(data)) as arrays:
        layers = {name.rsplit(".", 1)[0] for name in arrays.files}
        return {layer: PhiS(arrays[f"{layer}.mean"], arrays[f"{layer}.matrix"]) for layer in layers}


def term_phi_s(cfg, terms: dict) -> dict[str, np.ndarray]:
    """``<alias>/<layer>`` -> packed ``(1 + C) x C`` transform (``PhiS.packed``) of every target a
    ``normalize: phi_s`` term of ``terms`` reads, from the stores of ``cfg``'s teachers: what training
    and ``vfmkd eval`` both standardise by.

    Raises:
        FeatureStoreError: such a teacher has no store, or one made before PHI-S was kept.
    """
    from vfmkd_ray.store.manifest import normalized_targets

    out: dict[str, np.ndarray] = {}
    for name, key, alias, layer, dataset, manifest in normalized_targets(cfg, terms, "phi_s"):
        transforms = {} if manifest is None or manifest.phi_s is None else read_phi_s(dataset, manifest.phi_s)
        if layer not in transforms:
            raise FeatureStoreError(
                f"distill.terms.{name}.normalize phi_s standardises teacher {alias}'s {layer} by its "
                f"store's PHI-S transform, and {dataset} holds none: no store (precompute it), or one "
                f"made before stores kept it (precompute into a fresh store.root); or set "
                f"distill.terms.{name}.normalize to channel or none"
            )
        out[key] = transforms[layer].packed()
    return out
