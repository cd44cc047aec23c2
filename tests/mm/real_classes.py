"""The real OpenMMLab classes, built the way a user's config builds them: from the snippet that
``vfmkd export`` writes (``mmengine.Config.fromfile``, so ``_base_ = 'mmyolo::...'`` resolves to the
config shipped in the mmyolo package), then loaded with ``strict=True``."""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.openmmlab import mm_registry


def config_of(snippet: str):
    mm_registry("the mm tests")
    from mmengine.config import Config

    return Config.fromfile(snippet)


def build_backbone(backbone_cfg) -> nn.Module:
    """A backbone dict of a snippet: ``_delete_`` is a merge directive, not an argument."""
    spec = {k: v for k, v in backbone_cfg.to_dict().items() if k != "_delete_"}
    if "." not in spec["type"]:  # an MMYOLO config's own types are in mmyolo's scope
        spec["type"] = f"mmyolo.{spec['type']}"
    return mm_registry("the mm tests").build(spec)


def build_detector(model_cfg) -> nn.Module:
    mm_registry("the mm tests")
    from mmyolo.registry import MODELS

    return MODELS.build(model_cfg)


def strict_load(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> tuple[list, list]:
    """``load_state_dict(strict=True)`` of the keys under ``prefix``; (missing, unexpected), both
    empty or it raises."""
    keys = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    result = module.load_state_dict(keys, strict=True)
    return list(result.missing_keys), list(result.unexpected_keys)


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every tensor a checkpoint holds (weights, BatchNorm statistics) drawn at random, so outputs
    tell any unloaded one; non-persistent buffers (constants such as the DFL projection) stay."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():  # shares storage with the module
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(0.5 + noise if name.endswith("running_var") else (noise - 0.5) * 0.2)
    return module
