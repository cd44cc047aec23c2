"""The one dataset reader: a COCO annotations file, YOLO-format labels (``data.yolo``) or a plain
image folder on any URI, parsed once, giving image records and, per image, the annotations the
heads need.

Annotations travel through the data path as one small JSON text per image (``ImageAnnotations``):
boxes in original pixels, clipped to the image, 0-based labels (categories sorted by id), and each
instance's COCO segmentation as written (polygons or RLE), decoded only where masks are needed
(``data.targets``). Crowd annotations are left out. Every annotation is checked as it is read
(``data.annotation_checks``): one that cannot train stops the read with a line naming the file,
image and annotation, or under ``data.on_bad_sample: skip`` leaves its image out of the dataset;
a degenerate box is dropped and counted. Both are listed in ``CocoDataset.bad_samples``.

A ``file_name`` must stay inside ``<root>/<images_dir>``: an absolute one, or one whose ``..``
leads out of the folder, is an error of the annotations file, raised before any image is read. On
local paths, where a name leads, symlinks followed, must also lie inside the dataset (``data.root``
resolved: links into a DVC or git-annex store of the dataset are fine, a link to ``/etc`` is not);
``s3://`` keys have no links and are judged on their normalized text.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import asdict, dataclass, field

from vfmkd_ray import storage
from vfmkd_ray.data.annotation_checks import AnnotationProblem, CategoryLabels, Instance, check_annotation
from vfmkd_ray.data.bad_samples import ANNOTATIONS_STAGE, DROPPED_BOXES_STAGE, BadSample
from vfmkd_ray.data.config import DataConfig

log = logging.getLogger(__name__)
MAX_NAMED_PROBLEMS = 3  # per bad-sample entry; the count of the rest follows


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    image_uri: str
    width: int  # 0 when unknown (image folders without annotations)
    height: int


@dataclass(frozen=True)
class ImageAnnotations:
    """One image's instances; ``segmentations[k]`` is None when instance k has none. ``image_id``
    and ``annotation_ids`` name them in the errors of the workers that decode them."""

    boxes: list[list[float]] = field(default_factory=list)  # x1 y1 x2 y2, original pixels
    labels: list[int] = field(default_factory=list)
    segmentations: list[object] = field(default_factory=list)
    image_id: str = ""
    annotation_ids: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> ImageAnnotations:
        return ImageAnnotations(**json.loads(text)) if text else ImageAnnotations()

    def annotation_id(self, index: int) -> str:
        """The annotations file's id of instance ``index`` (its position when not known)."""
        return self.annotation_ids[index] if index < len(self.annotation_ids) else f"#{index}"


@dataclass(frozen=True)
class CocoDataset:
    records: list[ImageRecord]  # under on_bad_sample: skip, without the images of bad annotations
    categories: list[dict]  # sorted by id: list position is the 0-based label
    annotations: dict[str, ImageAnnotations]  # image id -> its instances (absent: none)
    source: str  # the annotations file (or YOLO labels folder, or image folder) it came from
    # Images left out for bad annotations (stage "annotations") and images whose degenerate boxes
    # were dropped (stage "dropped-boxes"): what a run writes to its bad_samples.jsonl.
    bad_samples: list[BadSample] = field(default_factory=list)
    num_dropped_boxes: int = 0
    num_crowd: int = 0  # crowd annotations, left out
    # The COCO file holding the dataset's own ground truth (its areas, crowd regions), which scores
    # read; None where none exists (YOLO labels): scores build it from the checked annotations.
    coco_json: str | None = None

    @property
    def num_boxes(self) -> int:
        return sum(len(a.boxes) for a in self.annotations.values())

    @property
    def num_masks(self) -> int:
        return sum(s is not None for a in self.annotations.values() for s in a.segmentations)


def read_image_records(cfg: DataConfig) -> list[ImageRecord]:
    """One record per image of the annotations file (in file order), or of the image folder."""
    return read_dataset(cfg).records


def read_dataset(cfg: DataConfig) -> CocoDataset:
    """Parses ``cfg``'s dataset once, checking every annotation (``data.annotation_checks``).

    Raises:
        FileNotFoundError: the annotations file or image folder does not exist.
        ValueError: it is not COCO-shaped JSON, it repeats an image id, a ``file_name`` leads
            outside the images folder, or (under ``on_bad_sample: error``) an annotation is bad.
    """
    if cfg.format == "yolo":
        from vfmkd_ray.data.yolo import read_yolo_dataset

        return read_yolo_dataset(cfg)
    root = storage.absolute(cfg.root)
    images_uri = storage.join(root, cfg.images_dir)
    if cfg.annotations is None:
        return CocoDataset(folder_records(images_uri, root), [], {}, images_uri)
    ann_uri = storage.join(root, cfg.annotations)
    try:
        coco = json.loads(storage.read_text(ann_uri))
        links = _Links(images_uri, root)
        records = unique_ids([_record(entry, links, ann_uri) for entry in coco["images"]], ann_uri)
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        grouped = AnnotationGroups(records, CategoryLabels(categories))
        for position, ann in enumerate(coco.get("annotations", [])):
            grouped.add(position, ann)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{ann_uri} is not a COCO annotations file: {err!r}") from None
    return grouped.dataset(categories, ann_uri, cfg.on_bad_sample, coco_json=ann_uri)


class AnnotationGroups:
    """The checked instances of each image, the images with bad annotations and the dropped boxes,
    gathered in one pass over the annotations (a COCO file's, or the lines of YOLO label files)."""

    def __init__(self, records: list[ImageRecord], labels: CategoryLabels):
        self.records, self.labels = records, labels
        self.by_id = {r.image_id: r for r in records}
        # image id -> boxes, labels, segmentations and annotation ids of its usable instances
        self.instances: dict[str, tuple[list, list, list, list]] = {}
        self.bad: dict[str, list[AnnotationProblem]] = {}  # image id -> why it cannot train
        self.dropped: dict[str, list[AnnotationProblem]] = {}  # image id -> its dropped boxes
        self.num_crowd = 0

    def add(self, position: int, ann: dict) -> None:
        if ann.get("iscrowd", 0):
            self.num_crowd += 1
            return
        image_id = str(ann["image_id"])
        record = self.by_id.get(image_id)
        if record is None:
            return  # an annotation of an image the file does not list: nothing reads it
        checked = check_annotation(ann, record.height, record.width, self.labels)
        ann_id = ann.get("id")
        ann_id = f"#{position} in annotations" if ann_id is None else str(ann_id)
        if isinstance(checked, Instance):
            boxes, labels, segmentations, ids = self.instances.setdefault(image_id, ([], [], [], []))
            boxes.append(checked.box)
            labels.append(checked.label)
            segmentations.append(checked.segmentation)
            ids.append(ann_id)
            return
        kind = self.bad if checked.bad_sample else self.dropped
        kind.setdefault(image_id, []).append(AnnotationProblem(image_id, ann_id, checked.reason))

    def reject(self, image_id: str, ann_id: str, reason: str) -> None:
        """An annotation that cannot be read at all (a malformed label line): its image is bad."""
        self.bad.setdefault(image_id, []).append(AnnotationProblem(image_id, ann_id, reason))

    def dataset(
        self, categories: list[dict], ann_uri: str, policy: str, coco_json: str | None = None
    ) -> CocoDataset:
        """The dataset under ``policy`` (``data.on_bad_sample``), with what was left out logged."""
        if self.bad and policy == "error":
            first = next(iter(self.bad.values()))[0]
            rest = sum(len(p) for p in self.bad.values()) - 1
            more = f"{rest} more bad annotations; " if rest else ""
            raise ValueError(
                f"{ann_uri}: {first} ({more}data.on_bad_sample=skip leaves such images out and records them)"
            )
        records = [r for r in self.records if r.image_id not in self.bad]
        annotations = {
            image_id: ImageAnnotations(boxes, labels, segmentations, image_id, ids)
            for image_id, (boxes, labels, segmentations, ids) in self.instances.items()
            if image_id not in self.bad
        }
        # A box dropped from an image that is left out anyway is not counted.
        kept_dropped = {i: found for i, found in self.dropped.items() if i not in self.bad}
        left_out = self._entries(self.bad, ANNOTATIONS_STAGE, "bad annotations")
        dropped = self._entries(kept_dropped, DROPPED_BOXES_STAGE, "degenerate boxes dropped")
        num_dropped = sum(len(found) for found in kept_dropped.values())
        if left_out:
            log.warning(
                "%s: %d images left out for bad annotations (data.on_bad_sample: skip), e.g. %s",
                ann_uri,
                len(left_out),
                next(iter(self.bad.values()))[0],
            )
        if num_dropped:
            log.warning(
                "%s: %d degenerate boxes dropped (no area inside the image, or not finite), e.g. %s",
                ann_uri,
                num_dropped,
                next(iter(kept_dropped.values()))[0],
            )
        return CocoDataset(
            records,
            categories,
            annotations,
            ann_uri,
            left_out + dropped,
            num_dropped,
            self.num_crowd,
            coco_json,
        )

    def _entries(
        self, problems: dict[str, list[AnnotationProblem]], stage: str, what: str
    ) -> list[BadSample]:
        entries = []
        for image_id, found in problems.items():
            named = "; ".join(f"annotation {p.annotation_id}: {p.reason}" for p in found[:MAX_NAMED_PROBLEMS])
            rest = f"; and {len(found) - MAX_NAMED_PROBLEMS} more" if len(found) > MAX_NAMED_PROBLEMS else ""
            error = f"{what} ({len(found)}): {named}{rest}"
            entries.append(BadSample(image_id, self.by_id[image_id].image_uri, stage, error))
        return entries


def _record(entry: dict, links: _Links, ann_uri: str) -> ImageRecord:
    file_name = entry["file_name"]
    if not isinstance(file_name, str):
        raise TypeError(f"image {entry['id']} has file_name {file_name!r}, not a string")
    image_uri = uri_inside(links.folder, file_name)
    if image_uri is None:
        raise ValueError(
            f"{ann_uri}: image {entry['id']} has file_name {file_name!r}, which leads outside the "
            f"images folder {links.folder}; file names must be relative paths inside it"
        )
    if (real := links.outside(image_uri)) is not None:
        raise ValueError(
            f"{ann_uri}: image {entry['id']} has file_name {file_name!r}, which leads to {real}, outside "
            f"the dataset {links.root} and its images folder; links there must point inside them"
        )
    return ImageRecord(
        image_id=str(entry["id"]), image_uri=image_uri, width=int(entry["width"]), height=int(entry["height"])
    )


def uri_inside(folder: str, file_name: str) -> str | None:
    """``folder/file_name`` normalized (``a/../b`` -> ``b``), or None when it is absolute or its
    ``..`` leads out of ``folder``; for ``s3://`` URIs the key is normalized. Judged on the text
    (``_Links`` follows local symlinks)."""
    scheme, _, path = folder.rpartition("://")
    prefix = f"{scheme}://" if scheme else ""
    base = posixpath.normpath(path)
    joined = posixpath.normpath(posixpath.join(base, file_name))
    if posixpath.isabs(file_name) or not joined.startswith(base.rstrip("/") + "/"):
        return None
    return prefix + joined


class _Links:
    """Where local image paths lead, symlinks followed: a path inside the images folder by its text
    may still be a link out of the dataset. Inside means under the real dataset ``root`` or the real
    images folder (itself often a link: ``images -> /mnt/coco/train2017``). Each directory is
    resolved once, so a dataset of many images in few folders costs about one ``lstat`` per image;
    ``s3://`` keys have no links."""

    def __init__(self, folder: str, root: str):
        self.folder, self.root = folder, root
        self.local = not storage.is_remote(folder)
        real = (os.path.realpath(root), os.path.realpath(folder)) if self.local else ()
        self.real_prefixes = tuple(path.rstrip(os.sep) + os.sep for path in real)
        self._real_dirs: dict[str, str] = {}

    def outside(self, image_uri: str) -> str | None:
        """The real path of ``image_uri`` when it lies outside the real dataset and images folder,
        else None."""
        if not self.local:
            return None
        parent, name = os.path.split(image_uri)
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = os.path.realpath(parent)
        real = os.path.join(real_parent, name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        return None if real.startswith(self.real_prefixes) else real


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def folder_records(images_uri: str, root: str) -> list[ImageRecord]:
    """Every image file directly in ``images_uri``; sizes are read later, with the pixels."""
    uris = [u for u in storage.list_files(images_uri, "*") if u.lower().endswith(IMAGE_SUFFIXES)]
    if not uris:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_uri}")
    links = _Links(images_uri, root)
    for uri in uris:
        if (real := links.outside(uri)) is not None:
            raise ValueError(
                f"{images_uri}: image {_stem(uri)} is {uri.rsplit('/', 1)[-1]!r}, which leads to {real}, "
                f"outside the dataset {root} and its images folder; links there must point inside them"
            )
    records = [ImageRecord(image_id=_stem(uri), image_uri=uri, width=0, height=0) for uri in uris]
    return unique_ids(records, f"{images_uri} (ids are file stems)")


def unique_ids(records: list[ImageRecord], source: str) -> list[ImageRecord]:
    seen: set[str] = set()
    for record in records:
        if record.image_id in seen:
            raise ValueError(f"{source} has image id {record.image_id} twice")
        seen.add(record.image_id)
    return records


def _stem(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].rsplit(".", 1)[0]
