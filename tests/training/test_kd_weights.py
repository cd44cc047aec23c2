"""Adaptive KD weights (RT-DETRv4's gradient-guided modulation): the share a probe measures, the
steering towards the band within x0.1-x10 per epoch, and a probed step that trains as any other."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.losses.config import AdaptiveWeightConfig
from vfmkd_ray.models.teachers.build import build_teacher, teacher_shapes
from vfmkd_ray.training.kd_weights import GRAPH_PREFIX, AdaptiveKDWeights, steered_weight
from vfmkd_ray.training.step import train_step
from vfmkd_ray.training.task import build_task


def test_a_share_outside_the_band_moves_the_weight_towards_rho_by_the_odds():
    assert steered_weight(2.0, 0.1, rho=0.1, delta=0.02) == 2.0  # inside: left alone
    up = steered_weight(1.0, 0.05, rho=0.1, delta=0.02)  # below: the odds of 0.05 -> those of 0.1
    assert up == pytest.approx((0.1 * 0.95) / (0.05 * 0.9))
    down = steered_weight(1.0, 0.5, rho=0.1, delta=0.02)  # above
    assert down == pytest.approx((0.1 * 0.5) / (0.5 * 0.9))
    assert steered_weight(1.0, 1e-6, rho=0.5, delta=0.1) == 10.0  # the clamp, either way
    assert steered_weight(1.0, 1 - 1e-6, rho=0.5, delta=0.1) == 0.1
    assert steered_weight(0.0, 0.01, 0.1, 0.02) == 0.0 and steered_weight(1.0, math.nan, 0.1, 0.02) == 1.0
    # Cancelling gradients can make a term's norm exceed the total's: it dominates, so it shrinks.
    assert steered_weight(1.0, 4.0, rho=0.1, delta=0.02) == 0.1
    for rho, delta in ((0.05, 0.1), (0.9, 0.2)):
        with pytest.raises(ValueError, match="must lie in"):
            AdaptiveWeightConfig(rho=rho, delta=delta)


def test_on_a_toy_two_loss_problem_the_share_enters_the_band_within_the_clamp():
    """A 'backbone' of 16 weights under a main loss and a KD term 1000x weaker: each epoch's probe
    measures the term's share, and the steering brings it into 0.3 +/- 0.05 in a few epochs,
    never moving the weight more than 10x in one."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(16))
    main_target, kd_target = torch.randn(16), torch.randn(16)
    term = SimpleNamespace(weight=1e-3, adaptive=AdaptiveWeightConfig(rho=0.3, delta=0.05, probe_every=1))
    weights = AdaptiveKDWeights({"kd": term})
    shares, history = [], [term.weight]
    for _ in range(8):
        main = (theta - main_target).pow(2).sum()
        kd = term.weight * (theta - kd_target).pow(2).sum()
        losses = {"loss": main + kd, f"{GRAPH_PREFIX}kd": kd}
        norms = weights.probe(losses, weights.probing(0), [theta], lambda loss: loss * 1024.0)
        record = weights.record_fields({k: float(v) for k, v in norms.items()})
        shares.append(record["grad_share/kd"])
        weights.end_epoch(record, next_is_mosaic=True)
        history.append(term.weight)
    assert shares[0] < 0.01 and 0.25 <= shares[-1] <= 0.35
    assert all(1 / 10 <= b / a <= 10 for a, b in itertools.pairwise(history))
    assert weights.state_dict() == {"weights": {"kd": term.weight}}
    steered = term.weight
    with weights.configured_weights():  # validation's losses
        assert term.weight == 1e-3
    assert term.weight == steered
    weights.end_epoch({"grad_share/kd": shares[-1]}, next_is_mosaic=False)  # close-mosaic
    assert term.weight == 1e-3


def test_a_probed_step_trains_as_an_unprobed_one_and_reports_the_share(tiny_config):
    term = tiny_config.distill.terms["feature_mse"].model_copy(
        update={"adaptive": AdaptiveWeightConfig(rho=0.2, delta=0.05, probe_every=1)}
    )
    distill = tiny_config.distill.model_copy(
        update={"terms": {**tiny_config.distill.terms, "feature_mse": term}}
    )
    adaptive = tiny_config.model_copy(update={"distill": distill})
    teacher = build_teacher(tiny_config.teachers["sam"])
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = Batch(images, torch.full((4, 2), 64))
    batch.teacher_features = {f"sam/{k}": v for k, v in teacher(images).items()}
    states, outs = [], []
    for cfg in (adaptive, tiny_config):
        task = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"))
        task.parts.model.train()
        outs.append(train_step(task.parts.model, batch, task, 10.0))
        states.append(task.parts.model.state_dict())
        if cfg is adaptive:
            assert "kd_weights" in task.stateful()
    assert all(torch.equal(states[0][k], v) for k, v in states[1].items())
    assert 0 < outs[0]["grad_norm/feature_mse"] < outs[0]["grad_norm/feature_mse.total"]
    assert "grad_norm/feature_mse" not in outs[1]
    assert not any(key.startswith(GRAPH_PREFIX) for key in outs[0])


def test_an_adaptive_term_with_a_frozen_backbone_is_refused(tiny_config):
    from vfmkd_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.freeze_backbone trains no backbone parameter"):
        load_config(
            "configs/demo.yaml",
            ["train.freeze_backbone=true", "distill.terms.feature_mse.adaptive={rho: 0.2}"],
        )
