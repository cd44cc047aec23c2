"""The image records of a COCO-format dataset on any URI: id, URI and size of every image."""

from __future__ import annotations

import json
from dataclasses import dataclass

from vfmkd_ray import storage
from vfmkd_ray.data.config import DataConfig


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    image_uri: str
    width: int
    height: int


def read_image_records(cfg: DataConfig) -> list[ImageRecord]:
    """One record per image of the annotations file, in file order.

    Raises:
        FileNotFoundError: the annotations file does not exist.
        ValueError: it is not COCO-shaped JSON, or it repeats an image id.
    """
    root = storage.absolute(cfg.root)
    ann_uri = storage.join(root, cfg.annotations)
    try:
        coco = json.loads(storage.read_text(ann_uri))
        images = coco["images"]
        records = [
            ImageRecord(
                image_id=str(entry["id"]),
                image_uri=storage.join(root, cfg.images_dir, entry["file_name"]),
                width=int(entry["width"]),
                height=int(entry["height"]),
            )
            for entry in images
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{ann_uri} is not a COCO annotations file: {err!r}") from None
    seen: set[str] = set()
    for record in records:
        if record.image_id in seen:
            raise ValueError(f"{ann_uri} lists image id {record.image_id} twice")
        seen.add(record.image_id)
    return records
