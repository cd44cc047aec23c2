"""Run-level files written beside Ray's checkpoints: metrics log and the best backbone.

Only rank 0 writes them. Paths are URIs, so the run directory can live on object storage.
"""

from __future__ import annotations

import csv
import io
import json

import torch
from safetensors.torch import save as save_safetensors

from vfmkd_ray import storage

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
BEST_BACKBONE_SAFETENSORS = "best_backbone.safetensors"
BEST_BACKBONE_PTH = "best_backbone.pth"
RESOLVED_CONFIG = "resolved_config.yaml"


def write_metrics_log(run_dir: str, history: list[dict[str, float]]) -> None:
    """Rewrites the whole per-epoch log (JSON lines and CSV) from ``history``."""
    lines = "".join(json.dumps(record) + "\n" for record in history)
    storage.write_text_atomic(storage.join(run_dir, METRICS_JSONL), lines)
    columns = sorted({key for record in history for key in record}, key=lambda k: (k != "epoch", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    storage.write_text_atomic(storage.join(run_dir, METRICS_CSV), buffer.getvalue())


def read_metrics_log(run_dir: str) -> list[dict[str, float]]:
    uri = storage.join(run_dir, METRICS_JSONL)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def write_backbone(run_dir: str, backbone_state: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Saves the backbone as safetensors and as a ``{"backbone": state_dict}`` .pth file."""
    state = {key: value.detach().cpu().contiguous() for key, value in backbone_state.items()}
    safetensors_uri = storage.join(run_dir, BEST_BACKBONE_SAFETENSORS)
    pth_uri = storage.join(run_dir, BEST_BACKBONE_PTH)
    storage.write_bytes_atomic(safetensors_uri, save_safetensors(state))
    buffer = io.BytesIO()
    torch.save({"backbone": state}, buffer)
    storage.write_bytes_atomic(pth_uri, buffer.getvalue())
    return safetensors_uri, pth_uri
