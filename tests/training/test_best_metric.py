"""train.best_metric and the in-loop COCO scores it can name (Ray-free)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vfmkd_ray.batch import Batch
from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.image_ids import encode_image_id
from vfmkd_ray.data.samples import load_sample
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.data.targets import BOXES_COLUMN, LABELS_COLUMN
from vfmkd_ray.heads.base import Detections
from vfmkd_ray.training.in_loop_coco import InLoopCoco, evaluates
from vfmkd_ray.training.state import BestMetricError, TrainingState

HISTORY = [  # a scripted run: the loss keeps falling while the mAP peaks at epoch 2
    {"epoch": 1, "val/loss": 1.0, "det/mAP": 0.10},
    {"epoch": 2, "val/loss": 0.6, "det/mAP": 0.30},
    {"epoch": 3, "val/loss": 0.5},  # not scored this epoch
    {"epoch": 4, "val/loss": 0.4, "det/mAP": 0.20},
]


def _improved(metric: str, history=HISTORY) -> list[bool]:
    state = TrainingState()
    return [state.finish_epoch(3, record, metric) for record in history]


def test_the_best_epoch_is_the_highest_map_not_the_lowest_loss():
    assert _improved("det/mAP") == [True, True, False, False]
    assert _improved("val/loss") == [True, True, True, True]


def test_epochs_before_the_first_score_keep_the_latest_and_a_new_metric_starts_over():
    unscored_first = [{"epoch": 1, "val/loss": 1.0}, {"epoch": 2, "val/loss": 0.9}, *HISTORY[1:]]
    assert _improved("det/mAP", unscored_first) == [True, True, True, False, False]
    state = TrainingState()
    state.finish_epoch(3, HISTORY[1], "det/mAP")
    restored = TrainingState()
    restored.load_state_dict(state.state_dict())
    assert (restored.best_metric, restored.best_value) == ("det/mAP", 0.30)
    assert restored.finish_epoch(3, HISTORY[0], "val/loss")  # relaunched with another metric


def test_scored_epochs_are_every_nth_the_last_and_each_close_mosaic_epoch():
    assert [e for e in range(1, 11) if evaluates(e, 10, 3)] == [3, 6, 9, 10]
    assert [e for e in range(1, 11) if evaluates(e, 10, 5, always=e >= 8)] == [5, 8, 9, 10]
    assert not any(evaluates(e, 10, 0) for e in range(1, 11))


def test_a_best_metric_the_record_cannot_hold_stops_the_run_by_name():
    with pytest.raises(
        BestMetricError, match=r"'val/los' is not a validation key of this run: \['val/loss'\]"
    ):
        TrainingState().finish_epoch(3, HISTORY[0], "val/los")
    with pytest.raises(BestMetricError, match="'det/AP_small' is not scored on this validation split"):
        TrainingState().finish_epoch(3, HISTORY[0], "det/AP_small")  # scored: it has det/mAP
    assert TrainingState().finish_epoch(3, HISTORY[2], "det/AP_small")  # not scored this epoch


def test_best_metric_must_name_a_scored_detection_head(tmp_path):
    det = ["heads.det.type=yolov8", "heads.det.num_classes=3", "neck.type=yolov8_pafpn"]
    assert load_config(None, [*det, "train.best_metric=det/mAP"]).train.best_is_box_score()
    for overrides, message in (
        (["train.best_metric=mAP"], "best_metric must be a validation key"),
        (["train.best_metric=det/mAP"], r"names no detection head; heads that predict boxes: \[\]"),
        ([*det, "train.best_metric=det/mAP", "train.eval_every_epochs=0"], "train.eval_every_epochs is 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


class OracleHead:
    """Predicts each image's own ground-truth boxes (letterbox pixels), shifted by ``shift``."""

    kind = "boxes"

    def __init__(self, shift: float = 0.0):
        self.shift = shift

    def eval_modes(self):
        return ("global", "crops")  # the first is the one scored in the loop

    def predict(self, module, output, batch, rerun, mode):
        assert mode == "global"
        return [
            Detections(boxes + self.shift, torch.ones(len(boxes)), labels)
            for boxes, labels in zip(batch.boxes(), _labels(batch), strict=True)
        ]


def _labels(batch: Batch) -> list[torch.Tensor]:
    return [labels[labels >= 0] for labels in batch.labels_BN]


class HeadsOnly(nn.Module):
    """The model surface a scorer uses: ``heads`` and a forward returning per-head outputs."""

    def __init__(self, names):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Identity() for name in names})

    def forward(self, images):
        return SimpleNamespace(heads={name: None for name in self.heads})

    def head_output(self, name, images):
        return None


def _validation_batches(tiny_config, input_size: int):
    write_synthetic_coco(tiny_config.data)
    dataset = read_dataset(tiny_config.data)
    records = [r for r in dataset.records if is_validation(r.image_id, tiny_config.data.val_fraction)]
    batches = []
    for start in range(0, len(records), 2):
        chunk = records[start : start + 2]
        samples = [
            load_sample(r.image_uri, dataset.annotations.get(r.image_id), input_size, 0, "none", 20)
            for r in chunk
        ]
        column = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
        ids = torch.from_numpy(np.stack([encode_image_id(r.image_id) for r in chunk]))
        batches.append(
            Batch(
                images_BCHW=column["image"].float(),
                valid_hw_B2=column["valid_hw"],
                boxes_BN4=column[BOXES_COLUMN],
                labels_BN=column[LABELS_COLUMN],
                image_ids_BL=ids,
            )
        )
    return dataset, batches


def test_in_loop_scores_map_letterbox_boxes_back_to_the_original_pixels(tiny_config):
    """96 px images at a 64 px input: detections are scaled by 2/3 in the letterbox. The oracle
    scores mAP 1 only if they are mapped back; a 6 px shift in the letterbox (9 px originally, on
    shapes of 10-40 px) costs most of it."""
    data = tiny_config.data.model_copy(
        update={"synthetic": tiny_config.data.synthetic.model_copy(update={"image_size": 96})}
    )
    cfg = tiny_config.model_copy(update={"data": data})
    dataset, batches = _validation_batches(cfg, input_size=64)
    assert batches and int(batches[0].valid_hw_B2[0, 1]) == 64
    heads = {"det": OracleHead(), "shifted": OracleHead(shift=6.0), "mask": SimpleNamespace(kind="masks")}
    scorer = InLoopCoco(heads, lambda: (dataset, cfg.data.val_fraction), rank=0)
    model = HeadsOnly(["det", "shifted"])
    for batch in batches:
        scorer.add(model, batch)
    scores = scorer.scores()
    assert set(scores) == {f"{h}/{m}" for h in ("det", "shifted") for m in ("mAP", "AP50", "AP_small")}
    assert scores["det/mAP"] == pytest.approx(1.0) and scores["det/AP50"] == pytest.approx(1.0)
    assert scores["shifted/mAP"] < 0.5
    assert scorer.found == []  # each epoch scores its own detections
    # Images the stream did not deliver (skipped) are not misses: a scorer fed one batch scores 1.
    partial_scorer = InLoopCoco({"det": OracleHead()}, lambda: (dataset, cfg.data.val_fraction), rank=0)
    partial_scorer.add(model, batches[0])
    assert len(batches) > 1 and partial_scorer.scores()["det/mAP"] == pytest.approx(1.0)
