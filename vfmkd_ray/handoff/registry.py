"""Export formats by ``--format`` name, registered as factories: ``make_format`` builds one with the
export's options (the ONNX input size), so no format is a shared, stateful instance."""

from __future__ import annotations

from collections.abc import Callable

from vfmkd_ray.handoff.formats import (
    MMYOLO,
    ExportFormat,
    ExportOptions,
    MMDetection,
    RTDETRv2,
    SafeTensors,
    Timm,
)
from vfmkd_ray.handoff.onnx_format import Onnx
from vfmkd_ray.registry import Registry

FORMATS: Registry[Callable[[ExportOptions], ExportFormat]] = Registry("export format")
for _factory in (RTDETRv2, MMDetection, MMYOLO, SafeTensors, Timm, Onnx):
    FORMATS.add(_factory.name, _factory)


def make_format(name: str, input_size: int | None = None) -> ExportFormat:
    """The format registered as ``name``; ValueError listing the valid names for another."""
    return FORMATS.get(name)(ExportOptions(input_size=input_size))
