"""Weights files as other products write them, for tests that seed or export students from them:
a plain timm state dict (``timm.create_model(name).state_dict()``, saved with torch or safetensors)
and an MMYOLO (MMEngine) checkpoint."""

from __future__ import annotations

import io
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

SIDE = 64  # input side of the output comparisons


def randomise_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics, so weights that load only the convolutions would show."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return model


def timm_state(name: str, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    """``timm.create_model(name, **kwargs).state_dict()`` of a seeded random model."""
    torch.manual_seed(seed)
    model = randomise_batchnorm(timm.create_model(name, pretrained=False, **kwargs))
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def save_state(state: dict, path: Path) -> str:
    """``.safetensors`` through safetensors, anything else through ``torch.save``."""
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path.write_bytes(buffer.getvalue())
    return str(path)


def timm_features(name: str, weights: str) -> torch.nn.Module:
    """timm's own ``features_only`` model loaded from ``weights`` by timm's pretrained loader: the
    reference the student must equal."""
    return timm.create_model(
        name, pretrained=True, features_only=True, pretrained_cfg_overlay={"file": weights}
    ).eval()


def mmyolo_checkpoint(backbone: dict[str, torch.Tensor]) -> dict:
    """What MMYOLO saves for a YOLOv8 detector: backbone, neck and head under ``state_dict``."""
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state["neck.reduce_layers.2.conv.weight"] = torch.zeros(8, 8, 1, 1)
    state["bbox_head.head_module.cls_preds.0.2.weight"] = torch.zeros(80, 8, 1, 1)
    state["bbox_head.head_module.cls_preds.0.2.bias"] = torch.zeros(80)
    meta = {"dataset_meta": {"classes": ("person", "car")}, "epoch": 500, "mmengine_version": "0.10.4"}
    return {"meta": meta, "state_dict": state}


def outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    torch.manual_seed(1)
    images = torch.randn(1, 3, SIDE, SIDE)
    with torch.no_grad():
        return list(model.eval()(images))
