"""YOLO-format datasets (Ultralytics' layout), read into the same ``CocoDataset`` a COCO file gives.

``<root>/<images_dir>/`` holds the images (ids are the file stems, as in an image folder);
``<root>/<labels_dir>/<stem>.txt`` each image's objects, one per line (``data.labels_dir``; by
default the images folder with its ``images`` named ``labels``); ``<root>/<annotations>``
(``data.yaml``) the class names, ``names:`` as a list or as a mapping from 0-based index to name.

A line is ``class cx cy w h`` (a box) or ``class x1 y1 ... xn yn`` (a YOLO-seg polygon of 3 or more
points, whose box is the polygon's bounds), coordinates normalised to the image as displayed (EXIF
orientation applied). Each image's size comes from its header (no pixel decoded; read in threads,
with its label file), and each line becomes the COCO annotation it stands for, checked by the same
rules (``data.annotation_checks``): a line that is not numbers of one of the two shapes, a
coordinate outside [0, 1] (by more than Ultralytics' 0.01), a class ``names`` lacks, a label file
that is not UTF-8 or an image whose header cannot be read makes its image a bad sample, named by
label file and line (``data.on_bad_sample``); a degenerate box is dropped and counted, a line that
repeats one of its file dropped (as Ultralytics drops it) and counted in a warning. An image without
a label file, or with an empty one, has no objects (a background image, as Ultralytics reads it);
label files that name no image are a warning, or an error when none names one (the wrong folder).

Scores need no COCO file: ``data.coco_scores`` builds the ground truth from these annotations.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import yaml

from vfmkd_ray import storage
from vfmkd_ray.data.annotation_checks import CategoryLabels
from vfmkd_ray.data.coco import AnnotationGroups, CocoDataset, ImageRecord, folder_records
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.data.images import BadImageError, displayed_header_size

# Ultralytics' own tolerance: labelling tools write 1.0000001; the box is clipped to the image.
COORDINATE_MARGIN = 0.01
READ_THREADS = 16  # header and label reads in flight: object storage answers each in ~10-50 ms
log = logging.getLogger(__name__)
LINE_SHAPES = "'class cx cy w h', or 'class x1 y1 x2 y2 x3 y3 ...' (a polygon of 3 or more points)"


def read_yolo_dataset(cfg: DataConfig) -> CocoDataset:
    """Parses ``cfg``'s YOLO dataset, checking every label line.

    Raises:
        FileNotFoundError: the images or labels folder, or the names file, does not exist.
        ValueError: the names file lists no names, or (under ``on_bad_sample: error``) a label
            line or an image header is bad.
    """
    root = storage.absolute(cfg.root)
    images_uri = storage.join(root, cfg.images_dir)
    labels_uri = storage.join(root, cfg.yolo_labels_dir())
    if cfg.annotations is None:
        raise ValueError("data.format yolo reads the class names from data.annotations (a data.yaml)")
    categories = read_names(storage.join(root, cfg.annotations))
    if not storage.is_dir(labels_uri):
        raise FileNotFoundError(
            f"no YOLO labels folder {labels_uri} (data.labels_dir; by default data.images_dir with its "
            "images folder named labels)"
        )
    records = folder_records(images_uri, root)
    label_files = set(storage.list_files(labels_uri, "*.txt"))
    with ThreadPoolExecutor(READ_THREADS) as pool:
        read = pool.map(lambda r: _read_image(r, labels_uri, label_files, cfg.max_image_pixels), records)
        sized = list(read)
    _check_label_files(label_files, records, labels_uri, images_uri)
    records = [record for record, _, _ in sized]
    groups = AnnotationGroups(records, CategoryLabels(categories))
    repeats: list[str] = []
    labels_dir = labels_uri[len(root) :].lstrip("/")  # how annotation ids name a label file
    for record, text, problem in sized:
        label_name = f"{labels_dir}/{_stem_file(record)}"
        if problem is not None:
            groups.reject(record.image_id, label_name, problem)
            continue
        seen: set[tuple[str, ...]] = set()
        for number, line in enumerate((text or "").splitlines(), start=1):
            values = tuple(line.split())
            if not values:
                continue
            ann_id = f"{label_name}:{number}"
            if values in seen:  # one object labelled twice: Ultralytics drops the copy too
                repeats.append(ann_id)
                continue
            seen.add(values)
            annotation = line_annotation(line, record, len(categories))
            if isinstance(annotation, str):
                groups.reject(record.image_id, ann_id, annotation)
            else:
                groups.add(number, annotation | {"id": ann_id})
    if repeats:
        log.warning(
            "%s: %d label lines repeat an earlier line of their file and were dropped, e.g. %s",
            labels_uri,
            len(repeats),
            repeats[0],
        )
    return groups.dataset(categories, labels_uri, cfg.on_bad_sample)


def _check_label_files(
    label_files: set[str], records: list[ImageRecord], labels_uri: str, images_uri: str
) -> None:
    """Label files that name no image are a sign of the wrong folder (or of images in a format
    not read here): all of them is an error, some a warning; no label file at all a warning."""
    stems = {record.image_id for record in records}
    unmatched = sorted(uri for uri in label_files if uri.rsplit("/", 1)[-1][: -len(".txt")] not in stems)
    if label_files and len(unmatched) == len(label_files):
        raise ValueError(
            f"none of the {len(label_files)} label files in {labels_uri} names an image in {images_uri} "
            f"(e.g. {unmatched[0]}): the wrong data.labels_dir or data.images_dir?"
        )
    if unmatched:
        log.warning(
            "%s: %d label files name no image in %s (e.g. %s); they are not read",
            labels_uri,
            len(unmatched),
            images_uri,
            unmatched[0],
        )
    if not label_files:
        log.warning("%s holds no label files: every image trains without objects", labels_uri)


def read_names(names_uri: str) -> list[dict]:
    """The categories (``id`` the 0-based class, ``name``) of a ``data.yaml``: its ``names`` (a
    list, or a mapping of 0, 1, ... to names), or ``class<k>`` for each of its ``nc``."""
    try:
        spec = yaml.safe_load(storage.read_text(names_uri)) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{names_uri} is not a YOLO data.yaml (YAML with names:): {err}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{names_uri} is not a YOLO data.yaml (a mapping with names:)")
    if "kpt_shape" in spec:  # pose lines hold keypoints after the box: not boxes nor polygons
        raise ValueError(
            f"{names_uri} describes a pose dataset (kpt_shape): only boxes and polygons are read"
        )
    names = spec.get("names")
    if names is None and isinstance(spec.get("nc"), int) and spec["nc"] > 0:
        names = [f"class{k}" for k in range(spec["nc"])]
    if isinstance(names, dict):
        try:
            by_index = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            by_index = {}
        if sorted(by_index) == list(range(len(names))):
            names = [by_index[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ValueError(
            f"{names_uri}: names is {names!r}; YOLO class names are a list, or a mapping of 0, 1, ... "
            "to names"
        )
    return [{"id": k, "name": str(name)} for k, name in enumerate(names)]


def line_annotation(line: str, record: ImageRecord, num_classes: int) -> dict | str:
    """The COCO annotation (pixels) one label line of ``record`` stands for, or why it cannot be
    one."""
    values = line.split()
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return f"{line.strip()[:60]!r} is not numbers: a line is {LINE_SHAPES}"
    coords = numbers[1:]
    if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
        return f"has {len(values)} values: a line is {LINE_SHAPES}"
    label = numbers[0]
    if not label.is_integer() or not 0 <= label < num_classes:
        return f"class {values[0]} is not one of the {num_classes} names (0-{num_classes - 1})"
    low, high = -COORDINATE_MARGIN, 1.0 + COORDINATE_MARGIN
    if not all(low <= c <= high for c in coords):  # NaN fails too
        bad = next(text for c, text in zip(coords, values[1:], strict=True) if not low <= c <= high)
        return f"coordinate {bad} is outside [0, 1]: YOLO coordinates are normalised to the image"
    width, height = record.width, record.height
    if len(coords) == 4:
        cx, cy, w, h = coords
        bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
        return {"image_id": record.image_id, "category_id": int(label), "bbox": bbox}
    xs, ys = [x * width for x in coords[0::2]], [y * height for y in coords[1::2]]
    polygon = [v for point in zip(xs, ys, strict=True) for v in point]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"image_id": record.image_id, "category_id": int(label), "bbox": bbox, "segmentation": [polygon]}


def _read_image(
    record: ImageRecord, labels_uri: str, label_files: set[str], max_pixels: int
) -> tuple[ImageRecord, str | None, str | None]:
    """``record`` with its displayed size, its label file's text (None: no file) and, when the
    header or the label file cannot be read, why (a storage failure raises)."""
    fs, path = storage.filesystem(record.image_uri)
    with storage.access(record.image_uri, "read"), fs.open(path, "rb") as handle:
        try:  # inside access, which would take a bad image for a storage failure
            width, height = displayed_header_size(handle, record.image_uri, max_pixels)
        except BadImageError as err:
            return record, None, str(err)
    label_uri = storage.join(labels_uri, _stem_file(record))
    text = None
    if label_uri in label_files:
        try:  # a BOM (utf-8-sig) is read as none: some editors on Windows write one
            text = storage.read_bytes(label_uri).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            return record, None, f"label file {label_uri} is not UTF-8 text: {err}"
    return replace(record, width=width, height=height), text, None


def _stem_file(record: ImageRecord) -> str:
    return f"{record.image_id}.txt"
