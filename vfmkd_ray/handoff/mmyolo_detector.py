"""``vfmkd export --format mmyolo --whole-detector``: a run's YOLOv8 detector (backbone +
``yolov8_pafpn`` neck + ``yolov8`` head) as MMYOLO's ``YOLODetector`` loads it.

Keys: ``backbone.*`` and ``neck.*`` as they are, ``heads.<name>.head_module.*`` ->
``bbox_head.head_module.*`` (MMYOLO's ``YOLOv8Head`` holds its ``YOLOv8HeadModule`` there; the
losses, prior generator and data preprocessor have no persistent state). The file is checked against
the model the run's config describes (key by key, shape by shape) and read back tensor by tensor
before anything is written; the config snippet beside it names the packaged MMYOLO config of the same size.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vfmkd_ray import run_files, storage
from vfmkd_ray.data.images import IMAGENET_MEAN, IMAGENET_STD
from vfmkd_ray.handoff.load_report import LoadReport, match_state, shapes_of
from vfmkd_ray.handoff.source import ExportError
from vfmkd_ray.heads.yolov8.head import YOLOv8Head
from vfmkd_ray.models import from_run
from vfmkd_ray.models.build import build_model

HEAD_MODULE = "head_module."
MMYOLO_HEAD = "bbox_head.head_module."


@dataclass(frozen=True)
class DetectorExport:
    head: str
    files: list[str]
    report: LoadReport


def mmyolo_state(model_state: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    """The YOLODetector state dict of one yolov8 head of a model's state dict."""
    prefix = f"heads.{head}.{HEAD_MODULE}"
    state = {}
    for key, value in model_state.items():
        if key.startswith(("backbone.", "neck.")):
            state[key] = value
        elif key.startswith(prefix):
            state[MMYOLO_HEAD + key[len(prefix) :]] = value
    return state


def export_whole_detector(checkpoint: str, out: str, head: str | None = None) -> DetectorExport:
    try:
        parts, cfg = from_run.load_model(checkpoint)
    except run_files.RunFileError as err:
        raise ExportError(str(err)) from None
    yolov8 = [name for name, h in parts.heads.items() if isinstance(h, YOLOv8Head)]
    name = head or (yolov8[0] if len(yolov8) == 1 else None)
    if name not in yolov8:
        raise ExportError(
            f"{checkpoint}: --whole-detector exports a yolov8 head; the run's yolov8 heads are {yolov8} "
            "(name one with --head)"
            if yolov8
            else f"{checkpoint} has no yolov8 head to export"
        )
    if cfg.student.name != "yolov8_cspdarknet":
        raise ExportError(
            f"MMYOLO's YOLODetector here is YOLOv8CSPDarknet + YOLOv8PAFPN + YOLOv8Head; the run's student "
            f"is {cfg.student.name}: export its backbone instead (--format mmyolo without --whole-detector)"
        )
    model_state = {k: v.detach().cpu().contiguous() for k, v in parts.model.state_dict().items()}
    state = mmyolo_state(model_state, name)
    # What the run's config describes, built afresh on the meta device: the file must fit it.
    with torch.device("meta"):
        described = build_model(cfg, load_weights=False).model.state_dict()
    expected = shapes_of(mmyolo_state(described, name))
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, out.rstrip("/").rsplit("/", 1)[-1])
        buffer = io.BytesIO()
        meta = {
            "vfmkd_student": f"yolov8_cspdarknet-{cfg.student.size}",
            "exported_for": "mmyolo YOLODetector",
        }
        torch.save({"state_dict": state, "meta": meta}, buffer)
        local.write_bytes(buffer.getvalue())
        loaded = torch.load(local, map_location="cpu", weights_only=True)["state_dict"]
        report = match_state(f"MMYOLO YOLODetector yolov8-{cfg.student.size}", expected, loaded)
        differing = [k for k, v in state.items() if not torch.equal(loaded[k], v)]
        if not report.ok or report.unexpected or differing:
            raise ExportError(f"the detector export failed its check, nothing written:\n{report.describe()}")
        snippet_uri = _snippet_uri(out)
        storage.write_bytes_atomic(storage.absolute(out), local.read_bytes())
        snippet = mmyolo_detector_snippet(
            cfg.student.size, parts.heads[name].cfg.num_classes, storage.absolute(out)
        )
        storage.write_text_atomic(snippet_uri, snippet)
    return DetectorExport(name, [storage.absolute(out), snippet_uri], report)


def _snippet_uri(out: str) -> str:
    stem = out.rsplit(".", 1)[0] if out.rsplit("/", 1)[-1].count(".") else out
    return storage.absolute(f"{stem}.mmyolo.py")


def mmyolo_detector_snippet(size: str, num_classes: int, checkpoint: str) -> str:
    mean = [round(255 * m, 3) for m in IMAGENET_MEAN]
    std = [round(255 * s, 3) for s in IMAGENET_STD]
    return f"""# MMYOLO config for the whole YOLOv8-{size} detector exported to {checkpoint}.
# The backbone, neck and head load with strict=True into YOLODetector built from this config.
_base_ = 'mmyolo::yolov8/yolov8_{size}_syncbn_fast_8xb16-500e_coco.py'
num_classes = {num_classes}
load_from = '{checkpoint}'
model = dict(
    # vfmkd trains on RGB images normalised with the ImageNet statistics (letterboxed at the
    # top-left with zero padding; MMYOLO pads centrally with 114): keep the same normalisation.
    data_preprocessor=dict(mean={mean}, std={std}, bgr_to_rgb=True),
    bbox_head=dict(head_module=dict(num_classes=num_classes)),
    train_cfg=dict(assigner=dict(num_classes=num_classes)))
"""
