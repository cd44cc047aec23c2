"""Every registered loss term: adapter output shaped like its teacher target (from ``feature_info``
and the teacher's shapes), a finite loss with gradients into the adapter, and zero when the adapted
student equals the teacher where that holds."""

import copy

import numpy as np
import pytest
import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.config import load_config
from vfmkd_ray.losses.base import StudentLevels
from vfmkd_ray.losses.registry import LOSS_TERMS, build_loss_terms
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet

TEACHER = {"sam": {"image_embed": (256, 4, 4)}}
ZERO_WHEN_EQUAL = {"feature_mse", "cosine", "fgd", "cwd"}  # edge has no teacher: BCE against Sobel edges


@pytest.mark.parametrize("term_type", LOSS_TERMS.names())
def test_term_contract(term_type):
    stride = 4 if term_type in ("edge", "fgd") else 16
    cfg = load_config(None, [f"distill.terms={{t: {{type: {term_type}, student_stride: {stride}}}}}"])
    student = YOLOv8CSPDarknet("n")
    [term] = build_loss_terms(cfg.distill, StudentLevels(student.feature_info), TEACHER).values()
    adapter = term.build_adapter()
    images = torch.randn(2, 3, 64, 64)
    level = student(images)[term.student_level]
    assert level.shape[1] == student.feature_info.channels()[term.student_level]
    pred = adapter(level)
    target = torch.randn(2, 256, 4, 4)
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0]], [[0.0, 0.0, 0.0, 0.0]]])
    batch = Batch(
        images,
        torch.tensor([[64, 64], [48, 64]]),
        {"sam/image_embed": target},
        0,
        boxes,
        torch.tensor([[0], [-1]]),
    )
    if term.teacher_layers:
        assert term.teacher_layers == ("sam/image_embed",) and pred.shape == target.shape
    loss, diagnostics = term(pred, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # train.channels_last: the same loss from a channels-last student (no layout-bound views).
    channels_last = copy.deepcopy(adapter).to(memory_format=torch.channels_last)
    level_cl = level.detach().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(term(channels_last(level_cl), batch)[0], loss, rtol=1e-4, atol=1e-6)
    assert all(torch.isfinite(v).all() for v in diagnostics.values())
    loss.backward()
    assert all(p.grad is not None for p in adapter.parameters() if p.requires_grad)
    if term_type in ZERO_WHEN_EQUAL:
        same, same_diagnostics = term(target.clone(), batch)
        assert float(same) == pytest.approx(0.0, abs=1e-6)
        assert float(same_diagnostics["cos"]) == pytest.approx(1.0, abs=1e-5), (
            "every teacher term reports cos"
        )
        assert float(loss) > 0


@pytest.mark.parametrize("term_type", sorted(ZERO_WHEN_EQUAL))
def test_a_warped_targets_uncovered_cells_teach_nothing(term_type):
    """Under ``under_augmentation: warp`` a target's cells that no stored map covers carry zeros:
    whatever the student says there, every teacher term's loss and its ``cos`` stay the same."""
    term = _built_term(term_type)
    torch.manual_seed(0)
    target, pred = torch.randn(2, 256, 4, 4), torch.randn(2, 256, 4, 4)
    coverage = torch.ones(2, 1, 4, 4)
    coverage[0, :, :, 2:] = 0  # the right half of the first sample's canvas came from padding
    target = target * coverage

    def run(prediction):
        batch = _two_image_batch(target, teacher_coverage={"sam/image_embed": coverage})
        loss, diagnostics = term(prediction, batch)
        return float(loss), float(diagnostics["cos"])

    elsewhere = pred.clone()
    elsewhere[0, :, :, 2:] = 100 * torch.randn(256, 4, 2)
    assert run(elsewhere) == pytest.approx(run(pred), rel=1e-5)
    inside = pred.clone()
    inside[0, :, :, :2] += 1.0
    assert run(inside) != pytest.approx(run(pred), rel=1e-5)


@pytest.mark.parametrize("term_type", sorted(ZERO_WHEN_EQUAL))
def test_normalize_channel_compares_with_the_target_standardised_by_its_store(term_type):
    term = _built_term(term_type, ", normalize: channel")
    torch.manual_seed(0)
    mean, std = torch.randn(256) * 5, torch.rand(256) * 3 + 0.5
    raw = torch.randn(2, 256, 4, 4) * std[:, None, None] + mean[:, None, None]
    pred = torch.randn(2, 256, 4, 4)

    def batch(target, stats):
        return _two_image_batch(target, teacher_stats=stats)

    standardised = (raw - mean[:, None, None]) / std[:, None, None]
    loss, _ = term(pred, batch(raw, {"sam/image_embed": torch.stack([mean, std])}))
    term.normalize = "none"
    expected, _ = term(pred, batch(standardised, {}))
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    term.normalize = "channel"
    with pytest.raises(ValueError, match="no channel statistics for teacher target sam/image_embed"):
        term(pred, batch(raw, {}))


@pytest.mark.parametrize("term_type", sorted(ZERO_WHEN_EQUAL))
def test_normalize_phi_s_compares_with_the_target_through_its_stores_transform(term_type):
    from vfmkd_ray.store.phi_s import PhiS

    term = _built_term(term_type, ", normalize: phi_s")
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(256, 256)) * np.logspace(0, 2, 256)[None]
    phi = PhiS.of(rng.normal(size=256) * 5, mixing @ mixing.T)
    raw = torch.randn(2, 256, 4, 4) * 3
    pred = torch.randn(2, 256, 4, 4)
    cells = raw.permute(0, 2, 3, 1).reshape(-1, 256).double().numpy()
    rotated = torch.from_numpy(phi.apply(cells)).float().reshape(2, 4, 4, 256).permute(0, 3, 1, 2)
    packed = {"sam/image_embed": torch.from_numpy(phi.packed())}
    loss, _ = term(pred, _two_image_batch(raw, teacher_phi_s=packed))
    term.normalize = "none"
    expected, _ = term(pred, _two_image_batch(rotated, teacher_phi_s=packed))
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    term.normalize = "phi_s"
    with pytest.raises(ValueError, match="no PHI-S transform for teacher target sam/image_embed"):
        term(pred, _two_image_batch(raw))


def _built_term(term_type: str, extra: str = ""):
    """A registered teacher term of ``term_type`` on YOLOv8-n against ``TEACHER``, adapter built."""
    stride = 4 if term_type == "fgd" else 16
    cfg = load_config(None, [f"distill.terms={{t: {{type: {term_type}, student_stride: {stride}{extra}}}}}"])
    [term] = build_loss_terms(
        cfg.distill, StudentLevels(YOLOv8CSPDarknet("n").feature_info), TEACHER
    ).values()
    term.build_adapter()
    return term


def _two_image_batch(target: torch.Tensor, **fields) -> Batch:
    """Two 64 px images, one box each (FGD's foreground), and ``target`` as the teacher's map."""
    return Batch(
        torch.zeros(2, 3, 64, 64),
        torch.full((2, 2), 64),
        {"sam/image_embed": target},
        boxes_BN4=torch.tensor([[[4.0, 4.0, 60.0, 60.0]], [[8.0, 8.0, 40.0, 30.0]]]),
        labels_BN=torch.tensor([[0], [0]]),
        **fields,
    )
