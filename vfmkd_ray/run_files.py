"""Every file a run writes and reads, in one place: the resolved config, the metrics log, the
training state inside Ray's checkpoints, the best backbone and the best whole model, evaluation
results and pictures. Export, eval and teachers that are runs read runs only through this module;
it holds no model code (``models.from_run`` rebuilds models from these files).

Layout of ``<train.storage_path>/<name>/`` (a local path or an ``s3://`` URI):

| file                         | holds                                                           |
|------------------------------|-----------------------------------------------------------------|
| ``resolved_config.yaml``     | the validated config, secrets masked; a relaunch must match it  |
| ``lease/NNNNNN.json``        | the driver that holds the run (``run_lease``)                   |
| ``metrics.jsonl``, ``.csv``  | one record per epoch                                            |
| ``curves.png``               | those records drawn, refreshed after every epoch                |
| ``tracking.json``            | the experiment tracker's run id, so a relaunch continues it     |
| ``tensorboard/``             | TensorBoard event files (``tracking.backend: tensorboard``)     |
| ``checkpoint_*/training_state.pt`` | the stateful parts (``training.checkpointing``)         |
| ``checkpoint_manager_snapshot.json`` | Ray's list of the registered checkpoints (read only)   |
| ``best_backbone.safetensors``, ``.pth`` | the best validation epoch's backbone (``{"backbone": ...}``) |
| ``best_model.pth``           | ``{"model": state_dict, "config": resolved config}`` of that epoch |
| ``eval.json``                | what ``vfmkd eval`` measured                                    |
| ``transfer_cell.json``      | a ``vfmkd transfer`` cell's outcome: metrics or error, config fingerprint |
| ``pictures/epoch_NNN_*.png`` | per-epoch pictures of heads that draw (YOLC's crops)            |
| ``bad_samples.jsonl``        | the samples skipped under a skip policy; degenerate boxes dropped |

Files load with ``weights_only=True``; anything else is refused with an error naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vfmkd_ray import storage
from vfmkd_ray.config_yaml import YamlError, check_size, load_yaml_bytes

# Defined beside the record format (which the torch-free decode tasks import); named here too.
from vfmkd_ray.data.bad_samples import BAD_SAMPLES_DIR, BAD_SAMPLES_JSONL  # noqa: F401

if TYPE_CHECKING:
    from vfmkd_ray.config import ExperimentConfig
    from vfmkd_ray.models.multitask import MultiTaskModel

RESOLVED_CONFIG = "resolved_config.yaml"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
STATE_FILE = "training_state.pt"
BEST_BACKBONE_SAFETENSORS = "best_backbone.safetensors"
BEST_BACKBONE_PTH = "best_backbone.pth"
BEST_MODEL = "best_model.pth"
EVAL_FILE = "eval.json"
TRANSFER_CELL = "transfer_cell.json"  # a transfer cell's outcome, in the cell's run directory
RAY_CHECKPOINT_GLOB = "checkpoint_*"  # Ray Train's checkpoint directories
RAY_CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"  # which of them Ray registered
PICTURES_DIR = "pictures"
BACKBONE_PREFIX = "backbone."  # the backbone inside the model's state dict
OLD_STUDENT_PREFIX = "student."  # the backbone inside the Distiller of checkpoints before heads existed


class RunFileError(ValueError):
    """A file that is not what a run writes; the message names the file and the reason."""


def run_dir_of(cfg: ExperimentConfig) -> str:
    return storage.join(storage.absolute(cfg.train.storage_path), cfg.name)


def path(run_dir: str, name: str) -> str:
    return storage.join(run_dir, name)


# --- resolved config -----------------------------------------------------------------------------


def find_run_config(uri: str) -> dict:
    """The raw resolved config of the run that wrote ``uri``: beside it or one or two directories up
    (a checkpoint directory sits inside its run directory)."""
    parent = uri.rstrip("/").rsplit("/", 1)[0]
    for directory in (uri.rstrip("/"), parent, parent.rsplit("/", 1)[0]):
        candidate = storage.join(directory, RESOLVED_CONFIG)
        if storage.exists(candidate):
            return read_config_file(candidate)
    raise RunFileError(f"no {RESOLVED_CONFIG} next to {uri}")


def read_config_file(uri: str) -> dict:
    """A config file a run wrote, read bounded: a run directory may be anyone's (a shared bucket)."""
    try:
        check_size(storage.size(uri), uri)
        raw = load_yaml_bytes(storage.read_bytes(uri), uri) or {}
    except YamlError as err:
        raise RunFileError(str(err)) from None
    if not isinstance(raw, dict):
        raise RunFileError(f"{uri} does not hold a config mapping")
    return raw


# --- metrics log ---------------------------------------------------------------------------------


def write_metrics_log(run_dir: str, history: list[dict[str, float]]) -> None:
    """Rewrites the whole per-epoch log (JSON lines and CSV) from ``history``."""
    lines = "".join(json.dumps(record) + "\n" for record in history)
    storage.write_text_atomic(path(run_dir, METRICS_JSONL), lines)
    columns = sorted({key for record in history for key in record}, key=lambda k: (k != "epoch", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    storage.write_text_atomic(path(run_dir, METRICS_CSV), buffer.getvalue())


def read_metrics_log(run_dir: str) -> list[dict[str, float]]:
    uri = path(run_dir, METRICS_JSONL)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def read_metrics_table(run_dir: str) -> list[dict[str, float]]:
    """``metrics.csv`` as records of numbers (a metric an epoch lacks is left out of its record)."""
    uri = path(run_dir, METRICS_CSV)
    if not storage.exists(uri):
        raise RunFileError(f"no {METRICS_CSV} in {run_dir}: not a run directory, or no epoch finished yet")
    try:
        rows = list(csv.DictReader(io.StringIO(storage.read_text(uri))))
        return [{key: float(value) for key, value in row.items() if value not in ("", None)} for row in rows]
    except (ValueError, csv.Error) as err:
        raise RunFileError(f"{uri} is not a metrics table this product writes: {err}") from None


def write_curves(run_dir: str, png: bytes) -> str:
    uri = path(run_dir, CURVES_PNG)
    storage.write_bytes_atomic(uri, png)
    return uri


def write_tracking_record(directory: str, record: dict) -> None:
    storage.write_text_atomic(path(directory, TRACKING_FILE), json.dumps(record, indent=2))


def read_tracking_record(directory: str) -> dict | None:
    """The tracker run a run (or tune) directory belongs to; None when there is none (or it is
    unreadable: a new tracker run starts)."""
    return _read_record(path(directory, TRACKING_FILE))


def _read_record(uri: str) -> dict | None:
    """A JSON object file this module wrote; None when absent or unreadable."""
    if not storage.exists(uri):
        return None
    try:
        record = json.loads(storage.read_text(uri))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


# --- best backbone and best model ----------------------------------------------------------------


def has_checkpoints(run_dir: str) -> bool:
    """Whether the run has trained far enough to leave a checkpoint (a relaunch resumes from it)."""
    return any(storage.is_dir(uri) for uri in storage.list_files(run_dir, RAY_CHECKPOINT_GLOB))


def remove_unregistered_checkpoints(run_dir: str) -> list[str]:
    """Deletes checkpoint directories Ray never registered: written by a report whose worker died
    before Ray recorded it, they would stay beyond ``num_checkpoints_to_keep`` forever. Returns
    their URIs. Without a snapshot Ray can read (none yet, another Ray version's, Train V1's
    layout) nothing is deleted."""
    directories = [uri for uri in storage.list_files(run_dir, RAY_CHECKPOINT_GLOB) if storage.is_dir(uri)]
    snapshot_uri = path(run_dir, RAY_CHECKPOINT_SNAPSHOT)
    if not directories or not storage.exists(snapshot_uri):
        return []
    try:
        snapshot = json.loads(storage.read_text(snapshot_uri))
    except ValueError:
        return []
    # Every name the snapshot mentions (registered, latest, pending, validated) is kept.
    registered = set(_checkpoint_names(snapshot))
    if not registered:
        return []
    orphans = [uri for uri in directories if uri.rstrip("/").rsplit("/", 1)[-1] not in registered]
    for uri in orphans:
        storage.remove_tree(uri)
    return orphans


def _checkpoint_names(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        if node.startswith(RAY_CHECKPOINT_GLOB.rstrip("*")):
            yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _checkpoint_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _checkpoint_names(value)


def write_best(run_dir: str, model: MultiTaskModel, config: dict) -> dict[str, str]:
    """The best epoch's backbone (safetensors and ``{"backbone": ...}`` .pth) and whole model with
    its resolved ``config`` (plain JSON values); returns the URIs by file name."""
    backbone = model.backbone_state()
    whole = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    files = {
        BEST_BACKBONE_SAFETENSORS: save_safetensors(backbone),
        BEST_BACKBONE_PTH: _torch_bytes({"backbone": backbone}),
        BEST_MODEL: _torch_bytes({"model": whole, "config": config}),
    }
    for name, data in files.items():
        storage.write_bytes_atomic(path(run_dir, name), data)
    return {name: path(run_dir, name) for name in files}


def read_model_file(uri: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The whole model's state dict and the run config of ``best_model.pth``, a training checkpoint
    (directory or ``training_state.pt``; its config is the run's ``resolved_config.yaml``)."""
    if storage.is_dir(uri):
        uri = storage.join(uri, STATE_FILE)
    payload = _load(uri)
    if isinstance(payload.get("model"), dict) and isinstance(payload.get("config"), dict):
        return payload["model"], payload["config"]
    if isinstance(payload.get("model"), dict) and "counters" in payload:
        return payload["model"], find_run_config(uri)
    raise RunFileError(
        f"{uri} is neither a best_model.pth nor a training checkpoint (found {list(payload)[:8]})"
    )


def read_backbone_state(uri: str) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone state dict in any file a run writes, or a bare state dict, and what kind it was;
    an MMEngine checkpoint (MMYOLO's, MMDetection's) comes back whole.

    A directory is a Ray Train checkpoint (its ``training_state.pt`` is read).
    """
    if storage.is_dir(uri):
        uri = storage.join(uri, STATE_FILE)
    if uri.endswith(".safetensors"):
        try:
            return load_safetensors(_read(uri)), "safetensors state dict"
        except RunFileError:
            raise
        except Exception as err:
            raise RunFileError(f"{uri} is not a readable safetensors file: {err}") from None
    payload = _load(uri)
    for key, prefix, kind in (
        ("model", BACKBONE_PREFIX, "best_model.pth" if "config" in payload else "training checkpoint"),
        ("distiller", OLD_STUDENT_PREFIX, "training checkpoint (before heads)"),
    ):
        if isinstance(payload.get(key), dict):
            return _strip(payload[key], prefix), kind
    if isinstance(payload.get("backbone"), dict):
        return payload["backbone"], '{"backbone": state_dict} file'
    if isinstance(payload.get("state_dict"), dict):  # whole: students.weight_layouts reads its keys
        return payload, "MMEngine checkpoint"
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload, "state dict"
    raise RunFileError(
        f"{uri} holds neither a run's checkpoint, best model, {{'backbone': state_dict}} file nor a state "
        f"dict (found {list(payload)[:8]})"
    )


# --- evaluation and pictures ---------------------------------------------------------------------


def write_eval(run_dir: str, result: dict) -> str:
    """``eval.json``; a metric that does not apply (NaN: no small objects, say) is written as null."""
    uri = path(run_dir, EVAL_FILE)
    storage.write_text_atomic(uri, json.dumps(_nan_to_none(result), indent=2))
    return uri


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_transfer_cell(run_dir: str, outcome: dict) -> None:
    storage.write_text_atomic(path(run_dir, TRANSFER_CELL), json.dumps(_nan_to_none(outcome), indent=2))


def read_transfer_cell(run_dir: str) -> dict | None:
    """The outcome a transfer cell recorded, or None when it has not run (or its file is unreadable:
    the cell runs again)."""
    return _read_record(path(run_dir, TRANSFER_CELL))


def write_picture(run_dir: str, epoch: int, head: str, name: str, png: bytes) -> str:
    uri = storage.join(run_dir, PICTURES_DIR, f"epoch_{epoch:03d}_{head}_{name}")
    storage.write_bytes_atomic(uri, png)
    return uri


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _torch_bytes(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _read(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError:
        raise RunFileError(f"not found: {uri}") from None


def _load(uri: str) -> dict:
    try:
        payload = torch.load(io.BytesIO(_read(uri)), map_location="cpu", weights_only=True)
    except RunFileError:
        raise
    except Exception as err:
        raise RunFileError(f"{uri} is not a loadable checkpoint (truncated or not PyTorch?): {err}") from None
    if not isinstance(payload, dict):
        raise RunFileError(f"{uri} holds a {type(payload).__name__}, not a dict")
    return payload
