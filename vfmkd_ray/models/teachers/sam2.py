"""SAM 2 Hiera-T/S/B+/L image encoders (the ``sam2`` package) as teachers.

The encoder is SAM 2's Hiera trunk plus its FPN neck with the lowest-resolution level dropped
(``scalp=1``, as in every SAM 2 config), so it returns three 256-channel maps at strides 4, 8 and 16.
Only the image encoder is built: the memory and mask-decoder parts of SAM 2 play no role in feature
distillation. Any input size that is a multiple of 32 works; the position embeddings are
interpolated by Hiera itself.
"""

from __future__ import annotations

from typing import Any

import torch

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.teachers.base import FrozenTeacher

SAM2_FPN_CHANNELS = 256
SAM2_STRIDES = (4, 8, 16)
# A Hiera window of 8 tokens at stride 4 must tile the grid.
SAM2_SIZE_MULTIPLE = 32
# Trunk arguments of sam2/configs/sam2/sam2_hiera_{t,s,b+,l}.yaml (Hiera defaults elsewhere).
SAM2_TRUNKS: dict[str, dict[str, Any]] = {
    "sam2_hiera_t": {
        "embed_dim": 96,
        "num_heads": 1,
        "stages": (1, 2, 7, 2),
        "global_att_blocks": (5, 7, 9),
        "window_pos_embed_bkg_spatial_size": (7, 7),
    },
    "sam2_hiera_s": {
        "embed_dim": 96,
        "num_heads": 1,
        "stages": (1, 2, 11, 2),
        "global_att_blocks": (7, 10, 13),
        "window_pos_embed_bkg_spatial_size": (7, 7),
    },
    "sam2_hiera_b+": {"embed_dim": 112, "num_heads": 2},
    "sam2_hiera_l": {
        "embed_dim": 144,
        "num_heads": 2,
        "stages": (2, 6, 36, 4),
        "global_att_blocks": (23, 33, 43),
        "window_pos_embed_bkg_spatial_size": (7, 7),
        "window_spec": (8, 4, 16, 8),
    },
}


class Sam2Teacher(FrozenTeacher):
    layer_names = ("fpn_s4", "fpn_s8", "fpn_s16")

    def __init__(self, name: str, input_size: int):
        super().__init__()
        if input_size % SAM2_SIZE_MULTIPLE:
            raise ValueError(
                f"teacher.input_size must be a multiple of {SAM2_SIZE_MULTIPLE} for {name}, got {input_size}"
            )
        # Imported here: sam2 starts Hydra on import, which only teachers of this family need.
        from sam2.modeling.backbones.hieradet import Hiera
        from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
        from sam2.modeling.position_encoding import PositionEmbeddingSine

        trunk_args = SAM2_TRUNKS[name]
        embed_dim = trunk_args["embed_dim"]
        neck = FpnNeck(
            position_encoding=PositionEmbeddingSine(
                num_pos_feats=SAM2_FPN_CHANNELS, normalize=True, scale=None, temperature=10000
            ),
            d_model=SAM2_FPN_CHANNELS,
            backbone_channel_list=[embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim],
            fpn_top_down_levels=[2, 3],
            fpn_interp_model="nearest",
        )
        self.name = name
        self.input_size = input_size
        # Hiera's constructor calls .item(), which the meta device (``describe_teacher``) cannot do:
        # there the teacher is described by its feature levels alone.
        on_meta = torch.empty(0).device.type == "meta"
        self.encoder = None if on_meta else ImageEncoder(trunk=Hiera(**trunk_args), neck=neck, scalp=1)
        self.feature_info = FeatureInfo(
            [FeatureLevel(SAM2_FPN_CHANNELS, stride, "encoder.neck") for stride in SAM2_STRIDES]
        )

    def extract(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder(images_BCHW)["backbone_fpn"])

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads an official SAM 2 checkpoint (``{"model": {"image_encoder.*": ...}}``), a full SAM 2
        state dict, or a bare image-encoder state dict; the rest of SAM 2 is ignored."""
        if isinstance(state_dict.get("model"), dict):
            state_dict = state_dict["model"]
        prefix = "image_encoder."
        if any(key.startswith(prefix) for key in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        self.encoder.load_state_dict(state_dict, strict=True)
