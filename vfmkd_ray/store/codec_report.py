"""Measures each codec against the float32 teacher output: bytes per image and cosine similarity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.samples import load_letterboxed
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.store import codecs

CODECS = ("fp16", "bf16", "int8")


@dataclass(frozen=True)
class CodecFigures:
    """One codec's cost and accuracy, averaged over images."""

    codec: str
    payload_bytes: float  # the encoded tensor
    scale_bytes: float  # int8's per-channel scales (4 bytes per channel), 0 otherwise
    mean_cosine: float
    min_cosine: float
    max_abs_error: float

    @property
    def bytes_per_image(self) -> float:
        return self.payload_bytes + self.scale_bytes


def measure_codecs(cfg: ExperimentConfig, num_images: int) -> tuple[float, list[CodecFigures]]:
    """Float32 bytes per image and one row per codec over the first ``num_images`` images, for
    the primary teacher's stored layers."""
    teacher = build_teacher(cfg.teachers[cfg.primary_teacher])
    features = []
    for record in read_image_records(cfg.data)[:num_images]:
        canvas, _ = load_letterboxed(
            record.image_uri, teacher.input_size, 0, "none", cfg.data.max_image_pixels
        )
        with torch.no_grad():
            out = teacher(normalize(torch.from_numpy(canvas)[None]))
        features.extend(f[0].numpy() for f in out.values())
    raw_bytes = float(np.mean([f.nbytes for f in features]))
    return raw_bytes, [_measure(codec, features) for codec in CODECS]


def _measure(codec: str, features: list[np.ndarray]) -> CodecFigures:
    payloads, scales, cosines, errors = [], [], [], []
    for original in features:
        data, scale = codecs.encode(original, codec)
        decoded = codecs.decode(data, original.shape, codec, scale if codec == "int8" else None)
        payloads.append(len(data))
        scales.append(scale.nbytes)
        cosines.append(flat_cosine(original, decoded))
        errors.append(float(np.abs(decoded - original).max()))
    return CodecFigures(
        codec,
        float(np.mean(payloads)),
        float(np.mean(scales)),
        float(np.mean(cosines)),
        min(cosines),
        max(errors),
    )


def flat_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two whole feature maps (flattened)."""
    return float((a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
