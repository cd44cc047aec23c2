"""The export formats: one adapter per target, as torchtitan's ``state_dict_adapter``.

``to_target`` and ``from_target`` are pure mappings between the student's state dict and the
tensors of the target's file (no I/O); they ask the student (``StudentConfig.timm_name``,
``registry_type``, ``label``, answered by its family) and never parse its name. ``write``,
``check`` and ``read_back`` put the file around them. Formats are registered as factories
(``handoff.registry``).

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import timm
import torch
from safetensors.torch import load_file, save_file

from vfmkd_ray.handoff.load_report import CheckReport, LoadReport, match_state, shapes_of
from vfmkd_ray.handoff.rtdetr_hgnetv2 import TIMM_TO_RTDETR_VARIANT, layout, timm_to_rtdetr
from vfmkd_ray.handoff.snippets import Freeze, mm_python, rtdetrv2_yaml
from vfmkd_ray.handoff.source import ExportError
from vfmkd_ray.models.students import StudentConfig, build_student
from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.timm_keys import features_to_model_keys
from vfmkd_ray.models.students.timm_student import TIMM_BODY
from vfmkd_ray.models.students.weight_layouts import MMENGINE_BACKBONE, MMPRETRAIN_TIMM

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ExportOptions:
    """What ``vfmkd export`` hands every format's factory."""

    input_size: int | None = None  # ONNX: the traced side (default: the student's fixed size, else 640)


class ExportFormat:
    """Base class; by default the file holds the student's own key names.

    ``write`` returns the files it wrote (the checkpoint first), its snippet naming the checkpoint
    ``shown_path`` and freezing the backbone as ``freeze`` says. ``check`` loads a file in the
    target's layout; ``reference`` (the student the file came from) is needed only by formats
    checked by their outputs rather than their keys (``needs_reference``).
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    needs_reference: ClassVar[bool] = False

    def __init__(self, options: ExportOptions | None = None) -> None:
        self.options = options or ExportOptions()

    def refusal(self, cfg: StudentConfig) -> str | None:
        """Why the target cannot hold this student (one line naming it); None when it can."""
        return None

    def require(self, cfg: StudentConfig) -> None:
        if (reason := self.refusal(cfg)) is not None:
            raise ExportError(reason)

    def check_freeze(self, cfg: StudentConfig, freeze: Freeze) -> None:
        """Refuses freeze settings the format's snippet cannot carry (by default it writes none)."""
        if freeze.given:
            raise ExportError(
                f"--freeze-at/--freeze-norm go into the detector config snippet of --format rtdetrv2, "
                f"mmdet or mmyolo; --format {self.name} writes none"
            )

    def to_target(self, state: Tensors, cfg: StudentConfig) -> Tensors:
        """The student's tensors under the target's key names."""
        return dict(state)

    def from_target(self, tensors: Tensors, cfg: StudentConfig) -> Tensors:
        """The target's tensors under the student's key names (``to_target`` undone)."""
        return dict(tensors)

    def write(
        self, student: StudentBackbone, cfg: StudentConfig, path: Path, shown_path: str, freeze: Freeze
    ) -> list[Path]:
        raise NotImplementedError

    def check(self, path: Path, cfg: StudentConfig, reference: StudentBackbone | None = None) -> CheckReport:
        raise NotImplementedError

    def read_tensors(self, path: Path) -> Tensors:
        """The tensors a file of this format holds, under the target's key names."""
        raise NotImplementedError

    def read_back(self, path: Path, cfg: StudentConfig) -> Tensors:
        """The file's tensors under the student's own key names."""
        return self.from_target(self.read_tensors(path), cfg)


class RenamingFormat(ExportFormat):
    """A format whose file holds the student's tensors under other key names (``target_keys``)."""

    def target_keys(self, cfg: StudentConfig, keys: Iterable[str]) -> dict[str, str]:
        """Student key -> the same tensor's key in the target's file."""
        raise NotImplementedError

    def to_target(self, state: Tensors, cfg: StudentConfig) -> Tensors:
        names = self.target_keys(cfg, state)
        return {names[key]: value for key, value in state.items()}

    def from_target(self, tensors: Tensors, cfg: StudentConfig) -> Tensors:
        names = self.target_keys(cfg, student_shapes(cfg))
        if missing := [name for name in names.values() if name not in tensors]:
            raise ExportError(
                f"the {self.name} file lacks {len(missing)} tensors of {cfg.label}, e.g. {missing[:3]}"
            )
        return {key: tensors[name] for key, name in names.items()}


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


def _safetensors(path: Path) -> Tensors:
    try:
        return load_file(str(path))
    except Exception as err:
        raise ExportError(f"{path} is not a readable safetensors file: {err}") from None


def student_shapes(cfg: StudentConfig) -> dict[str, tuple[int, ...]]:
    """The student's key names and shapes, from its structure on the meta device."""
    with torch.device("meta"):
        return shapes_of(build_student(cfg.model_copy(update={"weights": None})).state_dict())


class RTDETRv2(RenamingFormat):
    name, suffix = "rtdetrv2", ".pth"

    def refusal(self, cfg):
        if cfg.timm_name in TIMM_TO_RTDETR_VARIANT:
            return None
        return (
            f"RT-DETRv2 has no backbone with the architecture of {cfg.label}: its HGNetv2 "
            "variants L, X and H are timm/hgnetv2_b4, b5 and b6 (its CSPDarkNet is YOLOv5's, and its "
            "TimmModel cannot return nested stages). Use --format mmyolo/mmdet, timm, safetensors or onnx"
        )

    def variant(self, cfg: StudentConfig) -> str:
        self.require(cfg)
        return TIMM_TO_RTDETR_VARIANT[cfg.timm_name]

    def check_freeze(self, cfg, freeze):
        pass  # HGNetv2's freeze_at and freeze_norm

    def target_keys(self, cfg, keys):
        self.require(cfg)
        return {key: f"backbone.{timm_to_rtdetr(key.removeprefix(TIMM_BODY))}" for key in keys}

    def write(self, student, cfg, path, shown_path, freeze):
        variant = self.variant(cfg)
        # No "ema": RT-DETRv2's load_tuning_state would read that instead.
        _torch_save({"model": self.to_target(_own_state(student), cfg)}, path)
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

    def read_tensors(self, path):
        return _torch_load(path)["model"]


class MMEngineFormat(RenamingFormat):
    """MMDetection / MMYOLO: ``backbone.`` + the module's keys; timm students through mmpretrain's
    ``TIMMBackbone``, which holds the timm model as ``timm_model``."""

    suffix = ".pth"

    def _target(self, cfg: StudentConfig) -> str:
        if cfg.registry_type is not None:
            return f"OpenMMLab {cfg.registry_type}"
        if cfg.timm_name is not None:
            return f"mmpretrain TIMMBackbone({cfg.timm_name})"
        return f"{'MMYOLO ' if self.name == 'mmyolo' else 'MMDetection mmyolo.'}YOLOv8CSPDarknet-{cfg.size}"

    def target_keys(self, cfg, keys):
        # The layout weight_layouts reads back (an mmdet/mmyolo export is a valid --checkpoint).
        prefix = MMPRETRAIN_TIMM if cfg.timm_name is not None else MMENGINE_BACKBONE
        return {key: prefix + key.removeprefix(TIMM_BODY) for key in keys}

    def check_freeze(self, cfg, freeze):
        if freeze.given and cfg.timm_name is not None:
            raise ExportError(
                f"mmpretrain's TIMMBackbone ({cfg.label}) has no frozen_stages or norm_eval for "
                "--freeze-at/--freeze-norm; freeze it through paramwise_cfg (lr_mult=0) as the snippet says"
            )
        if freeze.given and cfg.registry_type is not None:
            raise ExportError(
                f"{cfg.label} is built from its own backbone dict: set frozen_stages/norm_eval "
                "in the snippet's backbone dict (where its class has them), not --freeze-at/--freeze-norm"
            )

    def write(self, student, cfg, path, shown_path, freeze):
        meta = {"vfmkd_student": cfg.label, "exported_for": self.name}
        _torch_save({"state_dict": self.to_target(_own_state(student), cfg), "meta": meta}, path)
        snippet = path.with_suffix(f".{self.name}.py")
        snippet.write_text(mm_python(self.name, student, cfg, shown_path, freeze))
        return [path, snippet]

    def check(self, path, cfg, reference=None):
        payload = _torch_load(path)
        if not isinstance(payload.get("state_dict"), dict):
            raise ExportError(f"{path} is not an MMEngine checkpoint: it has no 'state_dict'")
        shapes = student_shapes(cfg)
        names = self.target_keys(cfg, shapes)
        expected = {names[key]: shape for key, shape in shapes.items()}
        return match_state(self._target(cfg), expected, payload["state_dict"])

    def read_tensors(self, path):
        return _torch_load(path)["state_dict"]


class MMDetection(MMEngineFormat):
    name = "mmdet"


class MMYOLO(MMEngineFormat):
    name = "mmyolo"


class SafeTensors(ExportFormat):
    name, suffix = "safetensors", ".safetensors"

    def write(self, student, cfg, path, shown_path, freeze):
        state = self.to_target(_own_state(student), cfg)
        save_file(state, str(path), metadata={"vfmkd_student": cfg.label})
        return [path]

    def check(self, path, cfg, reference=None):
        return match_state(cfg.label, student_shapes(cfg), _safetensors(path))

    def read_tensors(self, path):
        return _safetensors(path)


class Timm(RenamingFormat):
    """Loaded by ``timm.create_model(name, pretrained=True, features_only=True,
    pretrained_cfg_overlay=dict(file=...))`` (or ``num_classes=0`` for the whole trunk)."""

    name, suffix = "timm", ".safetensors"

    def refusal(self, cfg):
        if cfg.timm_name is not None:
            return None
        return f"{cfg.label} is not a timm model; use --format safetensors or mmyolo"

    def target_keys(self, cfg, keys):
        self.require(cfg)
        keys = list(keys)
        full = features_to_model_keys(cfg.timm_name, [key.removeprefix(TIMM_BODY) for key in keys])
        return {key: full[key.removeprefix(TIMM_BODY)] for key in keys}

    def write(self, student, cfg, path, shown_path, freeze):
        state = self.to_target(_own_state(student), cfg)
        save_file(state, str(path), metadata={"vfmkd_student": cfg.label})
        return [path]

    def check(self, path, cfg, reference=None):
        """Loads the file the way a user would, through timm, and compares every tensor."""
        self.require(cfg)
        model = cfg.timm_name
        # The features_only model's keys are the student's without its body. prefix.
        names = {k.removeprefix(TIMM_BODY): v for k, v in self.target_keys(cfg, student_shapes(cfg)).items()}
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

    def read_tensors(self, path):
        return _safetensors(path)
