"""The torch side of images: normalisation for the models, the pad mask and edge maps for losses.

Apart from ``data.images`` (decode, augment, letterbox: NumPy and PIL) so the data path's decode
tasks, which start in fresh Ray worker processes, do not import torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.data.images import IMAGENET_MEAN, IMAGENET_STD


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
