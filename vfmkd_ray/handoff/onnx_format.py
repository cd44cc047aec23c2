"""ONNX export: the backbone traced with a dynamic batch axis, checked with onnxruntime against
the PyTorch outputs on random inputs at two batch sizes (a graph, not a state dict: it is never
read back into the student)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfmkd_ray.handoff.formats import ExportFormat
from vfmkd_ray.handoff.source import ExportError
from vfmkd_ray.models.students import StudentConfig
from vfmkd_ray.models.students.base import StudentBackbone

OPSET = 17
CHECK_BATCH_SIZES = (1, 3)
TOLERANCE = 1e-3  # max |onnx - torch| relative to the largest |torch| output


@dataclass(frozen=True)
class OnnxReport:
    input_size: int
    max_abs_error: float
    scale: float
    outputs: list[tuple[int, ...]]

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= TOLERANCE * max(self.scale, 1.0)

    def describe(self) -> str:
        return (
            f"onnxruntime vs PyTorch at batch {CHECK_BATCH_SIZES} x {self.input_size} px: max abs error "
            f"{self.max_abs_error:.2e} (outputs up to {self.scale:.2f}; tolerance {TOLERANCE:g} relative), "
            f"output shapes {self.outputs}"
        )


class Onnx(ExportFormat):
    name, suffix = "onnx", ".onnx"
    needs_reference = True

    def _size(self, student: StudentBackbone) -> int:
        return student.fixed_input_size or self.options.input_size or 640

    def write(self, student, cfg, path, shown_path, freeze):
        size = self._size(student)
        names = [f"feat_s{stride}" for stride in student.feature_info.reduction()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                student.eval(),
                (torch.zeros(1, 3, size, size),),
                str(path),
                input_names=["images"],
                output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
                opset_version=OPSET,
                dynamo=False,
            )
        return [path]

    def check(self, path: Path, cfg: StudentConfig, reference: StudentBackbone | None = None) -> OnnxReport:
        if reference is None:
            raise ExportError("checking an ONNX file compares it with PyTorch: pass --checkpoint as well")
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ExportError(f"onnxruntime cannot load {path}: {err}") from None
        size = int(session.get_inputs()[0].shape[-1])
        error, scale, shapes = 0.0, 0.0, []
        generator = torch.Generator().manual_seed(0)
        for batch in CHECK_BATCH_SIZES:
            images = torch.randn(batch, 3, size, size, generator=generator)
            with torch.no_grad():
                expected = [t.numpy() for t in reference.eval()(images)]
            got = session.run(None, {session.get_inputs()[0].name: images.numpy()})
            if len(got) != len(expected):
                raise ExportError(f"{path} has {len(got)} outputs, the student {len(expected)}")
            for ours, theirs in zip(expected, got, strict=True):
                if ours.shape != theirs.shape:
                    raise ExportError(f"{path} output shape {theirs.shape}, PyTorch {ours.shape}")
                error = max(error, float(np.abs(ours - theirs).max()))
                scale = max(scale, float(np.abs(ours).max()))
            shapes = [tuple(t.shape) for t in got]
        return OnnxReport(size, error, scale, shapes)

    def read_tensors(self, path):
        raise ExportError("an ONNX graph is not read back into PyTorch; it is checked by its outputs")
