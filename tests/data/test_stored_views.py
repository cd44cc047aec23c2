"""Stored augmented views (``store.augment: yolov8``, ``under_augmentation: views``), Ray-free: the
precompute stores each view's canvas as the teacher saw it with its record; a training stream of
that view replays the record so that the student's pixels equal the teacher's canvas, and the live
teacher on the student's canvas equals the stored row within the codec's error (random SAM at
128 px); a store of other draws is refused per row and per manifest; the epochs take the views in
turn and the close-mosaic ones the plain view 0."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.conftest import Epoch, build_store_in_process, load_config, tiny_overrides
from vfmkd_ray.config import ConfigError
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.data.augment.recipe import yolov8_spec
from vfmkd_ray.data.augment.record import AugmentRecord, DrawContext, draw_record
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import read_dataset, read_image_records
from vfmkd_ray.data.image_loader import view_canvas
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.pipeline import ANNOTATIONS_COLUMN, SampleSpec, TrainSampleDecoder, teacher_column
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.targets import LABELS_COLUMN
from vfmkd_ray.data.views import (
    VIEW_CONTEXT_COLUMN,
    VIEW_RECORD_COLUMN,
    VIEW_SOURCES_COLUMN,
    view_contexts,
    view_draws,
)
from vfmkd_ray.data.warped_features import covered_column
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.store.augment_fidelity import measure_augment_fidelity
from vfmkd_ray.store.errors import StoreMadeOtherwiseError
from vfmkd_ray.store.index import read_index
from vfmkd_ray.store.manifest import StoreDataset, read_manifest
from vfmkd_ray.store.precompute import precompute_teacher
from vfmkd_ray.store.ray_source import PART_COLUMN, PART_TEXTS_COLUMN, ROW_GROUPS_COLUMN, read_parts
from vfmkd_ray.store.reader import FeatureStoreError, decode_row
from vfmkd_ray.store.verify import teacher_config, verify_store
from vfmkd_ray.training.augmented_targets import augmentation, refuse_views_misuse
from vfmkd_ray.training.read_plan import plan_reads
from vfmkd_ray.training.streams import train_stream, train_view
from vfmkd_ray.training.teacher_stores import _complete

VIEWS = [
    "store.augment=yolov8",
    "store.views_per_image=3",
    "data.augment.pipeline=yolov8",
    "data.augment.close_mosaic_epochs=1",
    "teachers.sam.under_augmentation=views",
    "train.epochs=3",
]


@pytest.fixture(scope="module")
def views_store(tmp_path_factory):
    """A store of 3 views per image (plain, 2 augmented) by random SAM at 128 px, 8 images."""
    root = tmp_path_factory.mktemp("views")
    overrides = [*tiny_overrides(root), *VIEWS, "teachers.sam.input_size=128", "data.synthetic.num_images=8"]
    cfg = load_config(None, overrides)
    dataset = build_store_in_process(cfg)
    return cfg, StoreDataset("sam", dataset, read_manifest(dataset))


def _stream_rows(cfg, store, view: int, contexts=None):
    """The rows a training stream of ``view`` hands its decode stage (read stage included)."""
    data = read_dataset(cfg.data)
    ids = [r.image_id for r in data.records if not is_validation(r.image_id, cfg.data.val_fraction)]
    labels = {i: data.annotations[i].to_json() for i in ids if i in data.annotations}
    if contexts is None:
        uris = {r.image_id: r.image_uri for r in data.records}
        contexts = view_contexts(view_draws(cfg, [r.image_id for r in data.records]), ids, view, uris, labels)
    plan = plan_reads(read_index(store.uri, store.manifest.index_sha256), store.uri, ids, view)
    texts = [json.dumps({ANNOTATIONS_COLUMN: labels, VIEW_CONTEXT_COLUMN: contexts}) for _ in plan.row_groups]
    items = pa.table(
        {
            PART_COLUMN: list(plan.row_groups),
            ROW_GROUPS_COLUMN: list(plan.row_groups.values()),
            PART_TEXTS_COLUMN: texts,
        }
    )
    rows = read_parts(items)
    return {name: np.array(rows.column(name).to_pylist(), dtype=object) for name in rows.column_names}


def _decode(cfg, store, rows, epoch=0, pipeline=None):
    spec = SampleSpec(cfg.input_size, cfg.store.augment, 16, 0, pipeline or augmentation(cfg, 16))
    [out] = list(TrainSampleDecoder(store, spec, position=Epoch(epoch))(rows))
    return out


def test_the_student_trains_on_the_canvas_the_teacher_saw_and_its_stored_map(views_store):
    cfg, store = views_store
    manifest = store.manifest
    ids = [r.image_id for r in read_dataset(cfg.data).records]
    training = [i for i in ids if not is_validation(i, cfg.data.val_fraction)]
    assert 0 < len(training) < len(ids), "the tiny dataset has both splits"
    # The augmented views are of the training images only; validation keeps its plain view 0.
    assert manifest.row_count == len(ids) + 2 * len(training) and manifest.view_spec["recipe"] == "n"
    rows = _stream_rows(cfg, store, view=1)
    out = _decode(cfg, store, rows)
    spec = yolov8_spec("n", 0)
    teacher = build_teacher(
        load_config(None, [*tiny_overrides("x"), "teachers.sam.input_size=128"]).teachers["sam"]
    )
    assert len(out["image"]) == len(rows["image_id"]) >= 4
    for n, image_id in enumerate(rows["image_id"]):
        record = AugmentRecord.from_json(rows[VIEW_RECORD_COLUMN][n])
        assert record.mosaic and len(set(record.image_ids())) > 1
        assert not any(is_validation(i, cfg.data.val_fraction) for i in record.image_ids()[1:])
        # The teacher's canvas, rendered again from the stored row alone, is the student's pixels.
        seen = view_canvas(rows[VIEW_RECORD_COLUMN][n], rows[VIEW_SOURCES_COLUMN][n], image_id, 128, spec)
        np.testing.assert_array_equal(out["image"][n], seen)
        with torch.no_grad():
            live = teacher(normalize(torch.from_numpy(out["image"][n])[None]))
        for layer in manifest.layers:
            stored = decode_row(rows, n, manifest, store.uri)[f"feat.{layer}"].astype(np.float32)
            expected = live[layer][0].numpy()
            assert (
                out[teacher_column("sam", f"feat.{layer}")][n].tobytes()
                == stored.astype(np.float16).tobytes()
            )
            np.testing.assert_allclose(stored, expected, atol=2e-3 * np.abs(expected).max() + 1e-3)
            assert out[teacher_column("sam", covered_column(layer))][n].all(), "a view covers its canvas"
    # Mosaics carry their partners' boxes.
    assert (out[LABELS_COLUMN] >= 0).sum() > 0
    # verify replays every row, the views' canvases included, against the live teacher.
    report = verify_store(store.uri, sample=manifest.row_count)
    assert report.passed and report.sampled == manifest.row_count and report.min_cosine > 0.999


def test_verify_augment_measures_the_stored_views_and_warps_the_plain_view(views_store):
    _, store = views_store
    report = measure_augment_fidelity(store.uri, 3, teacher_config(store.manifest, None), student_size="n")
    for layer in report.layers:
        assert len(layer.ways["view"].cosines) == 3 and layer.ways["view"].cosine > 0.999
        assert layer.ways["view"].relative_error < 0.01
        # The warp reads the plain view 0's maps, never an augmented canvas's.
        assert layer.ways["warp (geometry)"].cosine > layer.ways["plain"].cosine
    assert any(line.split()[1] == "view" for line in report.lines()[1:])


def test_redraw_keeps_the_view_geometry_and_draws_fresh_photometrics(views_store):
    cfg, store = views_store
    rows = _stream_rows(cfg, store, view=2)
    replayed = _decode(cfg, store, rows)
    pipeline = augmentation(cfg, 16)
    redrawn = _decode(
        cfg, store, rows, pipeline=type(pipeline)(**{**vars(pipeline), "view_photometric": "redraw"})
    )
    np.testing.assert_array_equal(replayed[LABELS_COLUMN], redrawn[LABELS_COLUMN])
    assert not np.array_equal(replayed["image"], redrawn["image"])
    features = teacher_column("sam", f"feat.{next(iter(store.manifest.layers))}")
    np.testing.assert_array_equal(replayed[features], redrawn[features])


def test_a_view_of_another_canvas_is_refused_naming_the_image(views_store):
    cfg, store = views_store
    other = load_config(None, [*tiny_overrides("x"), *VIEWS, "seed=7", "data.synthetic.num_images=8"])
    data = read_dataset(cfg.data)
    ids = [r.image_id for r in data.records]
    uris = {r.image_id: r.image_uri for r in data.records}
    contexts = view_contexts(view_draws(other, ids), ids, 1, uris, {})
    rows = _stream_rows(cfg, store, view=1, contexts=contexts)
    with pytest.raises(FeatureStoreError, match=f"image {rows['image_id'][0]}: store .* another canvas"):
        _decode(cfg, store, rows)


def test_a_student_at_another_size_replays_the_view_at_its_own(views_store):
    """A view replayed at another size is the same canvas at that size, up to resampling: what a
    teacher of another input size than the student's sees (records are drawn at the student's size
    and scaled, ``AugmentRecord.at_size``). Here the store's records are at 128 px and the replay at
    64."""
    cfg, store = views_store
    rows = _stream_rows(cfg, store, view=1)
    from vfmkd_ray.data.augment.block import BlockAugmentation

    pipeline = BlockAugmentation.yolov8("n", 1, 0, 3, 64, 16)
    out = _decode(cfg, store, rows, pipeline=pipeline)
    assert out["image"].shape[-2:] == (64, 64)
    spec = yolov8_spec("n", 0)
    for n, image_id in enumerate(rows["image_id"]):
        seen = view_canvas(rows[VIEW_RECORD_COLUMN][n], rows[VIEW_SOURCES_COLUMN][n], image_id, 128, spec)
        halved = seen.reshape(3, 64, 2, 64, 2).astype(np.float32).mean(axis=(2, 4))
        assert np.abs(out["image"][n].astype(np.float32) - halved).mean() < 12.0


def test_a_missing_partner_names_itself_and_its_sample_and_a_store_of_other_canvases_is_never_skipped(
    views_store, tmp_path
):
    cfg, store = views_store
    rows = _stream_rows(cfg, store, view=1)
    contexts = [json.loads(text) for text in rows[VIEW_CONTEXT_COLUMN]]
    own = str(rows["image_id"][0])
    partner = next(i for i in contexts[0]["sources"] if i != own)
    contexts[0]["sources"][partner][0] = str(tmp_path / "gone.png")
    rows[VIEW_CONTEXT_COLUMN][0] = json.dumps(contexts[0])
    log = BadSampleLog(str(tmp_path / "bad"))
    spec = SampleSpec(cfg.input_size, cfg.store.augment, 16, 0, augmentation(cfg, 16))
    [out] = list(TrainSampleDecoder(store, spec, log, position=Epoch(0))(rows))
    assert len(out["image"]) == len(rows["image_id"]) - 1
    [bad] = log.read_all()
    assert bad.image_id == own and f"mosaic partner {partner} of a view of image {own}" in bad.error
    with pytest.raises(BadImageError, match=f"mosaic partner {partner} of a view of image {own}"):
        _decode(cfg, store, rows)
    # Another store's canvases are wrong for every row: refused even under a skip policy.
    rows = _stream_rows(cfg, store, view=1)
    rows[VIEW_RECORD_COLUMN][1] = rows[VIEW_RECORD_COLUMN][0]
    with pytest.raises(StoreMadeOtherwiseError, match="another canvas"):
        list(TrainSampleDecoder(store, spec, log, position=Epoch(0))(rows))


def test_a_store_of_views_is_refused_for_another_dataset_and_completes_per_split(views_store):
    cfg, store = views_store
    records = read_image_records(cfg.data)
    with pytest.raises(FeatureStoreError, match="mosaic partners were drawn from another dataset"):
        precompute_teacher(cfg, "sam", records[:-1])
    index = read_index(store.uri, store.manifest.index_sha256)
    ids = index.column("image_id").to_pylist()
    training = next(i for i in ids if not is_validation(i, cfg.data.val_fraction))
    assert _complete(store.manifest, ids) == set(ids)
    lost = list(ids)
    lost.remove(training)  # one of its augmented views is gone
    assert _complete(store.manifest, lost) == set(ids) - {training}


def test_a_mixup_view_names_every_image_on_its_canvas_and_scales_whole(tmp_path):
    """The l recipe draws MixUp: its view's context carries the mixed-in sample's images too, and
    the record scales with its MixUp record."""
    cfg = load_config(None, [*tiny_overrides(tmp_path), *VIEWS, "student.size=l"])
    ids = [str(i) for i in range(200)]
    draws = view_draws(cfg, ids)
    mixed = next(r for r in (draws.record(i, 1) for i in ids) if r.mixup_with is not None)
    assert set(mixed.mixup_with.image_ids()) <= set(mixed.image_ids()) and len(mixed.image_ids()) == 8
    uris = {i: f"{i}.png" for i in ids}
    context = json.loads(view_contexts(draws, [mixed.image_id], 1, uris, {})[mixed.image_id])
    assert set(context["sources"]) == set(mixed.image_ids())
    double = mixed.at_size(2 * mixed.size)
    assert double.mixup_with.size == 2 * mixed.size
    assert double.mixup_with.matrix[2] == pytest.approx(2 * mixed.mixup_with.matrix[2])


def test_epochs_take_the_augmented_views_in_turn_and_close_mosaic_the_plain_one(tmp_path):
    cfg = load_config(None, [*tiny_overrides(tmp_path), *VIEWS, "train.epochs=5"])
    assert [train_view(cfg, e) for e in range(5)] == [1, 2, 1, 2, 0]
    assert train_stream(cfg, 4) == "train.view0"


def test_records_scale_to_the_student_size(tmp_path):
    spec = yolov8_spec("s", 0)
    record = draw_record(spec, DrawContext(0, 1, 2, 64), "a", ["a", "b", "c"])
    double = record.at_size(128)
    assert record.at_size(64) is record and double.size == 128
    assert double.center == (record.center[0] * 2, record.center[1] * 2)
    assert double.matrix[2] == pytest.approx(record.matrix[2] * 2) and double.matrix[0] == record.matrix[0]
    assert double.at_size(64).matrix == pytest.approx(record.matrix)


def test_views_are_refused_where_the_run_would_draw_other_canvases(tmp_path):
    with pytest.raises(ConfigError, match="store.augment yolov8 stores the plain view 0"):
        load_config(None, [*tiny_overrides(tmp_path), "store.augment=yolov8"])
    plain_store = load_config(None, [*tiny_overrides(tmp_path), *VIEWS[2:]])
    with pytest.raises(ValueError, match="set store.augment=yolov8 and store.views_per_image"):
        refuse_views_misuse(plain_store, ["sam"])
    warped = load_config(None, [*tiny_overrides(tmp_path), *VIEWS, "teachers.sam.under_augmentation=warp"])
    with pytest.raises(ValueError, match="teachers.sam.under_augmentation is warp: set it to views"):
        refuse_views_misuse(warped, ["sam"])
    partial = load_config(None, [*tiny_overrides(tmp_path), *VIEWS, "data.label_fraction=0.5"])
    with pytest.raises(ValueError, match="label_fraction 0.5 leaves training images unlabelled"):
        refuse_views_misuse(partial, ["sam"])
    refuse_views_misuse(load_config(None, [*tiny_overrides(tmp_path), *VIEWS]), ["sam"])
    # A run of another student size draws other views: the manifest's view_spec says so.
    from vfmkd_ray.store.manifest import expected_manifest_fields

    small = expected_manifest_fields(load_config(None, [*tiny_overrides(tmp_path), *VIEWS]), "sam", "w")
    large = expected_manifest_fields(
        load_config(None, [*tiny_overrides(tmp_path), *VIEWS, "student.size=m"]), "sam", "w"
    )
    assert small["view_spec"]["recipe"] == "n" and large["view_spec"]["recipe"] == "m"
    # A store whose canvases PIL drew (before the OpenCV renderer) holds maps of other pixels.
    from vfmkd_ray.store.manifest import Manifest

    pil_drawn = {key: value for key, value in small["view_spec"].items() if key != "renderer"}
    manifest = Manifest.model_validate(
        {
            "schema_version": 3,
            "teacher": "sam",
            "teacher_weights": "w",
            "input_size": 64,
            "layers": {},
            "codec": "fp16",
            "augment": "yolov8",
            "row_count": 0,
            "num_parts": 0,
            "dataset_fingerprint": "d",
            "view_spec": pil_drawn,
        }
    )
    assert manifest.describe_mismatch({"view_spec": small["view_spec"]}) == [
        f"view_spec: store has {pil_drawn!r}, run asks for {small['view_spec']!r}"
    ]
    warned = config_warnings(
        load_config(None, [*tiny_overrides(tmp_path), "data.augment.view_photometric=redraw"])
    )
    assert "data.augment.view_photometric has no effect: no teacher trains on stored views" in warned
