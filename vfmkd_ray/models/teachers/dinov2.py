"""DINOv2 ViT-S/B/L (timm) as teachers: the final patch tokens as a C x S/14 x S/14 map."""

from __future__ import annotations

import torch

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.teachers.base import FrozenTeacher

DINOV2_PATCH = 14
DINOV2_TIMM_NAMES = {
    "dinov2_vits14": "vit_small_patch14_dinov2",
    "dinov2_vitb14": "vit_base_patch14_dinov2",
    "dinov2_vitl14": "vit_large_patch14_dinov2",
}


class Dinov2Teacher(FrozenTeacher):
    layer_names = ("patch_tokens",)

    def __init__(self, name: str, input_size: int):
        super().__init__()
        if input_size % DINOV2_PATCH:
            raise ValueError(
                f"teacher.input_size must be a multiple of {DINOV2_PATCH} for {name}, got {input_size}"
            )
        self.name = name
        self.input_size = input_size
        import timm  # here, not at import: timm pulls in torchvision (2-3 s in every process)

        self.vit = timm.create_model(DINOV2_TIMM_NAMES[name], pretrained=False, img_size=input_size)
        self.feature_info = FeatureInfo([FeatureLevel(self.vit.embed_dim, DINOV2_PATCH, "vit.norm")])

    def extract(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens_BNC = self.vit.forward_features(images_BCHW)[:, self.vit.num_prefix_tokens :]
        side = images_BCHW.shape[-1] // DINOV2_PATCH
        return (tokens_BNC.transpose(1, 2).reshape(tokens_BNC.shape[0], -1, side, side),)

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads timm or original (facebookresearch/dinov2) weights, resampling the position grid."""
        from timm.models.vision_transformer import checkpoint_filter_fn

        self.vit.load_state_dict(checkpoint_filter_fn(state_dict, self.vit), strict=True)
