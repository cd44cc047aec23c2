"""YOLO-format datasets (``data.format: yolo``) read to the same annotations and targets as the
same data written as COCO json, with the same rules for bad input (Ray-free)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.yolo_layout import write_yolo_copy
from vfmkd_ray.config import dump_config, load_config, validate_config
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.coco_scores import box_results, ground_truth, score
from vfmkd_ray.data.config import DataConfig, SyntheticConfig
from vfmkd_ray.data.samples import load_sample
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.data.yolo import read_names


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[DataConfig, DataConfig]:
    """The same 6 synthetic images (boxes and polygons), as COCO json and as YOLO labels."""
    root = tmp_path_factory.mktemp("coco")
    coco = DataConfig(root=str(root), synthetic=SyntheticConfig(num_images=6, image_size=96, max_shapes=4))
    write_synthetic_coco(coco)
    write_yolo_copy(root, root.parent / "yolo")
    return coco, DataConfig(root=str(root.parent / "yolo"), format="yolo")


def test_yolo_labels_read_to_the_annotations_and_targets_of_the_same_coco_data(both):
    coco_cfg, yolo_cfg = both
    coco, yolo = read_dataset(coco_cfg), read_dataset(yolo_cfg)
    assert [c["name"] for c in yolo.categories] == [c["name"] for c in coco.categories]
    assert [(r.image_id, r.width, r.height) for r in yolo.records] == [
        (str(Path(r.image_uri).stem), r.width, r.height) for r in coco.records
    ]
    assert yolo.num_masks == coco.num_masks > 0 and not yolo.bad_samples
    for coco_record, yolo_record in zip(coco.records, yolo.records, strict=True):
        ours, theirs = yolo.annotations[yolo_record.image_id], coco.annotations[coco_record.image_id]
        assert ours.labels == theirs.labels
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1e-9)
        kwargs = {"input_size": 64, "aug_seed": 0, "policy": "none", "max_objects": 8, "max_masks": 8}
        ours_sample = load_sample(yolo_record.image_uri, ours, **kwargs)
        theirs_sample = load_sample(coco_record.image_uri, theirs, **kwargs)
        for column in ("labels", "masks"):
            np.testing.assert_array_equal(ours_sample[column], theirs_sample[column], err_msg=column)
        for column in ("boxes", "mask_box"):
            np.testing.assert_allclose(ours_sample[column], theirs_sample[column], atol=1e-4, err_msg=column)


def test_yolo_ground_truth_scores_as_the_coco_files_own(both):
    """Without a COCO file, the scorer builds the ground truth from the labels: a perfect detector
    scores 1.0 on both, and the same noisy one the same."""
    coco_cfg, yolo_cfg = both
    scored = []
    for dataset in (read_dataset(coco_cfg), read_dataset(yolo_cfg)):
        truth = ground_truth(dataset, dataset.records)
        results = []
        for record in dataset.records:
            found = dataset.annotations[record.image_id]
            boxes = np.asarray(found.boxes) + np.array([1.0, -1.0, 2.0, 0.5])  # a little off
            scores = np.linspace(0.9, 0.5, len(boxes))
            file_id = truth.image_ids[record.image_id]
            results += box_results(file_id, boxes, scores, found.labels, dataset.categories)
        scored.append(score(truth, results, "bbox"))
    assert scored[0] == pytest.approx(scored[1], abs=1e-9)
    assert 0 < scored[1]["mAP"] < 1


def _bad_copy(both, tmp_path: Path, label_text: str, **overrides) -> DataConfig:
    coco_cfg, _ = both
    root = write_yolo_copy(Path(coco_cfg.root), tmp_path / "yolo")
    (root / "labels" / "000002.txt").write_text(label_text)
    return DataConfig(root=str(root), format="yolo", **overrides)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("0 0.5 0.5 0.2", "has 4 values"),
        ("0 0.5 0.5 0.2 0.2 0.3", "has 6 values"),
        ("zero 0.5 0.5 0.2 0.2", "is not numbers"),
        ("0 0.5 1.5 0.2 0.2", "coordinate 1.5 is outside [0, 1]"),
        ("0 0.5 1.02 0.2 0.2", "coordinate 1.02 is outside [0, 1]"),
        ("0 0.5 nan 0.2 0.2", "coordinate nan is outside [0, 1]"),
        ("7 0.5 0.5 0.2 0.2", "class 7 is not one of the 3 names (0-2)"),
        ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not one of the 3 names"),
    ],
)
def test_a_bad_label_line_is_a_bad_sample_named_by_file_and_line(both, tmp_path, line, says):
    cfg = _bad_copy(both, tmp_path, f"0 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(ValueError, match=r"image 000002, annotation labels/000002\.txt:3: ") as raised:
        read_dataset(cfg)
    assert says in str(raised.value)
    skipped = read_dataset(cfg.model_copy(update={"on_bad_sample": "skip"}))
    assert "000002" not in {r.image_id for r in skipped.records} and len(skipped.records) == 5
    (entry,) = [b for b in skipped.bad_samples if b.image_id == "000002"]
    assert entry.stage == "annotations" and "labels/000002.txt:3" in entry.error


def test_a_missing_or_empty_label_file_is_an_image_without_objects(both, tmp_path):
    cfg = _bad_copy(both, tmp_path, "")
    (Path(cfg.root) / "labels" / "000003.txt").unlink()
    dataset = read_dataset(cfg)
    assert len(dataset.records) == 6 and not dataset.bad_samples
    assert "000002" not in dataset.annotations and "000003" not in dataset.annotations


def test_a_box_with_no_area_left_is_dropped_and_counted_as_in_coco(both, tmp_path):
    cfg = _bad_copy(both, tmp_path, "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0 0.2\n")
    dataset = read_dataset(cfg)
    assert dataset.num_dropped_boxes == 1 and len(dataset.annotations["000002"].boxes) == 1


def test_a_yolo_box_is_normalised_to_the_image_as_displayed(tmp_path):
    """A JPEG stored 80 x 40 with EXIF orientation 6 is displayed 40 x 80: YOLO coordinates (and
    COCO pixels) refer to the displayed image."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (80, 40)).save(buffer, format="JPEG", exif=exif)
    (root / "images" / "rotated.jpg").write_bytes(buffer.getvalue())
    (root / "labels" / "rotated.txt").write_text("1 0.5 0.25 0.5 0.5\n")
    (root / "meta.yaml").write_text("names: {0: cat, 1: dog}\n")
    dataset = read_dataset(DataConfig(root=str(root), format="yolo", annotations="meta.yaml"))
    (record,) = dataset.records
    assert (record.width, record.height) == (40, 80)
    assert dataset.annotations["rotated"].boxes == [[10.0, 0.0, 30.0, 40.0]]
    assert dataset.annotations["rotated"].labels == [1]
    assert [c["name"] for c in dataset.categories] == ["cat", "dog"]


def test_the_labels_folder_follows_ultralytics_rule_and_names_what_is_missing(tmp_path):
    assert DataConfig(format="yolo", images_dir="images/train").yolo_labels_dir() == "labels/train"
    nested = DataConfig(format="yolo", images_dir="coco/images/val2017")
    assert nested.yolo_labels_dir() == "coco/labels/val2017"
    assert DataConfig(format="yolo", images_dir="pics", labels_dir="txt").yolo_labels_dir() == "txt"
    with pytest.raises(ValueError, match="set data.labels_dir"):
        DataConfig(format="yolo", images_dir="pics").yolo_labels_dir()
    assert DataConfig(labels_dir="txt").settings_without_effect() == [
        "labels_dir has no effect: format is coco (labels_dir is for YOLO labels)"
    ]
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text(json.dumps({"names": ["a"]}))
    with pytest.raises(FileNotFoundError, match=r"no YOLO labels folder .*/labels"):
        read_dataset(DataConfig(root=str(tmp_path), format="yolo"))
    (tmp_path / "data.yaml").write_text("names: 3\n")
    with pytest.raises(ValueError, match="names is 3; YOLO class names are a list"):
        read_dataset(DataConfig(root=str(tmp_path), format="yolo"))


def test_the_synthetic_dataset_is_coco_only(tmp_path):
    with pytest.raises(ValueError, match="written as a COCO file: data.format coco"):
        write_synthetic_coco(DataConfig(root=str(tmp_path), format="yolo"))


def test_what_labelling_tools_write_reads_as_ultralytics_reads_it(both, tmp_path, caplog):
    """A BOM, CRLF line ends, a coordinate a hair past 1 (Ultralytics allows 0.01) and a line
    repeated (Ultralytics drops the copy) all read; the repeat is counted in a warning."""
    cfg = _bad_copy(both, tmp_path, "")
    text = "0 0.5 0.5 0.2 0.2\r\n1 0.5 0.5 1.0000001 0.3\r\n0 0.5 0.5 0.2 0.2\r\n"
    (Path(cfg.root) / "labels" / "000002.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    dataset = read_dataset(cfg)
    assert not dataset.bad_samples and dataset.annotations["000002"].labels == [0, 1]
    record = next(r for r in dataset.records if r.image_id == "000002")
    assert dataset.annotations["000002"].boxes[1][2] == record.width, "clipped to the image"
    assert "1 label lines repeat an earlier line" in caplog.text and "labels/000002.txt:3" in caplog.text


def test_an_unreadable_label_file_or_image_header_is_a_bad_sample(both, tmp_path):
    cfg = _bad_copy(both, tmp_path, "")
    (Path(cfg.root) / "labels" / "000002.txt").write_bytes("0 0.5 0.5 0.2 0.2\n".encode("utf-16"))
    (Path(cfg.root) / "images" / "000004.png").write_bytes(b"not an image")
    with pytest.raises(
        ValueError, match=r"image 000002, annotation labels/000002\.txt: label file .* is not UTF-8"
    ):
        read_dataset(cfg)
    skipped = read_dataset(cfg.model_copy(update={"on_bad_sample": "skip"}))
    reasons = {b.image_id: b.error for b in skipped.bad_samples}
    assert set(reasons) == {"000002", "000004"} and "not in an image format PIL can read" in reasons["000004"]
    small = cfg.model_copy(update={"on_bad_sample": "skip", "max_image_pixels": 1024})
    assert {b.image_id for b in read_dataset(small).bad_samples} == {
        "000001",
        "000002",
        "000003",
        "000004",
        "000005",
        "000006",
    }


def test_label_files_that_name_no_image_are_refused_when_none_does(both, tmp_path, caplog):
    cfg = _bad_copy(both, tmp_path, "")
    (Path(cfg.root) / "labels" / "extra.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert len(read_dataset(cfg).records) == 6 and "1 label files name no image" in caplog.text
    for label in (Path(cfg.root) / "labels").glob("0*.txt"):
        label.unlink()
    with pytest.raises(ValueError, match="none of the 1 label files .* names an image"):
        read_dataset(cfg)


@pytest.mark.parametrize(
    ("spec", "names"),
    [("names: {'0': a, '1': b}", ["a", "b"]), ("nc: 2", ["class0", "class1"]), ("names: [a, b]", ["a", "b"])],
)
def test_the_names_of_a_data_yaml(tmp_path, spec, names):
    (tmp_path / "data.yaml").write_text(spec + "\n")
    assert [c["name"] for c in read_names(str(tmp_path / "data.yaml"))] == names


def test_a_pose_data_yaml_is_refused(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [person]\nkpt_shape: [17, 3]\n")
    with pytest.raises(ValueError, match="pose dataset"):
        read_names(str(tmp_path / "data.yaml"))


def test_the_names_file_default_survives_a_dump(tmp_path):
    """Workers, Tune trials and ``vfmkd eval RUN/resolved_config.yaml`` rebuild the config from its
    dump, where every field is set."""
    cfg = load_config(None, ["data.format=yolo"])
    assert validate_config(yaml.safe_load(dump_config(cfg))).data.annotations == "data.yaml"
