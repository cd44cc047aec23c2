"""``benchmarks/training_throughput.py --augment``: the plain loop replays augmented samples without
boxes, so a config whose heads need them is refused before any store is built. No Ray."""

import pytest

from benchmarks.training_throughput import AUGMENTED, refuse_boxes_under_augmentation
from benchmarks.workload import bench_config


def test_augment_refuses_heads_that_need_boxes_and_takes_the_demo_terms(tmp_path):
    refuse_boxes_under_augmentation(bench_config(str(tmp_path), AUGMENTED))  # the demo's KD terms
    heads = ["neck.type=yolov8_pafpn", "heads.det.type=yolov8", "heads.det.num_classes=3"]
    detector = bench_config(str(tmp_path), [*AUGMENTED, *heads])
    with pytest.raises(ValueError, match=r"heads \['det'\].*drop --augment"):
        refuse_boxes_under_augmentation(detector)
    plain = bench_config(str(tmp_path), heads)
    refuse_boxes_under_augmentation(plain)  # no augmentation: the plain loop's batches are the run's
