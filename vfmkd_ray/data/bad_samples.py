"""The record of samples a run skipped under ``on_bad_sample: skip`` / ``missing_features: skip``,
and of the repairs it made to samples it kept (degenerate boxes dropped from an image's annotations).

Any task on any node records a bad sample as one small JSON object under ``<folder>/<id hash>.json``
(idempotent: a sample seen again in a later epoch overwrites its own entry); a repair is a note,
``<id hash>.note.json``, listed with the rest but not counted as skipped. The run's count comes
from listing the folder, and the driver merges it into ``bad_samples.jsonl`` in the run directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from vfmkd_ray import storage

BAD_SAMPLES_DIR = "bad_samples"
BAD_SAMPLES_JSONL = "bad_samples.jsonl"
ANNOTATIONS_STAGE = "annotations"  # an image left out for a bad annotation (data.annotation_checks)
DROPPED_BOXES_STAGE = "dropped-boxes"  # an image kept without its degenerate boxes: a note
NOTE_STAGES = frozenset({DROPPED_BOXES_STAGE})
_NOTE_SUFFIX = ".note.json"


@dataclass(frozen=True)
class BadSample:
    image_id: str
    image_uri: str
    stage: str  # precompute | train | missing-features | annotations | dropped-boxes (a note)
    error: str

    @property
    def skipped(self) -> bool:
        """Whether the sample was left out (a note records a repair of a sample that was kept)."""
        return self.stage not in NOTE_STAGES


class BadSampleLog:
    """A folder of bad-sample records; a plain value, so it pickles into Ray tasks."""

    def __init__(self, folder: str):
        self.folder = folder

    def record(self, sample: BadSample) -> None:
        name = hashlib.sha1(f"{sample.stage}:{sample.image_id}".encode()).hexdigest()[:20]
        suffix = ".json" if sample.skipped else _NOTE_SUFFIX
        storage.write_text_atomic(storage.join(self.folder, name + suffix), json.dumps(asdict(sample)))

    def count(self) -> int:
        """Samples skipped (notes not counted)."""
        return sum(not uri.endswith(_NOTE_SUFFIX) for uri in storage.list_files(self.folder, "*.json"))

    def read_all(self) -> list[BadSample]:
        samples = [
            BadSample(**json.loads(storage.read_text(u))) for u in storage.list_files(self.folder, "*.json")
        ]
        return sorted(samples, key=lambda s: (s.stage, s.image_id))

    def write_jsonl(self, uri: str, known: list[BadSample] = ()) -> int:
        """Writes every record, notes included, and the ``known`` ones the driver found itself (the
        dataset's bad annotations: written here once, not a file each on every launch), as one JSON
        line each to ``uri``; returns how many samples were skipped (notes not counted)."""
        samples = sorted([*self.read_all(), *known], key=lambda s: (s.stage, s.image_id))
        storage.write_text_atomic(uri, "".join(json.dumps(asdict(s)) + "\n" for s in samples))
        return sum(s.skipped for s in samples)
