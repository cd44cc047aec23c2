"""Key names of a timm ``features_only`` student in the layout of the full timm model.

``features_only`` wrappers rename modules: ``FeatureListNet`` flattens ``stages.0`` to
``stages_0``, ``FeatureGetterNet`` nests the model under ``model.``. A file timm loads with
``pretrained_cfg_overlay=dict(file=...)`` must use the full model's names, and a plain timm
state dict uses them too: ``vfmkd export --format timm`` maps one way, ``weight_layouts`` the other.
"""

from __future__ import annotations

import timm
import torch


def features_to_model_keys(model_name: str, feature_keys: list[str]) -> dict[str, str]:
    """``features_only`` key -> the same tensor's key in ``timm.create_model(model_name)``."""
    with torch.device("meta"):
        names = set(timm.create_model(model_name, pretrained=False).state_dict())
    mapping = {}
    for key in feature_keys:
        mapping[key] = _model_key(key, names)
        if mapping[key] not in names:
            raise ValueError(f"cannot place {key} of the {model_name} feature extractor in the full model")
    return mapping


def _model_key(key: str, names: set[str]) -> str:
    if key in names:
        return key
    if key.startswith("model.") and key[len("model.") :] in names:
        return key[len("model.") :]
    first, _, rest = key.partition(".")
    head, _, index = first.rpartition("_")
    return f"{head}.{index}.{rest}" if head and index.isdigit() else key
