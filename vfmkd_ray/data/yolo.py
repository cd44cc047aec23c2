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
coordinate outside [0, 1], or a class ``names`` lacks makes its image a bad sample, named by label
file and line (``data.on_bad_sample``); a degenerate box is dropped and counted. An image without a
label file, or with an empty one, has no objects (a background image, as Ultralytics reads it).

Scores need no COCO file: ``data.coco_scores`` builds the ground truth from these annotations.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import yaml
from PIL import Image

from vfmkd_ray import storage
from vfmkd_ray.data.annotation_checks import CategoryLabels
from vfmkd_ray.data.coco import AnnotationGroups, CocoDataset, ImageRecord, folder_records
from vfmkd_ray.data.config import DataConfig

READ_THREADS = 16  # header and label reads in flight: object storage answers each in ~10-50 ms
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # displayed with width and height swapped
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
    names_file = cfg.yolo_names_file()
    if names_file is None:
        raise ValueError("data.format yolo reads the class names from data.annotations (a data.yaml)")
    categories = read_names(storage.join(root, names_file))
    if not storage.is_dir(labels_uri):
        raise FileNotFoundError(
            f"no YOLO labels folder {labels_uri} (data.labels_dir; by default data.images_dir with its "
            "images folder named labels)"
        )
    records = folder_records(images_uri, root)
    label_files = set(storage.list_files(labels_uri, "*.txt"))
    with ThreadPoolExecutor(READ_THREADS) as pool:
        read = pool.map(lambda r: _read_image(r, labels_uri, label_files), records)
        sized = list(read)
    records = [record for record, _, _ in sized]
    groups = AnnotationGroups(records, CategoryLabels(categories))
    for record, text, problem in sized:
        label_name = f"{_relative(root, labels_uri)}/{_stem_file(record)}"
        if problem is not None:
            groups.reject(record.image_id, label_name, problem)
            continue
        for number, line in enumerate((text or "").splitlines(), start=1):
            if not line.strip():
                continue
            ann_id = f"{label_name}:{number}"
            annotation = line_annotation(line, record, len(categories))
            if isinstance(annotation, str):
                groups.reject(record.image_id, ann_id, annotation)
            else:
                groups.add(number, annotation | {"id": ann_id})
    return groups.dataset(categories, labels_uri, cfg.on_bad_sample)


def read_names(names_uri: str) -> list[dict]:
    """The categories (``id`` the 0-based class, ``name``) of a ``data.yaml``'s ``names``."""
    try:
        names = (yaml.safe_load(storage.read_text(names_uri)) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as err:
        raise ValueError(f"{names_uri} is not a YOLO data.yaml (a mapping with names:): {err}") from None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[k] for k in range(len(names))]
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
    if not all(0.0 <= c <= 1.0 for c in coords):  # NaN fails too
        bad = next(c for c in coords if not 0.0 <= c <= 1.0)
        return f"coordinate {bad:g} is outside [0, 1]: YOLO coordinates are normalised to the image"
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
    record: ImageRecord, labels_uri: str, label_files: set[str]
) -> tuple[ImageRecord, str | None, str | None]:
    """``record`` with its displayed size, its label file's text (None: no file) and, when the
    header cannot be read, why."""
    try:
        width, height = displayed_size(record.image_uri)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's parsers raise these
        return record, None, f"cannot read the image's size from its header: {err}"
    label_uri = storage.join(labels_uri, _stem_file(record))
    text = storage.read_text(label_uri) if label_uri in label_files else None
    return replace(record, width=width, height=height), text, None


def displayed_size(uri: str) -> tuple[int, int]:
    """(width, height) of an image as displayed, from its header: EXIF orientations 5-8 swap them."""
    fs, path = storage.filesystem(uri)
    with storage.access(uri, "read"), fs.open(path, "rb") as handle, Image.open(handle) as image:
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
            return height, width
        return width, height


def _stem_file(record: ImageRecord) -> str:
    return f"{record.image_id}.txt"


def _relative(root: str, uri: str) -> str:
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri
