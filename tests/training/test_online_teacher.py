"""Online teacher: samples marked online get live teacher features in the worker's batch feed."""

import numpy as np
import torch

from tests.conftest import build_store_in_process, read_part_rows
from vfmkd_ray.data.pipeline import ONLINE_COLUMN, SampleSpec, TrainSampleDecoder, teacher_column
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.store.manifest import StoreDataset, read_manifest
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.schema import feature_column
from vfmkd_ray.training.batch_feed import BatchFeed

SPEC = SampleSpec(input_size=64, augment="none")
STORED_EMBED = teacher_column("sam", feature_column("image_embed"))


def _rows(dataset):
    part = list_parts(dataset)[0]
    return read_part_rows(part)


def _decode(manifest, dataset, rows, ratio):
    outputs = list(TrainSampleDecoder(StoreDataset("sam", dataset, manifest), SPEC, None, ratio)(rows))
    return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}


def test_online_ratio_and_rows_without_features_are_marked_online(tiny_config):
    dataset = build_store_in_process(tiny_config)
    manifest = read_manifest(dataset)
    rows = _rows(dataset)
    assert _decode(manifest, dataset, rows, 0.0)[ONLINE_COLUMN].tolist() == [0, 0, 0, 0]
    assert _decode(manifest, dataset, rows, 1.0)[ONLINE_COLUMN].tolist() == [1, 1, 1, 1]
    rows["feat.image_embed"][2] = b""  # a placeholder row: the image has no stored features
    decoded = _decode(manifest, dataset, rows, 0.0)
    assert decoded[ONLINE_COLUMN].tolist() == [0, 0, 1, 0]
    assert not decoded[STORED_EMBED][2].any()


def test_batch_feed_fills_online_samples_with_the_live_teacher(tiny_config):
    dataset = build_store_in_process(tiny_config)
    manifest = read_manifest(dataset)
    rows = _rows(dataset)
    decoded = _decode(manifest, dataset, rows, 0.0)
    decoded[ONLINE_COLUMN] = np.array([0, 1, 0, 1], np.uint8)
    decoded[STORED_EMBED][[1, 3]] = 0  # what the decoder ships for online rows
    teacher = build_teacher(tiny_config.teachers["sam"])
    keys = frozenset(build_model(tiny_config).teacher_keys())
    feed = BatchFeed(keys, {"sam": "fp16"}, torch.device("cpu"), 4, 1, stored_teachers={"sam": teacher})
    batch = feed.to_batch({key: torch.from_numpy(np.asarray(value)) for key, value in decoded.items()})
    assert batch.num_online == 2
    live = teacher(batch.images_BCHW)["image_embed"]
    torch.testing.assert_close(batch.teacher_features["sam/image_embed"][[1, 3]], live[[1, 3]])
    # Offline rows keep the stored (fp16) values, which match the teacher to fp16 precision.
    torch.testing.assert_close(
        batch.teacher_features["sam/image_embed"][[0, 2]], live[[0, 2]], atol=2e-3, rtol=1e-2
    )


def test_online_draws_differ_between_calls_of_a_pickled_decoder(tiny_config):
    import pickle

    dataset = build_store_in_process(
        tiny_config.model_copy(
            update={
                "data": tiny_config.data.model_copy(
                    update={"synthetic": tiny_config.data.synthetic.model_copy(update={"num_images": 32})}
                )
            }
        )
    )
    manifest = read_manifest(dataset)
    rows = {}
    for part in list_parts(dataset):
        for key, value in read_part_rows(part).items():
            rows[key] = np.concatenate([rows[key], value]) if key in rows else value
    # Ray ships the stage to every task (and every epoch's tasks) as the same pickled bytes.
    shipped = pickle.dumps(TrainSampleDecoder(StoreDataset("sam", dataset, manifest), SPEC, None, 0.5))
    draws = [tuple(next(pickle.loads(shipped)(dict(rows)))[ONLINE_COLUMN].tolist()) for _ in range(4)]
    assert len(set(draws)) > 1, "every epoch drew the same online samples"
