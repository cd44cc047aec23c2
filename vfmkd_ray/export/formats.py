"""The export formats: how each writes a student's backbone, checks a file in its target's key
layout, and reads it back into the student (for round trips).

| format       | file                                                | target layout checked        |
|--------------|-----------------------------------------------------|------------------------------|
| rtdetrv2     | ``{"model": {"backbone.<key>": tensor}}`` + YAML    | RT-DETRv2 ``HGNetv2`` L/X/H  |
| mmdet/mmyolo | ``{"state_dict": {"backbone.<key>": ...}, "meta"}`` | YOLOv8CSPDarknet / TIMMBackbone |
| safetensors  | the plain backbone state dict                       | the student                  |
| timm         | the full timm model's key names (safetensors)       | timm's own pretrained loader |
| onnx         | see ``onnx_format``                                 |                              |
"""

from __future__ import annotations

import io
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

from vfmkd_ray.export.load_report import CheckReport, LoadReport, match_state, shapes_of
from vfmkd_ray.export.rtdetr_hgnetv2 import TIMM_TO_RTDETR_VARIANT, layout, timm_to_rtdetr
from vfmkd_ray.export.snippets import Freeze, mm_python, rtdetrv2_yaml
from vfmkd_ray.export.source import ExportError, describe_student
from vfmkd_ray.models.students import StudentBackbone, StudentConfig, build_student
from vfmkd_ray.models.students.timm_keys import features_to_model_keys
from vfmkd_ray.models.students.timm_student import TIMM_BODY
from vfmkd_ray.models.students.weight_layouts import MMENGINE_BACKBONE, MMPRETRAIN_TIMM
from vfmkd_ray.registry import Registry

Tensors = dict[str, torch.Tensor]


class ExportFormat:
    """Base class; ``write`` returns the files it wrote (the checkpoint first), its snippet naming
    the checkpoint ``shown_path`` and freezing the backbone as ``freeze`` says.

    ``check`` loads a file in the target's layout; ``reference`` (the student the file came from)
    is needed only by formats checked by their outputs rather than their keys.
    """

    name: str
    suffix: str
    needs_reference = False

    def write(
        self, student: StudentBackbone, cfg: StudentConfig, path: Path, shown_path: str, freeze: Freeze
    ) -> list[Path]:
        raise NotImplementedError

    def check_freeze(self, cfg: StudentConfig, freeze: Freeze) -> None:
        """Refuses freeze settings the format's snippet cannot carry (by default it writes none)."""
        if freeze.given:
            raise ExportError(
                f"--freeze-at/--freeze-norm go into the detector config snippet of --format rtdetrv2, "
                f"mmdet or mmyolo; --format {self.name} writes none"
            )

    def check(self, path: Path, cfg: StudentConfig, reference: StudentBackbone | None = None) -> CheckReport:
        raise NotImplementedError

    def read_back(self, path: Path, cfg: StudentConfig) -> Tensors:
        """The file's tensors under the student's own key names."""
        raise NotImplementedError


FORMATS: Registry[ExportFormat] = Registry("export format")


def _own_state(student: StudentBackbone) -> Tensors:
    return {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}


def _torch_save(payload: dict, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ExportError(f"{path} is not a loadable checkpoint: {err}") from None


def _student_keys(cfg: StudentConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return shapes_of(build_student(cfg.model_copy(update={"weights": None})).state_dict())


class RTDETRv2(ExportFormat):
    name, suffix = "rtdetrv2", ".pth"

    def variant(self, cfg: StudentConfig) -> str:
        model = cfg.name.removeprefix("timm/")
        if not cfg.name.startswith("timm/") or model not in TIMM_TO_RTDETR_VARIANT:
            raise ExportError(
                f"RT-DETRv2 has no backbone with the architecture of {describe_student(cfg)}: its HGNetv2 "
                "variants L, X and H are timm/hgnetv2_b4, b5 and b6 (its CSPDarkNet is YOLOv5's, and its "
                "TimmModel cannot return nested stages). Use --format mmyolo/mmdet, timm, safetensors or onnx"
            )
        return TIMM_TO_RTDETR_VARIANT[model]

    def check_freeze(self, cfg, freeze):
        pass  # HGNetv2's freeze_at and freeze_norm

    def write(self, student, cfg, path, shown_path, freeze):
        variant = self.variant(cfg)
        state = {
            f"backbone.{timm_to_rtdetr(k.removeprefix(TIMM_BODY))}": v for k, v in _own_state(student).items()
        }
        _torch_save({"model": state}, path)  # no "ema": load_tuning_state would read that instead
        snippet = path.with_suffix(".rtdetrv2.yml")
        snippet.write_text(rtdetrv2_yaml(variant, shown_path, freeze))
        return [path, snippet]

    def check(self, path, cfg, reference=None):
        variant = self.variant(cfg)
        payload = _torch_load(path)
        if "ema" in payload or not isinstance(payload.get("model"), dict):
            raise ExportError(f"{path} is not an RT-DETRv2 tuning file: it needs a 'model' dict and no 'ema'")
        expected = {f"backbone.{k}": shape for k, shape in layout(variant).items()}
        return match_state(f"RT-DETRv2 HGNetv2 {variant}", expected, payload["model"])

    def read_back(self, path, cfg):
        model = _torch_load(path)["model"]
        return {k: model[f"backbone.{timm_to_rtdetr(k.removeprefix(TIMM_BODY))}"] for k in _student_keys(cfg)}


class MMDetection(ExportFormat):
    """MMDetection / MMYOLO: ``backbone.`` + the module's keys; timm students through mmpretrain's
    ``TIMMBackbone``, which holds the timm model as ``timm_model``."""

    suffix = ".pth"

    def __init__(self, style: str):
        self.name = style

    def _prefix(self, cfg: StudentConfig) -> str:
        # The layout weight_layouts reads back (an mmdet/mmyolo export is a valid --checkpoint).
        return MMPRETRAIN_TIMM if cfg.name.startswith("timm/") else MMENGINE_BACKBONE

    def _target(self, cfg: StudentConfig) -> str:
        if cfg.is_mm:
            return f"OpenMMLab {cfg.mm_type}"
        if cfg.name.startswith("timm/"):
            return f"mmpretrain TIMMBackbone({cfg.name.removeprefix('timm/')})"
        return f"{'MMYOLO ' if self.name == 'mmyolo' else 'MMDetection mmyolo.'}YOLOv8CSPDarknet-{cfg.size}"

    def _file_key(self, key: str, cfg: StudentConfig) -> str:
        return self._prefix(cfg) + key.removeprefix(TIMM_BODY)

    def check_freeze(self, cfg, freeze):
        if freeze.given and cfg.name.startswith("timm/"):
            raise ExportError(
                f"mmpretrain's TIMMBackbone ({describe_student(cfg)}) has no frozen_stages or norm_eval for "
                "--freeze-at/--freeze-norm; freeze it through paramwise_cfg (lr_mult=0) as the snippet says"
            )
        if freeze.given and cfg.is_mm:
            raise ExportError(
                f"{describe_student(cfg)} is built from its own backbone dict: set frozen_stages/norm_eval "
                "in the snippet's backbone dict (where its class has them), not --freeze-at/--freeze-norm"
            )

    def write(self, student, cfg, path, shown_path, freeze):
        state = {self._file_key(k, cfg): v for k, v in _own_state(student).items()}
        meta = {"vfmkd_student": describe_student(cfg), "exported_for": self.name}
        _torch_save({"state_dict": state, "meta": meta}, path)
        snippet = path.with_suffix(f".{self.name}.py")
        snippet.write_text(mm_python(self.name, student, cfg, shown_path, freeze))
        return [path, snippet]

    def check(self, path, cfg, reference=None):
        payload = _torch_load(path)
        if not isinstance(payload.get("state_dict"), dict):
            raise ExportError(f"{path} is not an MMEngine checkpoint: it has no 'state_dict'")
        expected = {self._file_key(k, cfg): shape for k, shape in _student_keys(cfg).items()}
        return match_state(self._target(cfg), expected, payload["state_dict"])

    def read_back(self, path, cfg):
        state = _torch_load(path)["state_dict"]
        return {k: state[self._file_key(k, cfg)] for k in _student_keys(cfg)}


class SafeTensors(ExportFormat):
    name, suffix = "safetensors", ".safetensors"

    def write(self, student, cfg, path, shown_path, freeze):
        save_file(_own_state(student), str(path), metadata={"vfmkd_student": describe_student(cfg)})
        return [path]

    def check(self, path, cfg, reference=None):
        return match_state(describe_student(cfg), _student_keys(cfg), _safetensors(path))

    def read_back(self, path, cfg):
        return _safetensors(path)


class Timm(ExportFormat):
    """Loaded by ``timm.create_model(name, pretrained=True, features_only=True,
    pretrained_cfg_overlay=dict(file=...))`` (or ``num_classes=0`` for the whole trunk)."""

    name, suffix = "timm", ".safetensors"

    def _names(self, cfg: StudentConfig) -> tuple[str, dict[str, str]]:
        if not cfg.name.startswith("timm/"):
            raise ExportError(
                f"{describe_student(cfg)} is not a timm model; use --format safetensors or mmyolo"
            )
        model = cfg.name.removeprefix("timm/")
        feature_keys = [k.removeprefix(TIMM_BODY) for k in _student_keys(cfg)]
        return model, features_to_model_keys(model, feature_keys)

    def write(self, student, cfg, path, shown_path, freeze):
        _, names = self._names(cfg)
        state = {names[k.removeprefix(TIMM_BODY)]: v for k, v in _own_state(student).items()}
        save_file(state, str(path), metadata={"vfmkd_student": describe_student(cfg)})
        return [path]

    def check(self, path, cfg, reference=None):
        """Loads the file the way a user would, through timm, and compares every tensor."""
        model, names = self._names(cfg)
        stored = _safetensors(path)
        try:
            loaded = timm.create_model(
                model, pretrained=True, features_only=True, pretrained_cfg_overlay={"file": str(path)}
            ).state_dict()
        except Exception as err:
            raise ExportError(f"timm cannot load {path} as {model}: {err}") from None
        missed = [key for key in loaded if names.get(key) not in stored]
        unmatched = [
            key
            for key in loaded
            if key not in missed and not torch.equal(loaded[key], stored[names[key]].to(loaded[key].dtype))
        ]
        unexpected = sorted(set(stored) - set(names.values()))
        return LoadReport(
            f"timm {model} (features_only)",
            len(loaded) - len(missed) - len(unmatched),
            missed,
            unmatched,
            unexpected,
        )

    def read_back(self, path, cfg):
        _, names = self._names(cfg)
        stored = _safetensors(path)
        return {f"{TIMM_BODY}{k}": stored[v] for k, v in names.items()}


def _safetensors(path: Path) -> Tensors:
    try:
        return load_file(str(path))
    except Exception as err:
        raise ExportError(f"{path} is not a readable safetensors file: {err}") from None


for _format in (RTDETRv2(), MMDetection("mmdet"), MMDetection("mmyolo"), SafeTensors(), Timm()):
    FORMATS.add(_format.name, _format)
