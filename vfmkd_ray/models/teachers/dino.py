"""DINOv2 ViT-S/B/L (patch 14) and DINOv3 ViT-S/B/L (patch 16) from timm as teachers: the final
patch tokens (after the last norm, prefix and register tokens dropped) as a ``C x S/p x S/p`` map,
layer ``patch_tokens``. Weights are timm's or the original releases' (facebookresearch/dinov2,
facebookresearch/dinov3), converted by timm's own checkpoint filters."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.teachers.base import FrozenTeacher


@dataclass(frozen=True)
class DinoSpec:
    timm_name: str
    patch: int
    family: str  # which timm module's checkpoint filter converts original weights


DINO_SPECS = {
    "dinov2_vits14": DinoSpec("vit_small_patch14_dinov2", 14, "vision_transformer"),
    "dinov2_vitb14": DinoSpec("vit_base_patch14_dinov2", 14, "vision_transformer"),
    "dinov2_vitl14": DinoSpec("vit_large_patch14_dinov2", 14, "vision_transformer"),
    # timm 1.0.31's DINOv3 ViTs: EVA blocks with RoPE and four register tokens.
    "dinov3_vits16": DinoSpec("vit_small_patch16_dinov3", 16, "eva"),
    "dinov3_vitb16": DinoSpec("vit_base_patch16_dinov3", 16, "eva"),
    "dinov3_vitl16": DinoSpec("vit_large_patch16_dinov3", 16, "eva"),
}


class DinoTeacher(FrozenTeacher):
    layer_names = ("patch_tokens",)

    def __init__(self, name: str, input_size: int):
        super().__init__()
        spec = DINO_SPECS[name]
        if input_size % spec.patch:
            raise ValueError(
                f"teacher.input_size must be a multiple of {spec.patch} for {name}, got {input_size}"
            )
        self.name, self.spec, self.input_size = name, spec, input_size
        import timm  # here, not at import: timm pulls in torchvision (2-3 s in every process)

        self.vit = timm.create_model(spec.timm_name, pretrained=False, img_size=input_size)
        self.feature_info = FeatureInfo([FeatureLevel(self.vit.embed_dim, spec.patch, "vit.norm")])

    def extract(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens_BNC = self.vit.forward_features(images_BCHW)[:, self.vit.num_prefix_tokens :]
        side = images_BCHW.shape[-1] // self.spec.patch
        return (tokens_BNC.transpose(1, 2).reshape(tokens_BNC.shape[0], -1, side, side),)

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads timm or original weights (DINOv2's position grid resampled to the input size;
        DINOv3's RoPE needs none)."""
        if self.spec.family == "eva":
            from timm.models.eva import checkpoint_filter_fn
        else:
            from timm.models.vision_transformer import checkpoint_filter_fn
        self.vit.load_state_dict(checkpoint_filter_fn(state_dict, self.vit), strict=True)
