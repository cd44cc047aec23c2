"""The record of samples a run skipped under ``on_bad_sample: skip`` / ``missing_features: skip``.

Any task on any node records a bad sample as one small JSON object under ``<folder>/<id hash>.json``
(idempotent: a sample seen again in a later epoch overwrites its own entry). The run's count comes
from listing the folder, and the driver merges it into ``bad_samples.jsonl`` in the run directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from vfmkd_ray import storage

BAD_SAMPLES_DIR = "bad_samples"
BAD_SAMPLES_JSONL = "bad_samples.jsonl"


@dataclass(frozen=True)
class BadSample:
    image_id: str
    image_uri: str
    stage: str  # precompute | train | missing-features
    error: str


class BadSampleLog:
    """A folder of bad-sample records; a plain value, so it pickles into Ray tasks."""

    def __init__(self, folder: str):
        self.folder = folder

    def record(self, sample: BadSample) -> None:
        name = hashlib.sha1(f"{sample.stage}:{sample.image_id}".encode()).hexdigest()[:20]
        storage.write_text_atomic(storage.join(self.folder, f"{name}.json"), json.dumps(asdict(sample)))

    def count(self) -> int:
        return len(storage.list_files(self.folder, "*.json"))

    def read_all(self) -> list[BadSample]:
        samples = [
            BadSample(**json.loads(storage.read_text(u))) for u in storage.list_files(self.folder, "*.json")
        ]
        return sorted(samples, key=lambda s: (s.stage, s.image_id))

    def write_jsonl(self, uri: str) -> int:
        """Writes every record as one JSON line to ``uri``; returns how many."""
        samples = self.read_all()
        storage.write_text_atomic(uri, "".join(json.dumps(asdict(s)) + "\n" for s in samples))
        return len(samples)
