"""Image decoding and the one preprocessing shared by teachers and students.

Images are resized so the longest side equals the input size and padded bottom/right to a square
(SAM's convention); the unpadded height and width travel with the image so losses can mask the pad.
Pixels stay uint8 until they reach the model, which keeps Ray object-store traffic 4x smaller.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadImageError(ValueError):
    """An image that cannot be read or decoded; the message names its URI."""


def decode_image(data: bytes, uri: str) -> np.ndarray:
    """RGB uint8 HWC array from encoded bytes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BadImageError(f"cannot decode image {uri}: {err}") from None


def augment(image_HWC: np.ndarray, aug_seed: int, policy: str) -> np.ndarray:
    """The seeded augmentation that the teacher saw, replayed identically for the student."""
    if policy == "none":
        return image_HWC
    if policy == "hflip":
        return image_HWC[:, ::-1] if np.random.default_rng(aug_seed).random() < 0.5 else image_HWC
    raise ValueError(f"unknown augmentation policy {policy!r}; valid: none, hflip")


def letterbox(image_HWC: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize the longest side to ``size``, pad bottom/right with zeros.

    Returns:
        The ``3 x size x size`` uint8 canvas and the (height, width) of the unpadded content.
    """
    height, width = image_HWC.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = np.asarray(Image.fromarray(image_HWC).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.zeros((3, size, size), dtype=np.uint8)
    canvas[:, :new_h, :new_w] = resized.transpose(2, 0, 1)
    return canvas, (new_h, new_w)


def normalize(images_BCHW: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 ImageNet-normalised input (SAM and DINOv2 share these statistics)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images_BCHW.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images_BCHW.device).view(1, 3, 1, 1)
    return (images_BCHW.float() / 255.0 - mean) / std


def valid_mask(valid_hw_B2: torch.Tensor, image_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """B x 1 x gh x gw mask, 1 where a grid cell's centre lies inside the unpadded image."""
    gh, gw = grid
    ys = (torch.arange(gh, device=valid_hw_B2.device) + 0.5) * (image_size / gh)
    xs = (torch.arange(gw, device=valid_hw_B2.device) + 0.5) * (image_size / gw)
    inside_y = ys.view(1, gh, 1) < valid_hw_B2[:, 0].view(-1, 1, 1)
    inside_x = xs.view(1, 1, gw) < valid_hw_B2[:, 1].view(-1, 1, 1)
    return (inside_y & inside_x).unsqueeze(1).float()


def sobel_edges(images_BCHW: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W edge strength in [0, 1] of the grey image (per-image max normalised)."""
    grey = images_BCHW.float().mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
    return magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
