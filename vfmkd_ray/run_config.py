"""A run's recorded config and what a relaunch may change: ``resolved_config.yaml`` is written by the
first launch, and every later launch of the same run must match it, or is refused naming the keys
(resume means the same run; a new name means a new run). Only how long and on what the run trains
may change (``RESUMABLE_CHANGES``), and the record follows.

The recorded config is read bounded (``run_files.read_config_file``) and brought to today's schema
before the comparison, so a field added since, with its default, is no change.
"""

from __future__ import annotations

from typing import Any

import yaml

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, dump_config, validate_config
from vfmkd_ray.config_yaml import echo
from vfmkd_ray.run_files import RESOLVED_CONFIG, RunFileError, path, read_config_file

# What a relaunch may change and still resume the run: how long it trains and on what resources
# and memory layout, nothing about what it trains (the model, data, teachers, terms, heads,
# optimiser). A checkpoint restores into either layout (train.channels_last).
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.num_workers",
    "train.cpus_per_worker",
    "train.use_gpu",
    "train.max_failures",
    "train.prefetch_batches",
    "train.channels_last",
)
MAX_NAMED_KEYS = 5
_UNSET = "(unset)"


def claim_resolved_config(run_dir: str, cfg: ExperimentConfig, begun: bool) -> list[str]:
    """Writes ``cfg`` as the run's resolved config, or checks it against the one recorded. Returns
    the ``RESUMABLE_CHANGES`` this launch makes, one ``key: before -> now`` line each.

    Args:
        begun: whether the run has progress to resume (a checkpoint, a trial). A launch that stopped
            before any (a check that failed) binds nothing: its config is replaced.

    Raises:
        RunFileError: naming the keys whose values differ from the run's recorded config.
    """
    uri = path(run_dir, RESOLVED_CONFIG)
    text = dump_config(cfg)
    if not begun or not storage.exists(uri):
        storage.write_text_atomic(uri, text)
        return []
    before, now = _flat(_today(read_config_file(uri))), _flat(_today(yaml.safe_load(text)))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k, _UNSET) != now.get(k, _UNSET))
    lines = [f"{key}: {_shown(before.get(key, _UNSET))} -> {_shown(now.get(key, _UNSET))}" for key in changed]
    refused = [line for key, line in zip(changed, lines, strict=True) if key not in RESUMABLE_CHANGES]
    if refused:
        more = f" and {len(refused) - MAX_NAMED_KEYS} more" if len(refused) > MAX_NAMED_KEYS else ""
        raise RunFileError(
            f"run {run_dir} was launched with another config ({'; '.join(refused[:MAX_NAMED_KEYS])}{more}): "
            "resume it with the same config, or give this one a new name (name=...)"
        )
    if changed:
        storage.write_text_atomic(uri, text)
    return lines


def _today(raw: dict[str, Any]) -> dict[str, Any]:
    """A config as today's schema writes it: a field added since the run began gets its default, and
    secrets (masked in every written config) read as unset on both sides; as given when today's
    schema refuses it (every key that differs is then named)."""
    try:
        return yaml.safe_load(dump_config(validate_config(raw)))
    except ConfigError:
        return raw


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A config mapping as dotted key -> value (lists are values)."""
    if not isinstance(node, dict) or (prefix and not node):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _shown(value: Any) -> str:
    return value if value is _UNSET else echo(value)
