"""``vfmkd export``: checkpoint -> target format, verified before anything is written; and
``vfmkd export --check`` on an existing file.

An export is written to a temporary directory, loaded back in the target's key layout (and, where
the format allows, read back into the student and compared tensor by tensor); only a file that
passes is copied to ``--out`` (atomically, local or ``s3://``), with its config snippet beside it.
Snippets name the checkpoint by its absolute path (or its URI): a detector runs from its own folder.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vfmkd_ray import storage
from vfmkd_ray.handoff.load_report import CheckReport
from vfmkd_ray.handoff.registry import make_format
from vfmkd_ray.handoff.snippets import Freeze
from vfmkd_ray.handoff.source import ExportError, find_student_config, load_student
from vfmkd_ray.models.students import StudentConfig
from vfmkd_ray.models.students.weight_layouts import WeightsReport


@dataclass(frozen=True)
class ExportResult:
    student: str
    source_kind: str  # training checkpoint, {"backbone": ...} file, state dict, MMEngine checkpoint
    files: list[str]
    report: CheckReport
    weights: WeightsReport  # how the checkpoint's keys were read (matched, dropped)


def run_export(
    checkpoint: str,
    format_name: str,
    out: str,
    student_cfg: StudentConfig | None = None,
    input_size: int | None = None,
    freeze: Freeze | None = None,
) -> ExportResult:
    """``freeze``: what the detector config snippet freezes (None: the target recipe's settings)."""
    export_format = make_format(format_name, input_size)
    cfg = student_cfg or find_student_config(checkpoint)
    freeze = freeze or Freeze()
    export_format.check_freeze(cfg, freeze)
    export_format.require(cfg)  # before the checkpoint is read
    student, kind, weights = load_student(checkpoint, cfg)
    name = out.rstrip("/").rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, name)
        written = export_format.write(student, cfg, local, storage.absolute(out), freeze)
        report = export_format.check(local, cfg, student)
        if not report.ok:
            raise ExportError(
                f"export to {format_name} failed its check, nothing written:\n{report.describe()}"
            )
        if not export_format.needs_reference:
            _same_tensors(export_format.read_back(local, cfg), student.state_dict(), format_name)
        parent = out.rstrip("/").rsplit("/", 1)[0] if "/" in out.rstrip("/") else "."
        uris = [out if path == local else storage.join(parent, path.name) for path in written]
        for path, uri in zip(written, uris, strict=True):
            storage.write_bytes_atomic(storage.absolute(uri), path.read_bytes())
    return ExportResult(cfg.label, kind, [storage.absolute(u) for u in uris], report, weights)


def run_check(
    path: str,
    format_name: str,
    student_cfg: StudentConfig | None = None,
    checkpoint: str | None = None,
) -> CheckReport:
    """Checks an existing export; ONNX also needs the ``checkpoint`` it was made from."""
    export_format = make_format(format_name)
    cfg = student_cfg or find_student_config(checkpoint or path)
    reference = load_student(checkpoint, cfg)[0] if checkpoint else None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, path.rstrip("/").rsplit("/", 1)[-1])
        try:
            local.write_bytes(storage.read_bytes(path))
        except FileNotFoundError:
            raise ExportError(f"no file to check at {path}") from None
        return export_format.check(local, cfg, reference)


def _same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], format_name: str) -> None:
    differing = [k for k, v in want.items() if k not in got or not torch.equal(got[k], v.cpu())]
    if differing or set(got) != set(want):
        raise ExportError(
            f"the {format_name} file does not read back into the student: {len(differing)} tensors differ, "
            f"e.g. {differing[:3]}; nothing written"
        )
