"""SAM ViT-B/L/H image encoders (``segment-anything``) as teachers: 256 x S/16 x S/16 embeddings.

The encoder is built for a configurable input size; 1024 px checkpoints are adapted by resampling
the absolute position embedding and the global-attention relative position tables.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.teachers.base import FrozenTeacher

SAM_PATCH = 16
SAM_OUT_CHANNELS = 256
# (embed_dim, depth, num_heads, global_attn_indexes), as in segment_anything/build_sam.py.
SAM_SPECS = {
    "sam_vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


class SamTeacher(FrozenTeacher):
    layer_names = ("image_embed",)

    def __init__(self, name: str, input_size: int):
        super().__init__()
        if input_size % SAM_PATCH:
            raise ValueError(f"teacher.input_size must be a multiple of {SAM_PATCH}, got {input_size}")
        embed_dim, depth, num_heads, global_attn = SAM_SPECS[name]
        self.name = name
        self.input_size = input_size
        # Here, not at import: segment_anything's package imports torchvision (2-3 s per process).
        from segment_anything.modeling import ImageEncoderViT

        self.encoder = ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=input_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=num_heads,
            patch_size=SAM_PATCH,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn,
            window_size=14,
            out_chans=SAM_OUT_CHANNELS,
        )
        self.feature_info = FeatureInfo([FeatureLevel(SAM_OUT_CHANNELS, SAM_PATCH, "encoder.neck")])

    def extract(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.encoder(images_BCHW),)

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads a full SAM checkpoint (``image_encoder.*`` keys) or a bare encoder state dict."""
        prefix = "image_encoder."
        if any(key.startswith(prefix) for key in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        own = self.encoder.state_dict()
        adapted = {}
        for key, value in state_dict.items():
            if key in own and value.shape != own[key].shape:
                value = _resample(key, value, own[key].shape)
            adapted[key] = value
        self.encoder.load_state_dict(adapted, strict=True)


def _resample(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if key == "pos_embed":  # (1, H, W, C)
        grid = F.interpolate(value.permute(0, 3, 1, 2), size=shape[1:3], mode="bicubic")
        return grid.permute(0, 2, 3, 1)
    if key.endswith(("rel_pos_h", "rel_pos_w")):  # (2 * size - 1, head_dim)
        table = F.interpolate(value.T.unsqueeze(0), size=shape[0], mode="linear")
        return table.squeeze(0).T
    raise ValueError(f"checkpoint tensor {key} has shape {tuple(value.shape)}, model has {tuple(shape)}")
