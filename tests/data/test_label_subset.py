"""data.label_fraction: a fixed, nested subset of the training split; validation never shrinks."""

from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.label_subset import labelled_subset
from vfmkd_ray.data.splits import is_validation

RECORDS = [ImageRecord(f"img{i:03d}", f"/x/img{i:03d}.png", 64, 64) for i in range(200)]


def _train_ids(records):
    return {r.image_id for r in records if not is_validation(r.image_id, 0.25)}


def test_subsets_are_fixed_nested_and_keep_the_validation_split_whole():
    full_train = _train_ids(RECORDS)
    val = {r.image_id for r in RECORDS} - full_train
    tenth = labelled_subset(RECORDS, 0.25, 0.1)
    half = labelled_subset(RECORDS, 0.25, 0.5)
    assert len(_train_ids(tenth)) == round(0.1 * len(full_train))
    assert len(_train_ids(half)) == round(0.5 * len(full_train))
    assert _train_ids(tenth) < _train_ids(half) < full_train
    assert val <= {r.image_id for r in tenth} and val <= {r.image_id for r in half}
    assert labelled_subset(list(reversed(RECORDS)), 0.25, 0.1) == list(reversed(tenth))  # order-free
    assert labelled_subset(RECORDS, 0.25, 1.0) == RECORDS


def test_a_tiny_budget_keeps_at_least_one_training_image():
    assert len(_train_ids(labelled_subset(RECORDS[:10], 0.25, 0.01))) == 1
