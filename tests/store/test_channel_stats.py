"""Per-channel statistics of a store: measured by each part's writer, merged at finalize, equal to
numpy over every stored value."""

import numpy as np
import pytest

from tests.conftest import build_store_in_process
from vfmkd_ray.store import codecs
from vfmkd_ray.store.channel_stats import ChannelStats, RunningStats
from vfmkd_ray.store.manifest import read_manifest
from vfmkd_ray.store.parts import list_parts, read_part
from vfmkd_ray.store.phi_s import read_phi_s
from vfmkd_ray.store.schema import feature_column, scale_column


@pytest.mark.parametrize("codec", ["fp16", "int8"])
def test_the_manifests_channel_statistics_equal_numpy_over_the_whole_store(tiny_config, codec):
    cfg = tiny_config.model_copy(update={"store": tiny_config.store.model_copy(update={"codec": codec})})
    dataset = build_store_in_process(cfg)
    manifest = read_manifest(dataset)
    [(layer, spec)] = manifest.layers.items()
    values = []
    for part in list_parts(dataset):
        table = read_part(part)
        for data, scale, valid_h, valid_w in zip(
            table.column(feature_column(layer)).to_pylist(),
            table.column(scale_column(layer)).to_pylist(),
            table.column("valid_h").to_pylist(),
            table.column("valid_w").to_pylist(),
            strict=True,
        ):
            scales = np.frombuffer(scale, np.float32) if scale else None
            decoded = codecs.decode(data, spec.shape, codec, scales)
            # The cells whose centre is inside the unpadded image (4 x 4 cells of 16 px at 64 px).
            centres = (np.arange(spec.shape[1]) + 0.5) * 16
            inside = (centres[:, None] < valid_h) & (centres[None, :] < valid_w)
            values.append(decoded[:, inside])
    every = np.concatenate(values, axis=1).astype(np.float64)  # C x (rows * inside positions)
    assert every.shape[1] < 16 * spec.shape[1] * spec.shape[2]  # some images are not square
    stats = manifest.channel_stats[layer]
    assert len(list_parts(dataset)) > 1  # merged across parts
    np.testing.assert_allclose(stats.mean, every.mean(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.std, every.std(axis=1), rtol=1e-9, atol=1e-12)
    # PHI-S, estimated from a sample that here holds every row and cell: the same mean, and every
    # channel of the transformed store has variance 1.
    phi = read_phi_s(dataset, manifest.phi_s)[layer]
    assert manifest.phi_s.rows == 16 and manifest.phi_s.cells[layer] == every.shape[1]
    np.testing.assert_allclose(phi.mean, every.mean(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(phi.apply(every.T).var(axis=0), 1.0, rtol=1e-6)


def test_merging_running_statistics_equals_one_pass_over_all_values():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 5)) * [1, 10, 100, 0.1, 1e3] for n in (1, 7, 40)]
    merged = RunningStats.of(chunks[0]).merge(RunningStats.of(chunks[1])).merge(RunningStats.of(chunks[2]))
    every = np.concatenate(chunks)
    stats = merged.channel_stats()
    np.testing.assert_allclose(stats.mean, every.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, every.std(axis=0), rtol=1e-12)


def test_a_term_that_standardises_is_refused_without_its_stores_statistics(make_manifest):
    from vfmkd_ray.config import load_config
    from vfmkd_ray.losses.base import StudentLevels
    from vfmkd_ray.losses.registry import build_loss_terms
    from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet
    from vfmkd_ray.training.trainer import refuse_terms_without_channel_stats

    cfg = load_config(None, ["distill.terms={kd: {type: feature_mse, normalize: channel}}"])
    levels = StudentLevels(YOLOv8CSPDarknet("n").feature_info)
    terms = build_loss_terms(cfg.distill, levels, {"sam": {"image_embed": (256, 4, 4)}})
    stats = {"image_embed": ChannelStats(mean=[0.0] * 256, std=[1.0] * 256)}
    with pytest.raises(ValueError, match="teacher sam's store, and it has none: no store"):
        refuse_terms_without_channel_stats(terms, {})
    with pytest.raises(ValueError, match="distill.terms.kd.normalize=none"):
        refuse_terms_without_channel_stats(terms, {"sam": {"other_layer": stats["image_embed"]}})
    refuse_terms_without_channel_stats(terms, {"sam": stats})


def test_a_teacher_online_under_augmentation_keeps_its_stores_statistics(tiny_config):
    """Its store is not read for training, but its statistics still standardise its live targets."""
    from vfmkd_ray.data.coco import read_image_records
    from vfmkd_ray.training.teacher_stores import check_stores
    from vfmkd_ray.training.trainer import run_channel_stats

    dataset = build_store_in_process(tiny_config)
    teachers = {"sam": tiny_config.teachers["sam"].model_copy(update={"under_augmentation": "online"})}
    augment = tiny_config.data.augment.model_copy(update={"pipeline": "yolov8"})
    cfg = tiny_config.model_copy(
        update={"teachers": teachers, "data": tiny_config.data.model_copy(update={"augment": augment})}
    )
    stores = check_stores(cfg, read_image_records(cfg.data))
    assert stores.live == ("sam",) and not stores.manifests()
    assert run_channel_stats(cfg, stores) == {"sam": read_manifest(dataset).channel_stats}
