"""The Ray-free training step on a fixed seed: feature KD terms through the one model and step."""

import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.training.step import model_step, optimizer_step


def _with_teacher(batch: Batch, teacher) -> Batch:
    batch.teacher_features = {f"sam/{k}": v for k, v in teacher(batch.images_BCHW).items()}
    return batch


def test_loss_falls_over_20_steps_and_teacher_gets_no_gradient(tiny_config):
    parts = build_model(tiny_config)
    teacher = build_teacher(tiny_config.teachers["sam"])
    optimizer = torch.optim.AdamW(parts.model.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images = torch.randn(4, 3, 64, 64)
    valid_hw = torch.tensor([[64, 64], [48, 64], [64, 40], [64, 64]])
    batch = _with_teacher(Batch(images, valid_hw), teacher)
    losses, cosines = [], []
    for _ in range(20):
        out = model_step(parts.model, batch, parts)
        assert set(out) == {"loss", "loss/feature_mse", "loss/edge", "cos/feature_mse"}
        optimizer_step(out["loss"], optimizer, scaler, list(parts.model.parameters()), 10.0)
        losses.append(float(out["loss"].detach()))
        cosines.append(float(out["cos/feature_mse"]))
    assert losses[-1] < 0.7 * losses[0]
    assert cosines[-1] > cosines[0] + 0.2
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in parts.model.parameters()), "DDP needs a gradient for each"


def test_loss_is_the_weighted_sum_of_terms(tiny_config):
    parts = build_model(tiny_config)
    teacher = build_teacher(tiny_config.teachers["sam"])
    batch = _with_teacher(Batch(torch.randn(2, 3, 64, 64), torch.full((2, 2), 64)), teacher)
    out = model_step(parts.model, batch, parts)
    expected = sum(parts.terms[name].weight * out[f"loss/{name}"] for name in parts.terms)
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_padding_is_masked_out_of_the_feature_loss(tiny_config):
    term = build_model(tiny_config).terms["feature_mse"]
    target = torch.zeros(1, 256, 4, 4)
    pred = torch.zeros(1, 256, 4, 4)
    pred[..., 2:, :] = 5.0  # wrong only in the bottom half, which is padding for a 32 px tall image
    batch = Batch(torch.zeros(1, 3, 64, 64), torch.tensor([[32, 64]]), {term.teacher_key: target})
    loss, _ = term(pred, batch)
    assert float(loss) == 0.0
