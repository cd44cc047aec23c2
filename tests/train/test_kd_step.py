"""The Ray-free distillation step on a fixed seed."""

import torch

from vfmkd_ray.losses.base import KDBatch
from vfmkd_ray.losses.registry import build_loss_terms
from vfmkd_ray.models.students import build_student
from vfmkd_ray.models.teachers import build_teacher
from vfmkd_ray.train.distiller import Distiller
from vfmkd_ray.train.step import kd_step, optimizer_step


def test_loss_falls_over_20_steps_and_teacher_gets_no_gradient(tiny_config):
    torch.manual_seed(0)
    student = build_student(tiny_config.student)
    teacher = build_teacher(tiny_config.teachers["sam"])
    terms = build_loss_terms(tiny_config.distill, student.feature_info, {"sam": teacher.feature_shapes()})
    distiller = Distiller(student, terms)
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images = torch.randn(4, 3, 64, 64)
    valid_hw = torch.tensor([[64, 64], [48, 64], [64, 40], [64, 64]])
    losses, cosines = [], []
    for _ in range(20):
        out = kd_step(distiller, KDBatch(images, valid_hw), terms, {"sam": teacher})
        assert set(out) == {"loss", "loss/feature_mse", "loss/edge", "cos/feature_mse"}
        optimizer_step(out["loss"], optimizer, scaler, list(distiller.parameters()), 10.0)
        losses.append(float(out["loss"].detach()))
        cosines.append(float(out["cos/feature_mse"]))
    assert losses[-1] < 0.7 * losses[0]
    assert cosines[-1] > cosines[0] + 0.2
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in distiller.adapters.parameters())


def test_loss_is_the_weighted_sum_of_terms(tiny_config):
    torch.manual_seed(0)
    student = build_student(tiny_config.student)
    teacher = build_teacher(tiny_config.teachers["sam"])
    terms = build_loss_terms(tiny_config.distill, student.feature_info, {"sam": teacher.feature_shapes()})
    out = kd_step(
        Distiller(student, terms),
        KDBatch(torch.randn(2, 3, 64, 64), torch.full((2, 2), 64)),
        terms,
        {"sam": teacher},
    )
    expected = sum(terms[name].weight * out[f"loss/{name}"] for name in terms)
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_padding_is_masked_out_of_the_feature_loss(tiny_config):
    torch.manual_seed(0)
    student = build_student(tiny_config.student)
    teacher = build_teacher(tiny_config.teachers["sam"])
    terms = build_loss_terms(tiny_config.distill, student.feature_info, {"sam": teacher.feature_shapes()})
    term = terms["feature_mse"]
    target = torch.zeros(1, 256, 4, 4)
    pred = torch.zeros(1, 256, 4, 4)
    pred[..., 2:, :] = 5.0  # wrong only in the bottom half, which is padding for a 32 px tall image
    batch = KDBatch(torch.zeros(1, 3, 64, 64), torch.tensor([[32, 64]]), {term.teacher_key: target})
    loss, _ = term(pred, batch)
    assert float(loss) == 0.0
