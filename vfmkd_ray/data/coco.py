"""The one dataset reader: a COCO annotations file (or a plain image folder) on any URI, parsed
once, giving image records and, per image, the annotations the heads need.

Annotations travel through the data path as one small JSON text per image (``ImageAnnotations``):
boxes in original pixels, 0-based labels (categories sorted by id), and each instance's COCO
segmentation as written (polygons or RLE), decoded only where masks are needed
(``data.targets``). Crowd annotations are left out.

A ``file_name`` must stay inside ``<root>/<images_dir>`` (judged on the path text, on local paths
and ``s3://`` keys alike): an absolute one, or one whose ``..`` leads out of the folder, is an
error of the annotations file, raised before any image is read.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field

from vfmkd_ray import storage
from vfmkd_ray.data.config import DataConfig


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    image_uri: str
    width: int  # 0 when unknown (image folders without annotations)
    height: int


@dataclass(frozen=True)
class ImageAnnotations:
    """One image's instances; ``segmentations[k]`` is None when instance k has none."""

    boxes: list[list[float]] = field(default_factory=list)  # x1 y1 x2 y2, original pixels
    labels: list[int] = field(default_factory=list)
    segmentations: list[object] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> ImageAnnotations:
        return ImageAnnotations(**json.loads(text)) if text else ImageAnnotations()


@dataclass(frozen=True)
class CocoDataset:
    records: list[ImageRecord]
    categories: list[dict]  # sorted by id: list position is the 0-based label
    annotations: dict[str, ImageAnnotations]  # image id -> its instances (absent: none)
    source: str  # the annotations file (or image folder) it came from


def read_image_records(cfg: DataConfig) -> list[ImageRecord]:
    """One record per image of the annotations file (in file order), or of the image folder."""
    return read_dataset(cfg).records


def read_dataset(cfg: DataConfig) -> CocoDataset:
    """Parses ``cfg``'s dataset once.

    Raises:
        FileNotFoundError: the annotations file or image folder does not exist.
        ValueError: it is not COCO-shaped JSON, it repeats an image id, or a ``file_name`` leaves
            the images folder.
    """
    root = storage.absolute(cfg.root)
    if cfg.annotations is None:
        folder = storage.join(root, cfg.images_dir)
        return CocoDataset(_folder_records(folder), [], {}, folder)
    ann_uri = storage.join(root, cfg.annotations)
    images_uri = storage.join(root, cfg.images_dir)
    try:
        coco = json.loads(storage.read_text(ann_uri))
        records = [_record(entry, images_uri, ann_uri) for entry in coco["images"]]
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        annotations = _by_image(coco.get("annotations", []), {c["id"]: i for i, c in enumerate(categories)})
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{ann_uri} is not a COCO annotations file: {err!r}") from None
    return CocoDataset(_unique(records, ann_uri), categories, annotations, ann_uri)


def _record(entry: dict, images_uri: str, ann_uri: str) -> ImageRecord:
    file_name = entry["file_name"]
    if not isinstance(file_name, str):
        raise TypeError(f"image {entry['id']} has file_name {file_name!r}, not a string")
    image_uri = uri_inside(images_uri, file_name)
    if image_uri is None:
        raise ValueError(
            f"{ann_uri}: image {entry['id']} has file_name {file_name!r}, which leads outside the "
            f"images folder {images_uri}; file names must be relative paths inside it"
        )
    return ImageRecord(
        image_id=str(entry["id"]), image_uri=image_uri, width=int(entry["width"]), height=int(entry["height"])
    )


def uri_inside(folder: str, file_name: str) -> str | None:
    """``folder/file_name`` normalized (``a/../b`` -> ``b``), or None when it is absolute or its
    ``..`` leads out of ``folder``; for ``s3://`` URIs the key is normalized."""
    scheme, _, path = folder.rpartition("://")
    prefix = f"{scheme}://" if scheme else ""
    base = posixpath.normpath(path)
    joined = posixpath.normpath(posixpath.join(base, file_name))
    if posixpath.isabs(file_name) or not joined.startswith(base.rstrip("/") + "/"):
        return None
    return prefix + joined


def _by_image(anns: list[dict], label_of: dict[int, int]) -> dict[str, ImageAnnotations]:
    grouped: dict[str, tuple[list, list, list]] = {}
    for ann in anns:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes, labels, segmentations = grouped.setdefault(str(ann["image_id"]), ([], [], []))
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of[ann["category_id"]])
        segmentations.append(ann.get("segmentation") or None)
    return {image_id: ImageAnnotations(*parts) for image_id, parts in grouped.items()}


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
