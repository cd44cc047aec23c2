"""``AugmentRecord``: everything random about one sample's augmentation, drawn once from (seed,
epoch, image id) and kept with the sample, so that its pixels and targets (and next its teacher
features) can be replayed exactly (``augment.replay``). Plain values only: it travels in a row as
JSON (``to_json`` / ``from_json``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from vfmkd_ray.data.augment.recipe import AugmentSpec


@dataclass(frozen=True)
class AugmentRecord:
    image_id: str
    size: int  # the output canvas side, in pixels
    mosaic: bool  # four images on a 2 x size canvas, else the image letterboxed at size
    partners: tuple[str, ...] = ()  # the other three mosaic tiles: top-right, bottom-left, bottom-right
    center: tuple[int, int] = (0, 0)  # where the four tiles meet, on the mosaic canvas (x, y)
    matrix: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # 2 x 3 affine, canvas -> output
    scale: float = 1.0  # the affine's scale (for the box filter's area ratio)
    blur: int = 0  # Albu's Blur kernel (0: not drawn)
    median_blur: int = 0  # Albu's MedianBlur kernel (0: not drawn)
    gray: bool = False  # Albu's ToGray
    equalize: bool = False  # Albu's CLAHE, here a histogram equalisation
    hsv_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    flip: bool = False
    mixup_with: AugmentRecord | None = None  # another sample's whole record, mixed in
    mixup_ratio: float = 1.0  # this sample's share of the mixed pixels

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> AugmentRecord:
        return _from_dict(json.loads(text))

    def image_ids(self) -> tuple[str, ...]:
        """Every image whose pixels the sample holds: its own, its mosaic partners, and the MixUp
        sample's."""
        own = (self.image_id, *self.partners)
        return own + (self.mixup_with.image_ids() if self.mixup_with is not None else ())

    def at_size(self, size: int) -> AugmentRecord:
        """The same sample on a ``size`` canvas: every pixel coordinate scaled by ``size /
        self.size`` (a stored view is drawn at the student's input size, each teacher sees it at
        its own), the affine's scale and the photometric draws unchanged (a blur kernel too: at
        another size the canvases agree up to resampling and that kernel)."""
        if size == self.size:
            return self
        factor = size / self.size
        a, b, tx, c, d, ty = self.matrix
        return replace(
            self,
            size=size,
            center=(int(self.center[0] * factor), int(self.center[1] * factor)),
            matrix=(a, b, tx * factor, c, d, ty * factor),
            mixup_with=None if self.mixup_with is None else self.mixup_with.at_size(size),
        )


@dataclass(frozen=True)
class DrawContext:
    """What a record is drawn from besides the spec: the run's seed, the epoch and its length, and
    the output size."""

    seed: int
    epoch: int  # 0-based
    epochs: int
    size: int
    salt: str = field(default="")  # a second record of the same image in the same epoch (MixUp's)


def record_rng(seed: int, epoch: int, image_id: str, salt: str = "") -> np.random.Generator:
    """A generator keyed by (seed, epoch, image id): the same on every node and every replay."""
    digest = hashlib.blake2b(f"{seed}\x00{epoch}\x00{image_id}\x00{salt}".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def draw_record(
    spec: AugmentSpec, context: DrawContext, image_id: str, candidates: Sequence[str], mixup: bool = True
) -> AugmentRecord:
    """The record of ``image_id`` in ``context``'s epoch. Mosaic partners and the MixUp sample are
    chosen from ``candidates`` (the rows of the sample's block; the image itself when there are
    none)."""
    rng = record_rng(context.seed, context.epoch, image_id, context.salt)
    # Not copied: a stored view's candidates are the whole training split.
    size, pool = context.size, candidates if len(candidates) else [image_id]
    use_mosaic = spec.mosaic_at(context.epoch, context.epochs)
    partners = tuple(pool[int(i)] for i in rng.integers(0, len(pool), 3)) if use_mosaic else ()
    center = tuple(int(rng.uniform(*spec.mosaic_center) * size) for _ in range(2)) if use_mosaic else (0, 0)
    canvas = 2 * size if use_mosaic else size
    scale = float(rng.uniform(*spec.scaling_range))
    shift_x, shift_y = (
        float(rng.uniform(0.5 - spec.max_translate, 0.5 + spec.max_translate)) * size for _ in range(2)
    )
    # x' = scale * (x - canvas / 2) + shift: MMYOLO's translate @ scale @ centre (no rotation, shear)
    matrix = (scale, 0.0, shift_x - scale * canvas / 2, 0.0, scale, shift_y - scale * canvas / 2)
    blur = int(rng.choice(spec.blur_kernels)) if rng.random() < spec.albu_prob else 0
    median = int(rng.choice(spec.blur_kernels)) if rng.random() < spec.albu_prob else 0
    gray, equalize = (bool(rng.random() < spec.albu_prob) for _ in range(2))
    hsv = tuple(float(g) for g in rng.uniform(-1.0, 1.0, 3) * np.array(spec.hsv_deltas) + 1.0)
    flip = bool(rng.random() < spec.flip_prob)
    mixup_with, ratio = None, 1.0
    if mixup and use_mosaic and rng.random() < spec.mixup_prob:
        other = pool[int(rng.integers(0, len(pool)))]
        inner = DrawContext(context.seed, context.epoch, context.epochs, size, salt=f"mixup:{image_id}")
        mixup_with = draw_record(spec, inner, other, candidates, mixup=False)
        ratio = float(rng.beta(spec.mixup_beta, spec.mixup_beta))
    return AugmentRecord(
        image_id=image_id,
        size=size,
        mosaic=use_mosaic,
        partners=partners,
        center=center,  # type: ignore[arg-type]
        matrix=matrix,
        scale=scale,
        blur=blur,
        median_blur=median,
        gray=gray,
        equalize=equalize,
        hsv_gains=hsv,  # type: ignore[arg-type]
        flip=flip,
        mixup_with=mixup_with,
        mixup_ratio=ratio,
    )


def _from_dict(values: dict) -> AugmentRecord:
    inner = values.get("mixup_with")
    return AugmentRecord(
        **{
            **values,
            "partners": tuple(values["partners"]),
            "center": tuple(values["center"]),
            "matrix": tuple(values["matrix"]),
            "hsv_gains": tuple(values["hsv_gains"]),
            "mixup_with": None if inner is None else _from_dict(inner),
        }
    )
