"""Detector files: ``best_detector.pth`` holds the weights and the two config sections that rebuild
the detector, so a teacher or an evaluation needs nothing but the file."""

from __future__ import annotations

import io

import torch
from torch import nn

from vfmkd_ray import storage
from vfmkd_ray.detection.config import DetectionConfig
from vfmkd_ray.detection.model import DetectorOutput, YOLCDetector
from vfmkd_ray.models.students import StudentConfig, build_student

BEST_DETECTOR = "best_detector.pth"


def save_detector(
    uri: str, detector: YOLCDetector, student: StudentConfig, detection: DetectionConfig
) -> None:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in detector.state_dict().items()}
    torch.save(
        {
            "detector": state,
            "student": student.model_dump(mode="json"),
            "detection": detection.model_dump(mode="json"),
        },
        buffer,
    )
    storage.write_bytes_atomic(uri, buffer.getvalue())


def load_detector(uri: str) -> YOLCDetector:
    """Rebuilds and loads a detector file; errors name the file."""
    try:
        payload = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"detector checkpoint not found: {uri}") from None
    except Exception as err:
        raise ValueError(f"{uri} is not a loadable detector checkpoint: {err}") from None
    if not isinstance(payload, dict) or not {"detector", "student", "detection"} <= set(payload):
        raise ValueError(f"{uri} is not a detector file (want 'detector', 'student', 'detection' entries)")
    student = StudentConfig.model_validate(payload["student"]).model_copy(update={"weights": None})
    detector = YOLCDetector(build_student(student), DetectionConfig.model_validate(payload["detection"]))
    detector.load_state_dict(payload["detector"], strict=True)
    return detector


class FrozenDetector(nn.Module):
    """A teacher detector: eval mode for good, no gradients, forward under ``no_grad``."""

    def __init__(self, detector: YOLCDetector):
        super().__init__()
        self.detector = detector
        self.stride = detector.stride
        for param in detector.parameters():
            param.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenDetector:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images_BCHW: torch.Tensor) -> DetectorOutput:
        return self.detector(images_BCHW)
