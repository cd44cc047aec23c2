"""Several teachers at once: stores joined by image id, per-teacher features, losses and policies."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import build_store_in_process, lose_part, read_part_rows
from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.pipeline import ONLINE_COLUMN, SampleSpec, TrainSampleDecoder, teacher_column
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.ensemble import at_input_size
from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import StoreDataset, read_manifest
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.row_index import StoreRowIndex
from vfmkd_ray.store.schema import feature_column
from vfmkd_ray.training.batch_feed import BatchFeed
from vfmkd_ray.training.step import model_step, optimizer_step
from vfmkd_ray.training.teacher_stores import check_stores, usable_images

SAM_EMBED = teacher_column("sam", feature_column("image_embed"))
DINO_TOKENS = teacher_column("dino", feature_column("patch_tokens"))


@pytest.fixture
def two_stores(two_teacher_config):
    """The SAM (primary) and DINOv2 stores of the two-teacher config, built in this process."""
    sam = build_store_in_process(two_teacher_config, "sam")
    dino = build_store_in_process(two_teacher_config, "dino")
    return (
        StoreDataset("sam", sam, read_manifest(sam)),
        StoreRowIndex.build(StoreDataset("dino", dino, read_manifest(dino))),
    )


def _all_rows(dataset: str) -> dict[str, dict]:
    """image_id -> that row's columns, over every part."""
    by_id = {}
    for part in list_parts(dataset):
        rows = read_part_rows(part)
        for i, image_id in enumerate(rows["image_id"]):
            by_id[str(image_id)] = {name: column[i] for name, column in rows.items()}
    return by_id


def test_row_index_reads_single_rows_by_id(two_stores):
    _, dino = two_stores
    assert len(dino.locations) == 16
    part = list_parts(dino.store.uri)[0]
    assert pq.ParquetFile(part).num_row_groups == 4, "one row per row group"
    stored = _all_rows(dino.store.uri)
    wanted = ["7", "2", "13", "7"]
    batch = dino.read_rows([(i, 0) for i in wanted])
    assert batch["image_id"] == wanted
    for position, image_id in enumerate(wanted):
        assert batch[feature_column("patch_tokens")][position] == stored[image_id]["feat.patch_tokens"]
        assert batch["aug_seed"][position] == stored[image_id]["aug_seed"]
    with pytest.raises(FeatureStoreError, match=rf"image 99 \(view 0\) has no row in store {dino.store.uri}"):
        dino.read_rows([("99", 0)])


def _decode(primary, others, rows, **kwargs):
    decoder = TrainSampleDecoder(primary, SampleSpec(64, "none"), others=others, **kwargs)
    return next(decoder(rows))


def test_decoder_joins_the_other_teachers_rows_by_id(two_stores):
    sam, dino = two_stores
    rows = read_part_rows(list_parts(sam.uri)[0])
    ids = [str(i) for i in rows["image_id"]]
    out = _decode(sam, (dino,), rows)
    assert out[ONLINE_COLUMN].tolist() == [0, 0, 0, 0]
    assert out[SAM_EMBED].shape == (4, 256, 4, 4) and out[DINO_TOKENS].shape == (4, 384, 4, 4)
    stored = _all_rows(dino.store.uri)
    for position, image_id in enumerate(ids):
        expected = codecs.stored_array(stored[image_id]["feat.patch_tokens"], (384, 4, 4), "fp16")
        np.testing.assert_array_equal(out[DINO_TOKENS][position], expected)

    # An image the other store lacks runs both teachers online (missing_features: online).
    partial = StoreRowIndex(
        dino.store, dino.parts, {k: v for k, v in dino.locations.items() if k != (ids[1], 0)}
    )
    out = _decode(sam, (partial,), rows)
    assert out[ONLINE_COLUMN].tolist() == [0, 1, 0, 0]
    assert not out[DINO_TOKENS][1].any() and not out[SAM_EMBED][1].any()

    rows["aug_seed"][0] = rows["aug_seed"][0] + 1
    with pytest.raises(FeatureStoreError, match=f"image {ids[0]} was augmented with seed"):
        _decode(sam, (dino,), rows)


def test_two_teachers_online_and_offline_feed_one_kd_step(two_teacher_config, two_stores):
    sam, dino = two_stores
    decoded = _decode(sam, (dino,), read_part_rows(list_parts(sam.uri)[0]))
    decoded[ONLINE_COLUMN] = np.array([0, 1, 0, 1], np.uint8)
    teachers = {alias: build_teacher(t) for alias, t in two_teacher_config.teachers.items()}
    parts = build_model(two_teacher_config)
    assert parts.terms["dino_s32"].teacher_layers == ("dino/patch_tokens",)
    keys = frozenset(parts.teacher_keys())
    feed = BatchFeed(
        keys, {"sam": "fp16", "dino": "fp16"}, torch.device("cpu"), 4, 1, stored_teachers=teachers
    )
    batch = feed.to_batch({k: torch.from_numpy(np.asarray(v)) for k, v in decoded.items()})
    assert set(batch.teacher_features) == {"sam/image_embed", "dino/patch_tokens"}
    # Each teacher sees the batch at its own input size: DINOv2 at 56 px, SAM at the 64 px canvas.
    live = teachers["dino"](at_input_size(batch.images_BCHW, 56))["patch_tokens"]
    torch.testing.assert_close(batch.teacher_features["dino/patch_tokens"][[1, 3]], live[[1, 3]])
    # Stored rows came from the 56 px letterbox, the online ones from the resized 64 px canvas.
    cosine = torch.nn.functional.cosine_similarity(
        batch.teacher_features["dino/patch_tokens"][[0, 2]].flatten(1), live[[0, 2]].flatten(1)
    )
    assert cosine.min() > 0.9

    optimizer = torch.optim.AdamW(parts.model.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    history = []
    for _ in range(15):
        out = model_step(parts.model, batch, parts)
        optimizer_step(out["loss"], optimizer, scaler, list(parts.model.parameters()), 10.0)
        history.append({k: float(v.detach()) for k, v in out.items()})
    assert {"cos/feature_mse", "cos/dino_s32", "loss/dino_s32"} <= set(history[0])
    assert history[-1]["cos/dino_s32"] > history[0]["cos/dino_s32"] + 0.2
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def test_images_missing_from_another_teachers_store_follow_the_policy(two_teacher_config, tmp_path):
    build_store_in_process(two_teacher_config, "sam")
    build_store_in_process(two_teacher_config, "dino")
    stores = check_stores(two_teacher_config, read_image_records(two_teacher_config.data))
    lost = lose_part(stores.others[0].store.uri, 0)
    stores = check_stores(two_teacher_config, read_image_records(two_teacher_config.data))

    def with_policy(policy: str):
        cfg = two_teacher_config.model_copy(
            update={"data": two_teacher_config.data.model_copy(update={"missing_features": policy})}
        )
        log = BadSampleLog(str(tmp_path / policy))
        return usable_images(cfg, stores, read_image_records(cfg.data), log), log

    with pytest.raises(FeatureStoreError, match="4 images of .* have no feature row in .*dinov2_vits14/56"):
        with_policy("error")
    skipped, log = with_policy("skip")
    assert skipped.excluded == lost and len(skipped.ids) == 12 and not skipped.online_only
    assert {s.image_id for s in log.read_all()} == lost
    assert all("dinov2_vits14/56" in s.error for s in log.read_all())
    online, log = with_policy("online")
    assert len(online.ids) == 16 and not online.excluded and not online.online_only
    assert log.count() == 0


def test_a_store_of_another_size_weights_or_layers_is_refused(two_teacher_config):
    build_store_in_process(two_teacher_config, "sam")
    build_store_in_process(two_teacher_config, "dino")
    check_stores(two_teacher_config, read_image_records(two_teacher_config.data))
    bigger = two_teacher_config.model_copy(deep=True)
    bigger.teachers["dino"].input_size = 70
    with pytest.raises(FeatureStoreError, match="no feature store for teacher 'dino' at .*/70"):
        check_stores(bigger, read_image_records(bigger.data))
    other_weights = two_teacher_config.model_copy(deep=True)
    other_weights.teachers["dino"].random_seed = 5
    with pytest.raises(FeatureStoreError, match=r"teacher_weights: store has 'random\(seed=0\)'"):
        check_stores(other_weights, read_image_records(other_weights.data))

    sam2 = two_teacher_config.model_copy(deep=True)
    sam2.teachers["dino"] = TeacherConfig(
        name="sam2_hiera_t", weights="random", input_size=64, layers=["fpn_s16"]
    )
    build_store_in_process(sam2, "dino")
    check_stores(sam2, read_image_records(sam2.data))
    sam2.teachers["dino"].layers = ["fpn_s4", "fpn_s16"]
    with pytest.raises(
        FeatureStoreError, match=r"layers: store has \['fpn_s16'\], run asks for \['fpn_s4', 'fpn_s16'\]"
    ):
        check_stores(sam2, read_image_records(sam2.data))
