"""A YOLO-format copy of a COCO dataset the tests made (Ultralytics' layout): the same image files
under ``images/``, a ``labels/<stem>.txt`` per image (a polygon line for an instance with one, a
box line otherwise; coordinates at full precision, so both read to the same pixels), and a
``data.yaml`` of the category names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml


def write_yolo_copy(coco_root: Path, out: Path, annotations: str = "annotations.json") -> Path:
    """``out`` holding the YOLO copy of ``coco_root``'s ``images/`` and ``annotations``."""
    coco = json.loads((coco_root / annotations).read_text())
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(categories)}
    (out / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copytree(coco_root / "images", out / "images", dirs_exist_ok=True)
    lines: dict[int, list[str]] = {image["id"]: [] for image in coco["images"]}
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    for ann in coco["annotations"]:
        width, height = sizes[ann["image_id"]]
        label = label_of[ann["category_id"]]
        if ann.get("segmentation"):
            (polygon,) = ann["segmentation"]
            coords = [v / (width if k % 2 == 0 else height) for k, v in enumerate(polygon)]
        else:
            x, y, w, h = ann["bbox"]
            coords = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
        lines[ann["image_id"]].append(" ".join([str(label), *(repr(float(c)) for c in coords)]))
    for image in coco["images"]:
        stem = Path(image["file_name"]).stem
        (out / "labels" / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines[image["id"]]))
    (out / "data.yaml").write_text(yaml.safe_dump({"names": [c["name"] for c in categories]}))
    return out
