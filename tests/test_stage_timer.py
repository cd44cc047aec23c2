"""``benchmarks/stage_timer``, the data-plane benchmark's clock: the stages of a scripted pipeline
sum to its whole, bytes and calls are counted, and the stages are the product's work."""

from __future__ import annotations

import hashlib
import time

import numpy as np

from benchmarks.stage_timer import StageTimer, cores_per_thousand


def _work(rounds: int) -> bytes:
    digest = b"x" * 4096
    for _ in range(rounds):
        digest = hashlib.sha256(digest * 64).digest()
    return digest


def test_a_scripted_pipelines_stages_sum_to_its_whole_within_five_percent():
    timer = StageTimer()
    started = time.thread_time_ns()
    for _ in range(20):
        with timer.stage("read", nbytes=1000):
            _work(200)
        with timer.stage("decode"):
            _work(400)
        time.sleep(0.002)  # waiting is not CPU: no stage counts it
        with timer.stage("augment"):
            _work(100)
    whole_ms = (time.thread_time_ns() - started) / 1e6
    assert abs(timer.total_cpu_ms() - whole_ms) <= 0.05 * whole_ms
    per_sample = timer.cpu_ms_per_sample(20)
    assert list(per_sample) == ["read", "decode", "augment"]
    assert per_sample["decode"] > per_sample["read"] > per_sample["augment"] > 0
    assert timer.bytes_per_sample(20) == {"read": 1000.0, "decode": 0.0, "augment": 0.0}
    assert timer.stages["read"].calls == 20
    assert timer.stages["read"].wall_ns >= timer.stages["read"].cpu_ns * 0.5


def test_a_stage_that_raises_is_still_timed_and_late_bytes_are_added():
    timer = StageTimer()
    try:
        with timer.stage("fails"):
            _work(50)
            raise ValueError("bad row")
    except ValueError:
        pass
    timer.add_bytes("fails", 7)
    assert timer.stages["fails"].cpu_ns > 0 and timer.stages["fails"].nbytes == 7
    assert timer.total_cpu_ms(["fails"]) == timer.total_cpu_ms()
    assert cores_per_thousand(25.0) == 25.0  # 25 ms of one core per sample, 1,000 samples a second


def test_the_benchmarks_stages_are_the_decode_stages_work_on_the_same_rows(tmp_path):
    """The staged pass makes the samples the product's decoder makes from the same rows: the same
    canvases, boxes and warped targets (so its stages time the product's work, not a stand-in)."""
    from benchmarks import data_plane
    from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
    from vfmkd_ray.store.manifest import StoreDataset

    images = data_plane.write_images(str(tmp_path / "images"), 8)
    workload = data_plane.Workload("tiny", "image_embed", (4, 8, 8), 128, "int8")
    # Two parts: each read task gets its own rows' annotations, and mosaics stay within a part.
    manifest = data_plane.write_store(str(tmp_path / "store"), workload, images, rows_per_part=4)
    store = StoreDataset(data_plane.ALIAS, str(tmp_path / "store"), manifest)
    made: list[dict] = []
    timer = StageTimer()
    assert data_plane.staged_pass(timer, store, workload, images, keep=made) == 8
    assert set(timer.stages) >= {data_plane.READ, data_plane.AUGMENT, data_plane.WARP, data_plane.TO_FLOAT}
    decoder = TrainSampleDecoder(
        store,
        SampleSpec(data_plane.STUDENT_SIZE, "none", data_plane.MAX_OBJECTS, pipeline=data_plane.pipeline()),
    )
    product = []
    for batch in data_plane.product_batches(str(tmp_path / "store"), images):
        for out in decoder(batch):
            product += [
                {column: values[row] for column, values in out.items()} for row in range(len(out["image"]))
            ]
    assert len(product) == len(made) == 8
    for ours, theirs in zip(made, product, strict=True):
        for column, value in ours.items():
            np.testing.assert_array_equal(value, theirs[column], err_msg=column)
