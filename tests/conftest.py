"""Shared fixtures: tiny configs and tiny synthetic datasets, written under tmp_path."""

from __future__ import annotations

import importlib.util
import itertools
import os

import pytest

from vfmkd_ray import openmmlab
from vfmkd_ray.config import ExperimentConfig, load_config
from vfmkd_ray.store.manifest import LayerSpec, Manifest

# Ray Train's controller polls its workers every 2 s by default, and each state change of a run
# (scheduling, running, finished) waits for a poll: 7-9 s of every run's 25 s fixed cost on this
# 2-core VM (a no-op 2-worker run: 24-29 s at 2 s, 16-21 s at 0.2 s). Every local Ray a test
# starts, and every Ray a test's subprocess starts, inherits this; a missed poll is no failure
# (Ray marks a worker dead only after RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S, 10 min).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``mm`` need the OpenMMLab stack (``make mm``): skipped where it is absent,
    except under ``make test-mm`` (``VFMKD_REQUIRE_MM=1``), where they run and fail."""
    installed = all(importlib.util.find_spec(name) is not None for name in openmmlab.PACKAGES)
    # mmcv without its compiled ops (pip's own build of the sdist) is no stack either.
    if (installed and importlib.util.find_spec("mmcv._ext") is not None) or os.environ.get(
        "VFMKD_REQUIRE_MM"
    ) == "1":
        return
    skip = pytest.mark.skip(reason="the OpenMMLab stack is not installed (make test-mm)")
    for item in items:
        if item.get_closest_marker("mm") is not None:
            item.add_marker(skip)


def tiny_overrides(root) -> list[str]:
    """A config small enough for a CPU test: 16 images at 64 px, SAM ViT-B random, YOLOv8-n."""
    return [
        "name=tiny",
        f"data.root={root}/data",
        "data.synthetic.num_images=16",
        "data.synthetic.image_size=64",
        "data.synthetic.max_shapes=3",
        "data.val_fraction=0.25",
        "teachers.sam.input_size=64",
        f"store.root={root}/store",
        "store.rows_per_part=4",
        "store.teacher_batch_size=4",
        f"train.storage_path={root}/runs",
        "train.epochs=2",
        "train.batch_size=2",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
    ]


# A second teacher for multi-teacher tests: DINOv2 ViT-S/14 at 56 px (a 4 x 4 grid, a different input
# size from the primary SAM's 64 px), distilled into the student's stride-32 level.
SECOND_TEACHER = [
    "teachers.dino.name=dinov2_vits14",
    "teachers.dino.weights=random",
    "teachers.dino.input_size=56",
    "distill.terms.dino_s32.type=feature_mse",
    "distill.terms.dino_s32.teacher=dino",
    "distill.terms.dino_s32.student_stride=32",
]


@pytest.fixture
def local_ray(request):
    """A real local Ray for one test (4 logical CPUs); ``indirect`` params become worker env vars."""
    import ray

    from vfmkd_ray.ray_session import local_ray_system_config

    env = getattr(request, "param", {}) or {}
    # No dashboard: it costs seconds to start and a share of the 2 CPUs while the test runs.
    runtime_env = {"env_vars": env} if env else None
    ray.init(
        num_cpus=4,
        runtime_env=runtime_env,
        logging_level="ERROR",
        include_dashboard=False,
        _system_config=local_ray_system_config(),  # the product's local Ray keeps its idle workers
    )
    yield
    ray.shutdown()


@pytest.fixture
def product_ray(monkeypatch):
    """No Ray yet: the product's own ``ensure_ray`` starts each Ray it needs, as for a user (the
    environment inherited); whatever is running at the end is shut down, before the test's
    environment changes (``monkeypatch``) are undone."""
    import ray

    assert not ray.is_initialized()
    yield
    ray.shutdown()


@pytest.fixture
def tiny_config(tmp_path) -> ExperimentConfig:
    return load_config(None, tiny_overrides(tmp_path))


@pytest.fixture
def two_teacher_config(tmp_path) -> ExperimentConfig:
    return load_config(None, tiny_overrides(tmp_path) + SECOND_TEACHER)


@pytest.fixture
def make_manifest():
    """Builds a store manifest for one fp16 layer, as precompute would write it."""

    def build(layer: str, shape: tuple[int, int, int], rows: int, input_size: int = 64) -> Manifest:
        return Manifest(
            schema_version=1,
            teacher="sam_vit_b",
            teacher_weights="random(seed=0)",
            input_size=input_size,
            layers={layer: LayerSpec(shape=shape, stride=input_size // shape[-1])},
            codec="fp16",
            augment="none",
            row_count=rows,
            num_parts=1,
            dataset_fingerprint="test",
        )

    return build


_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 for the whole session; AWS_* variables point at it."""
    from tests.s3_server import moto_s3_server

    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the test S3 server; returns ``s3://<bucket>``."""
    import fsspec

    from tests.s3_server import create_bucket

    name = f"vfmkd-test-{next(_bucket_numbers)}"
    create_bucket(s3_endpoint, name)
    fsspec.filesystem("s3").invalidate_cache()
    return f"s3://{name}"


class Epoch:
    """The data position's answer to "which epoch": what a pass's decode tasks replay."""

    def __init__(self, epoch: int):
        self.value = epoch

    def epoch(self):
        return self.value

    def trained(self, keys):
        return frozenset()


def build_store_in_process(cfg: ExperimentConfig, alias: str | None = None) -> str:
    """The precompute stages of teacher ``alias`` (default: the primary one) run in this process
    (no Ray): loader -> teacher -> part writer.

    For Ray-free tests of what reads a store; returns the dataset URI.
    """
    import numpy as np

    from vfmkd_ray.data.coco import read_image_records
    from vfmkd_ray.data.image_loader import ImageLoader
    from vfmkd_ray.data.synthetic import write_synthetic_coco
    from vfmkd_ray.data.views import view_draws
    from vfmkd_ray.models.teachers.build import describe_teacher
    from vfmkd_ray.store.index_rows import INDEX_SCHEMA
    from vfmkd_ray.store.manifest import expected_manifest_fields, teacher_dataset
    from vfmkd_ray.store.parts import PartWriter
    from vfmkd_ray.store.precompute import TeacherActor, finalize_store, rows_to_do

    alias = alias or cfg.primary_teacher
    teacher_cfg = cfg.teachers[alias]
    write_synthetic_coco(cfg.data)
    records = read_image_records(cfg.data)
    teacher = describe_teacher(teacher_cfg)
    dataset = teacher_dataset(cfg, alias)
    draws = view_draws(cfg, [r.image_id for r in records])
    loader = ImageLoader(
        teacher_cfg.input_size,
        cfg.store.augment,
        max_pixels=cfg.data.max_image_pixels,
        view_spec=draws.spec if draws is not None else None,
    )
    actor = TeacherActor(teacher_cfg.model_dump())
    writer = PartWriter(dataset, list(teacher.selected_layers), cfg.store.codec, teacher_cfg.input_size)
    step = cfg.store.rows_per_part
    todo = rows_to_do(records, INDEX_SCHEMA.empty_table(), cfg.store.views_per_image, cfg.seed, draws)
    for start in range(0, todo.num_rows, step):
        batch = {key: np.array(values) for key, values in todo.slice(start, step).to_pydict().items()}
        for loaded in loader(batch):
            writer(actor(loaded))
    finalize_store(dataset, records, teacher, expected_manifest_fields(cfg, alias, teacher.weights_id))
    return dataset


def read_part_rows(part: str) -> dict:
    """Every column of one store part as object arrays, the way Ray Data hands batches to stages."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    return {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}


def lose_part(dataset: str, index: int) -> set[str]:
    """Deletes part ``index`` of a store and records its images as skipped in the manifest, as a
    precompute that could not read them would have: a store with rows missing that is still whole.
    Returns the lost image ids."""
    from pathlib import Path

    from vfmkd_ray.store.index import build_index, read_index, write_index
    from vfmkd_ray.store.manifest import read_manifest, write_manifest
    from vfmkd_ray.store.parts import list_parts

    part = list_parts(dataset)[index]
    lost = {str(i) for i in read_part_rows(part)["image_id"]}
    Path(part).unlink()
    manifest = read_manifest(dataset)
    update = {
        "row_count": manifest.row_count - len(lost),
        "num_parts": manifest.num_parts - 1,
        "num_skipped": manifest.num_skipped + len(lost),
        "index_sha256": write_index(
            dataset, build_index(dataset, read_index(dataset, manifest.index_sha256))
        ),
    }
    write_manifest(dataset, manifest.model_copy(update=update))
    return lost


def teacher_output_batch(ids: list[str], layer: str, features) -> dict:
    """A batch as the teacher stage hands it to the part writer: the key columns and one float
    ``feat.<layer>`` array (``len(ids) x C x H x W``)."""
    import numpy as np

    from vfmkd_ray.store.schema import feature_column

    return {
        "image_id": np.array(ids),
        "image_uri": np.array([f"s3://bucket/{i}.png" for i in ids]),
        "aug_seed": np.arange(len(ids)),
        "valid_h": np.full(len(ids), 64),
        "valid_w": np.full(len(ids), 48),
        feature_column(layer): features,
    }


def files_holding(folder, markers: list[str]) -> list[str]:
    """The files under ``folder`` whose bytes hold any of ``markers``: where a secret leaked to."""
    from pathlib import Path

    return [
        str(p)
        for p in Path(folder).rglob("*")
        if p.is_file() and any(m.encode() in p.read_bytes() for m in markers)
    ]


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """A real MLflow tracking server on 127.0.0.1 for the whole session; its URI."""
    from tests.mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
