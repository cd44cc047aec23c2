"""The image records of a dataset on any URI: a COCO annotations file, or a plain image folder."""

from __future__ import annotations

import json
from dataclasses import dataclass

from vfmkd_ray import storage
from vfmkd_ray.data.config import DataConfig


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    image_uri: str
    width: int  # 0 when unknown (image folders without annotations)
    height: int


def read_image_records(cfg: DataConfig) -> list[ImageRecord]:
    """One record per image of the annotations file, in file order.

    Raises:
        FileNotFoundError: the annotations file does not exist.
        ValueError: it is not COCO-shaped JSON, or it repeats an image id.
    """
    root = storage.absolute(cfg.root)
    if cfg.annotations is None:
        return _folder_records(storage.join(root, cfg.images_dir))
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
    return _unique(records, ann_uri)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _folder_records(images_uri: str) -> list[ImageRecord]:
    """Every image file directly in ``images_uri``; sizes are read later, with the pixels."""
    uris = [u for u in storage.list_files(images_uri, "*") if u.lower().endswith(IMAGE_SUFFIXES)]
    if not uris:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_uri}")
    records = [ImageRecord(image_id=_stem(uri), image_uri=uri, width=0, height=0) for uri in uris]
    return _unique(records, f"{images_uri} (ids are file stems)")


def _unique(records: list[ImageRecord], source: str) -> list[ImageRecord]:
    seen: set[str] = set()
    for record in records:
        if record.image_id in seen:
            raise ValueError(f"{source} has image id {record.image_id} twice")
        seen.add(record.image_id)
    return records


def _stem(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].rsplit(".", 1)[0]
