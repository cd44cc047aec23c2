"""The ``yolov8`` head and the ``yolov8_pafpn`` neck: MMYOLO's key layout, the assigner and losses on
hand-checked cases, gradients, and a tiny model that learns."""

from __future__ import annotations

import math

import pytest
import torch

from tests.heads.mmyolo_detector_layout import (
    MMYOLO_SIZES,
    mmyolo_head_module_state_shapes,
    mmyolo_neck_out_channels,
    mmyolo_neck_state_shapes,
)
from vfmkd_ray.batch import Batch
from vfmkd_ray.heads.base import Detections, Features, HeadContext
from vfmkd_ray.heads.yolov8.assigner import assign
from vfmkd_ray.heads.yolov8.box_ops import ciou, grid_priors
from vfmkd_ray.heads.yolov8.config import YOLOv8HeadConfig
from vfmkd_ray.heads.yolov8.head import YOLOv8Head
from vfmkd_ray.heads.yolov8.head_module import HeadOutput, YOLOv8HeadModule
from vfmkd_ray.heads.yolov8.loss import distribution_focal_loss, pack_ground_truth, yolov8_loss
from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.necks.config import YOLOv8PAFPNConfig
from vfmkd_ray.models.necks.yolov8_pafpn import YOLOv8PAFPN, pafpn_deepen_factor
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOV8_SIZES, YOLOv8CSPDarknet

SIDE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tiny convs gain nothing from more, and on a shared CI box two
    spinning OpenMP threads per process make each step up to a hundred times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _context(backbone: YOLOv8CSPDarknet, neck: YOLOv8PAFPN | None) -> HeadContext:
    return HeadContext(
        backbone_info=backbone.feature_info,
        neck_info=None if neck is None else neck.feature_info,
        input_size=SIDE,
        student_name="yolov8_cspdarknet",
        student_size="n",
        teacher_shapes={},
    )


class TinyDetector(torch.nn.Module):
    """YOLOv8-n backbone (with the stride-4 level too: the neck picks its levels by stride) + neck +
    head module, as the multi-task model assembles them."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.backbone = YOLOv8CSPDarknet("n", (1, 2, 3, 4))
        self.neck = YOLOv8PAFPN(self.backbone.feature_info, YOLOV8_SIZES["n"].deepen_factor, 3)
        self.head = YOLOv8Head(
            "det", YOLOv8HeadConfig(num_classes=num_classes), _context(self.backbone, self.neck)
        )
        self.det = self.head.build_module()

    def forward(self, images_BCHW: torch.Tensor):
        levels = self.backbone(images_BCHW)
        return self.det(Features(backbone=levels, neck=self.neck(levels), adapted={}))


def _batch(boxes: list[list[list[float]]], labels: list[list[int]], valid_hw=None, seed: int = 0) -> Batch:
    """Images with a bright rectangle per box on a dark background; rows padded with label -1."""
    generator = torch.Generator().manual_seed(seed)
    num_rows = max(1, max(len(b) for b in labels))
    images = torch.rand(len(boxes), 3, SIDE, SIDE, generator=generator) * 0.2 - 1.0
    boxes_BN4 = torch.zeros(len(boxes), num_rows, 4)
    labels_BN = torch.full((len(boxes), num_rows), -1, dtype=torch.long)
    for i, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        for j, (box, label) in enumerate(zip(image_boxes, image_labels, strict=True)):
            x1, y1, x2, y2 = (int(v) for v in box)
            images[i, label % 3, y1:y2, x1:x2] = 1.5
            boxes_BN4[i, j] = torch.tensor(box)
            labels_BN[i, j] = label
    if valid_hw is None:
        valid_hw = [[SIDE, SIDE]] * len(boxes)
    return Batch(images, torch.tensor(valid_hw), boxes_BN4=boxes_BN4, labels_BN=labels_BN)


def _box_iou(a_4: torch.Tensor, b_4: torch.Tensor) -> float:
    inter = (torch.min(a_4[2:], b_4[2:]) - torch.max(a_4[:2], b_4[:2])).clamp(min=0).prod()
    area = (a_4[2:] - a_4[:2]).prod() + (b_4[2:] - b_4[:2]).prod()
    return float(inter / (area - inter))


# --- MMYOLO layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(MMYOLO_SIZES))
def test_neck_and_head_module_match_mmyolo_layout(size):
    backbone = YOLOv8CSPDarknet(size, (1, 2, 3, 4))
    neck = YOLOv8PAFPN(backbone.feature_info, YOLOV8_SIZES[size].deepen_factor, 3)
    # Real channels with widen 1.0 equal MMYOLO's make_divisible of the nominal ones.
    assert neck.feature_info.channels() == mmyolo_neck_out_channels(size)
    assert neck.feature_info.reduction() == [8, 16, 32]
    state = {k: tuple(v.shape) for k, v in neck.state_dict().items()}
    assert state == mmyolo_neck_state_shapes(size)

    module = YOLOv8HeadModule(neck.feature_info.channels(), [8, 16, 32], num_classes=80, reg_max=16)
    state = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert state == mmyolo_head_module_state_shapes(size)
    assert "proj" not in module.state_dict() and module.proj.tolist() == list(range(16))


def test_head_module_keys_sit_under_head_module():
    model = TinyDetector(num_classes=80)
    keys = {k.removeprefix("head_module.") for k in model.det.state_dict()}
    assert all(k.startswith("head_module.") for k in model.det.state_dict())
    assert keys == set(mmyolo_head_module_state_shapes("n"))


def test_head_module_init_follows_mmyolo():
    module = YOLOv8HeadModule([64, 128, 256], [8, 16, 32], num_classes=80)
    for reg_pred, cls_pred, stride in zip(module.reg_preds, module.cls_preds, (8, 16, 32), strict=True):
        assert torch.all(reg_pred[-1].bias == 1.0)
        torch.testing.assert_close(
            cls_pred[-1].bias, torch.full((80,), math.log(5 / 80 / (640 / stride) ** 2))
        )


def test_neck_outputs_and_feature_info():
    backbone = YOLOv8CSPDarknet("n", (2, 3, 4))
    neck = YOLOv8PAFPN(backbone.feature_info, 0.33, 3)
    outputs = neck(backbone(torch.randn(2, 3, SIDE, SIDE)))
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (c, SIDE // s, SIDE // s)
        for c, s in zip(neck.feature_info.channels(), neck.feature_info.reduction(), strict=True)
    ]


def test_neck_needs_strides_8_16_32():
    info = FeatureInfo([FeatureLevel(32, 4), FeatureLevel(64, 8), FeatureLevel(128, 16)])
    with pytest.raises(ValueError, match=r"strides \[8, 16, 32\].*\[4, 8, 16\]"):
        YOLOv8PAFPN(info, 0.33, 3)


def test_pafpn_deepen_factor():
    assert pafpn_deepen_factor(YOLOv8PAFPNConfig(deepen_factor=0.5), StudentConfig(size="m")) == 0.5
    assert pafpn_deepen_factor(YOLOv8PAFPNConfig(), StudentConfig(size="m")) == 0.67
    assert pafpn_deepen_factor(YOLOv8PAFPNConfig(), StudentConfig(name="timm/repvit_m0_9")) == 0.33


def test_head_needs_the_pafpn_neck():
    backbone = YOLOv8CSPDarknet("n", (2, 3, 4))
    with pytest.raises(ValueError, match=r"neck: \{type: yolov8_pafpn\}"):
        YOLOv8Head("det", YOLOv8HeadConfig(num_classes=2), _context(backbone, None))
    assert (
        YOLOv8Head(
            "det",
            YOLOv8HeadConfig(num_classes=2, max_objects=7),
            _context(backbone, YOLOv8PAFPN(backbone.feature_info, 0.33, 3)),
        )
        .needs()
        .max_objects
        == 7
    )


# --- box ops, assigner and losses on hand-checked cases ------------------------------------------


def test_grid_priors_are_cell_centres_row_major():
    priors = grid_priors([(2, 3), (1, 1)], [8, 16], torch.device("cpu"))
    expected = [[4, 4, 8], [12, 4, 8], [20, 4, 8], [4, 12, 8], [12, 12, 8], [20, 12, 8], [8, 8, 16]]
    assert priors.tolist() == expected


def test_ciou_hand_values():
    # Same shape, centres 1 apart: IoU 2/6, enclosing box 3 x 2 (diagonal^2 13), v = 0.
    value = ciou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 0, 3, 2]))
    assert value.item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    # Different aspect: IoU 4/8, enclosing 4 x 2 (20), centres 1 apart, v from atan(2) - atan(1).
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    expected = 0.5 - 1 / 20 - v / (v - 0.5 + 1) * v
    value = ciou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([0.0, 0, 4, 2]))
    assert value.item() == pytest.approx(expected, abs=1e-6)
    assert ciou(torch.tensor([1.0, 2, 5, 7]), torch.tensor([1.0, 2, 5, 7])).item() == pytest.approx(1.0)


def test_dfl_hand_value():
    # p = softmax([0, ln 3, 0, 0]) = [1/6, 1/2, 1/6, 1/6]; target 1.25 sits between bins 1 and 2.
    logits = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])
    loss = distribution_focal_loss(logits, torch.tensor([1.25]))
    assert loss.item() == pytest.approx(0.75 * math.log(2) + 0.25 * math.log(6), abs=1e-6)


def _assign_one_level(gt_boxes, gt_labels, num_classes=3, side=32, stride=8):
    """The assigner on one stride-8 level of a 32 px image, every predicted box equal to the first
    ground-truth box and every score 0.5."""
    priors = grid_priors([(side // stride, side // stride)], [stride], torch.device("cpu"))[:, :2]
    boxes_BN4, labels_BN = torch.tensor([gt_boxes]), torch.tensor([gt_labels])
    gt, labels, valid = pack_ground_truth(boxes_BN4, labels_BN)
    preds = boxes_BN4[:, :1].expand(1, len(priors), 4).clone()
    scores = torch.full((1, len(priors), num_classes), 0.5)
    cfg = YOLOv8HeadConfig(num_classes=num_classes)
    out = assign(
        preds, scores, priors, labels, gt, valid, topk=cfg.topk, alpha=cfg.alpha, beta=cfg.beta, eps=cfg.eps
    )
    return priors, out


def test_assigner_box_on_grid_lines_takes_the_priors_inside():
    # Box [8, 24] x [8, 24] on stride 8: the prior centres (i + 0.5) * 8 = 4, 12, 20, 28, so exactly
    # the four at (12 | 20, 12 | 20) lie inside. The padding row (label -1) covers the whole image
    # and must not assign anything.
    priors, out = _assign_one_level([[8.0, 8, 24, 24], [0.0, 0, 32, 32]], [2, -1])
    positives = {tuple(p) for p in priors[out.fg_mask_BP[0]].tolist()}
    assert positives == {(12.0, 12.0), (20.0, 12.0), (12.0, 20.0), (20.0, 20.0)}
    fg = out.fg_mask_BP[0]
    assert torch.all(out.labels_BP[0][fg] == 2) and torch.all(out.labels_BP[0][~fg] == 3)
    assert torch.all(out.boxes_BP4[0][fg] == torch.tensor([8.0, 8, 24, 24]))
    # Every positive's predicted box is the ground truth (CIoU 1), so its soft target is 1.
    torch.testing.assert_close(out.scores_BPK[0][fg], torch.tensor([[0.0, 0, 1]]).expand(4, 3))
    assert torch.all(out.scores_BPK[0][~fg] == 0)


def test_assigner_prior_on_an_edge_is_outside():
    # Box [4, 20] x [4, 20]: the priors at 4 and 20 lie on its edges, so only (12, 12) is inside.
    priors, out = _assign_one_level([[4.0, 4, 20, 20]], [0])
    assert priors[out.fg_mask_BP[0]].tolist() == [[12.0, 12.0]]


def test_assigner_prior_claimed_twice_goes_to_the_better_overlap():
    # Both boxes contain the prior at (12, 12); the predicted boxes equal the first box, so the
    # first box overlaps better and keeps it. (20, 20) lies only in the second box.
    priors, out = _assign_one_level([[8.0, 8, 16, 16], [8.0, 8, 24, 24]], [0, 1])
    fg = out.fg_mask_BP[0]
    assigned = dict(zip(map(tuple, priors[fg].tolist()), out.labels_BP[0][fg].tolist(), strict=True))
    assert assigned[(12.0, 12.0)] == 0 and assigned[(20.0, 20.0)] == 1


def test_empty_image_has_no_positives_and_zero_box_losses():
    torch.manual_seed(0)
    model = TinyDetector()
    batch = _batch([[]], [[]])
    batch.boxes_BN4[:] = torch.tensor([0.0, 0, 64, 64])  # padding rows: whatever their boxes say
    output = model(batch.images_BCHW)
    losses = model.head.loss(model.det, output, batch, rerun=None)
    assert losses["num_pos"].item() == 0
    assert losses["bbox"].item() == 0.0 and losses["dfl"].item() == 0.0
    # Every class target is 0 and the assigned-score sum clamps to 1: cls = 0.5 * sum BCE(x, 0).
    logits = torch.cat([c.detach().flatten() for c in output.cls_logits])
    expected = 0.5 * torch.nn.functional.softplus(logits).sum()
    torch.testing.assert_close(losses["cls"], expected)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]


def test_empty_image_next_to_a_full_one_gets_no_targets():
    batch = _batch([[], [[8.0, 8, 40, 40]]], [[], [1]])
    gt, labels, valid = pack_ground_truth(batch.boxes_BN4, batch.labels_BN)
    assert gt.shape == (2, 1, 4) and valid.tolist() == [[False], [True]]
    priors = grid_priors([(8, 8), (4, 4), (2, 2)], [8, 16, 32], torch.device("cpu"))[:, :2]
    preds = torch.tensor([8.0, 8, 40, 40]).expand(2, len(priors), 4)
    scores = torch.full((2, len(priors), 2), 0.5)
    out = assign(preds, scores, priors, labels, gt, valid, topk=10, alpha=0.5, beta=6.0, eps=1e-9)
    assert not out.fg_mask_BP[0].any() and torch.all(out.scores_BPK[0] == 0)
    assert out.fg_mask_BP[1].any()


def test_pack_ground_truth_moves_real_rows_first():
    boxes = torch.arange(16.0).reshape(1, 4, 4)
    gt, labels, valid = pack_ground_truth(boxes, torch.tensor([[-1, 3, -1, 2]]))
    assert labels.tolist() == [[3, 2]] and valid.all()
    assert gt.tolist() == [[boxes[0, 1].tolist(), boxes[0, 3].tolist()]]


def test_no_ground_truth_rows_at_all():
    model = TinyDetector()
    batch = Batch(
        torch.randn(2, 3, SIDE, SIDE),
        torch.tensor([[SIDE, SIDE]] * 2),
        boxes_BN4=torch.zeros(2, 0, 4),
        labels_BN=torch.zeros(2, 0, dtype=torch.long),
    )
    losses = model.head.loss(model.det, model(batch.images_BCHW), batch, rerun=None)
    assert losses["bbox"].item() == 0.0 and losses["dfl"].item() == 0.0
    assert torch.isfinite(losses["loss"])


# --- the whole head --------------------------------------------------------------------------------


def test_random_batch_loss_is_finite_and_reaches_every_parameter():
    torch.manual_seed(0)
    model = TinyDetector(num_classes=3)
    batch = _batch([[[4.0, 6, 30, 40], [36, 30, 60, 62]], [[10.0, 10, 50, 30]]], [[0, 2], [1]])
    losses = model.head.loss(model.det, model(batch.images_BCHW), batch, rerun=None)
    assert set(losses) == {"loss", "cls", "bbox", "dfl", "num_pos"}
    assert all(not v.requires_grad for k, v in losses.items() if k != "loss")
    assert losses["num_pos"].item() > 0 and torch.isfinite(losses["loss"])
    torch.testing.assert_close(losses["loss"].detach(), losses["cls"] + losses["bbox"] + losses["dfl"])
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]


def _perfect_output(batch_size: int, gt_box: list[float], num_classes: int = 2) -> HeadOutput:
    """A one-level (stride 8, 32 px) head output whose distributions put all their mass on each
    prior's integer distances to ``gt_box``, with all class logits 0."""
    priors = grid_priors([(4, 4)], [8], torch.device("cpu"))[:, :2]
    box = torch.tensor(gt_box)
    ltrb_P4 = torch.cat([priors - box[:2], box[2:] - priors], dim=1) / 8
    logits_P4R = 30.0 * torch.nn.functional.one_hot(ltrb_P4.round().long().clamp(0, 15), 16).float()
    dists_4hw = ltrb_P4.T.reshape(4, 4, 4)
    return HeadOutput(
        cls_logits=(torch.zeros(batch_size, num_classes, 4, 4),),
        bbox_dists=(dists_4hw.expand(batch_size, -1, -1, -1),),
        dist_logits=(logits_P4R.expand(batch_size, -1, -1, -1),),
    )


def test_loss_hand_value_and_batch_size_independence():
    # Box [4, 28]^2 on stride 8: the four priors at (12 | 20, 12 | 20) are inside, at integer
    # distances (1 or 2 strides), so the predicted boxes are exact (CIoU 1, DFL 0) and each
    # positive's soft target is 1: the assigned-score sum is 4. With logits 0 every BCE term is
    # ln 2 whatever the target, so cls = 0.5 * (16 priors * 2 classes * ln 2) / 4.
    cfg = YOLOv8HeadConfig(num_classes=2)
    box = [4.0, 4, 28, 28]
    one = yolov8_loss(_perfect_output(1, box), torch.tensor([[box]]), torch.tensor([[1]]), [8], cfg)
    assert one["num_pos"].item() == 4
    assert one["cls"].item() == pytest.approx(0.5 * 32 * math.log(2) / 4, rel=1e-5)
    assert one["bbox"].item() == pytest.approx(0.0, abs=1e-5)
    assert one["dfl"].item() == pytest.approx(0.0, abs=1e-5)
    # No num_imgs factor: the same image twice gives the same loss.
    boxes, labels = torch.tensor([[box], [box]]), torch.tensor([[1], [1]])
    two = yolov8_loss(_perfect_output(2, box), boxes, labels, [8], cfg)
    for key in ("loss", "cls", "bbox", "dfl"):
        torch.testing.assert_close(one[key], two[key], rtol=1e-5, atol=1e-6)


def test_loss_is_float32_under_autocast():
    torch.manual_seed(0)
    model = TinyDetector()
    batch = _batch([[[8.0, 8, 40, 40]]], [[1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(batch.images_BCHW)
        losses = yolov8_loss(output, batch.boxes_BN4, batch.labels_BN, [8, 16, 32], model.head.cfg)
    assert output.cls_logits[0].dtype == torch.bfloat16
    assert losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])


def test_state_dict_round_trips_strictly():
    model = TinyDetector()
    fresh = model.head.build_module()
    fresh.load_state_dict(model.det.state_dict(), strict=True)


def test_training_lowers_the_loss_and_predictions_find_the_boxes():
    torch.manual_seed(0)
    model = TinyDetector(num_classes=2)
    gt_boxes = [[[8.0, 12, 40, 44]], [[20.0, 4, 60, 28], [4, 40, 28, 60]]]
    batch = _batch(gt_boxes, [[0], [1, 0]], valid_hw=[[64, 64], [64, 60]])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        losses = model.head.loss(model.det, model(batch.images_BCHW), batch, rerun=None)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5, history

    # BN running statistics (momentum 0.03) are far from settled after 30 steps: recompute them
    # on the training images, then predict in eval mode.
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        model(batch.images_BCHW)
    model.eval()
    with torch.no_grad():
        detections = model.head.predict(model.det, model(batch.images_BCHW), batch, rerun=None)
    assert len(detections) == 2 and all(isinstance(d, Detections) for d in detections)
    for dets, (height, width) in zip(detections, batch.valid_hw_B2.tolist(), strict=True):
        assert dets.boxes.shape[1] == 4 and len(dets.boxes) == len(dets.scores) == len(dets.labels)
        assert 0 < len(dets.boxes) <= model.head.cfg.max_detections
        assert torch.all(dets.boxes >= 0)
        assert torch.all(dets.boxes[:, 0::2] <= width) and torch.all(dets.boxes[:, 1::2] <= height)
        assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    # The best detection of each image is its first ground-truth box, with its class.
    for dets, boxes, labels in zip(detections, gt_boxes, ([0], [1, 0]), strict=True):
        assert dets.labels[0].item() == labels[0]
        assert _box_iou(dets.boxes[0], torch.tensor(boxes[0])) > 0.5
