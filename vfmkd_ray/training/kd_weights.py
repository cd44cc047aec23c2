"""``AdaptiveKDWeights``: each adaptive KD term's weight, steered by its share of the backbone's
gradient (after RT-DETRv4's gradient-guided adaptive modulation, arXiv 2510.25257).

On probe steps (every ``probe_every``), a term's share is ``|d(w L_term)/d backbone| / |d L_total /
d backbone|``, measured with ``torch.autograd.grad`` on the step's own graph (no optimiser effect;
the probed step then trains as any other). The epoch's record averages the shares
(``train/grad_share/<term>``); at its end a share outside ``[rho - delta, rho + delta]`` rescales
the weight towards the nearer edge by the odds ratio (if the term's gradient scales with its weight
and the rest does not, a share ``p`` has odds ``p / (1 - p)`` proportional to the weight), clamped
to x0.1-x10 per epoch. The close-mosaic epochs train with the configured weight: the samples change
regime, and the last epochs are not the place to move a loss's weight. Validation sums the terms
with the configured weights (``configured_weights``), so ``val/loss`` stays comparable from epoch to
epoch whatever the steering did. The weights are a stateful part of every checkpoint; each record
carries them (``kd_weight/<term>``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vfmkd_ray.losses.base import LossTerm

SHARE_PREFIX = "grad_share/"
NORM_PREFIX = "grad_norm/"  # a probed term's gradient norm; its total's is grad_norm/<term>.total
WEIGHT_PREFIX = "kd_weight/"
GRAPH_PREFIX = "graph/"  # model_step's weighted term losses, kept with their graph for a probe
MAX_FACTOR = 10.0  # the most a weight moves in one epoch, either way
SHARE_RANGE = (1e-4, 1.0 - 1e-4)  # a share steered by: cancelling gradients can give one >= 1


class AdaptiveKDWeights:
    def __init__(self, terms: dict[str, LossTerm]):
        self.terms = {name: term for name, term in terms.items() if term.adaptive is not None}
        self.configured = {name: term.weight for name, term in self.terms.items()}

    def __bool__(self) -> bool:
        return bool(self.terms)

    def probing(self, step: int) -> list[str]:
        """The adaptive terms whose share step ``step`` (of the run, 0-based) measures."""
        return [name for name, term in self.terms.items() if step % term.adaptive.probe_every == 0]

    def probe(
        self, losses: dict[str, torch.Tensor], names: list[str], params: list[nn.Parameter], scale
    ) -> dict[str, torch.Tensor]:
        """``grad_norm/<term>`` and ``grad_norm/<term>.total`` of each of ``names``, from the step's
        ``loss`` and its ``graph/<term>`` (``model_step(..., keep_graph=True)``), over ``params``,
        both through ``scale`` (the step's loss scale: the ratio does not depend on it)."""
        total = _grad_norm(scale(losses["loss"]), params).detach()
        norms = {}
        for name in names:
            norms[f"{NORM_PREFIX}{name}"] = _grad_norm(
                scale(losses[f"{GRAPH_PREFIX}{name}"]), params
            ).detach()
            norms[f"{NORM_PREFIX}{name}.total"] = total
        return norms

    def record_fields(self, train_means: dict[str, float]) -> dict[str, float]:
        """What an epoch's record carries: each term's weight and, where probed, its share."""
        fields = self.weights()
        for name in self.terms:
            term, total = (
                train_means.get(f"{NORM_PREFIX}{name}"),
                train_means.get(f"{NORM_PREFIX}{name}.total"),
            )
            if term is not None and total:
                fields[f"{SHARE_PREFIX}{name}"] = term / total
        return fields

    @contextmanager
    def configured_weights(self) -> Iterator[None]:
        """The terms at their configured weights inside the block (validation's losses)."""
        steered = {name: term.weight for name, term in self.terms.items()}
        for name, term in self.terms.items():
            term.weight = self.configured[name]
        try:
            yield
        finally:
            for name, term in self.terms.items():
                term.weight = steered[name]

    def weights(self) -> dict[str, float]:
        """``kd_weight/<term>``: what the epoch trained with."""
        return {f"{WEIGHT_PREFIX}{name}": term.weight for name, term in self.terms.items()}

    def end_epoch(
        self, record: dict[str, float], next_is_mosaic: bool | None
    ) -> dict[str, tuple[float, float]]:
        """Sets each adaptive term's weight for the next epoch from the record's mean shares;
        ``next_is_mosaic`` False (the next epoch closes the mosaic) restores the configured
        weights. Returns the terms whose weight moved: ``name -> (old, new)``."""
        moved = {}
        for name, term in self.terms.items():
            old = term.weight
            if next_is_mosaic is False:
                new = self.configured[name]
            else:
                share = record.get(f"{SHARE_PREFIX}{name}")
                new = (
                    old
                    if share is None
                    else steered_weight(old, share, term.adaptive.rho, term.adaptive.delta)
                )
            if new != old:
                term.weight = new
                moved[name] = (old, new)
        return moved

    def state_dict(self) -> dict:
        return {"weights": {name: term.weight for name, term in self.terms.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, weight in state["weights"].items():
            if name in self.terms:
                self.terms[name].weight = float(weight)


def steered_weight(weight: float, share: float, rho: float, delta: float) -> float:
    """``weight`` rescaled so that a gradient ``share`` outside ``[rho - delta, rho + delta]`` moves
    to ``rho`` (odds ratio), within x0.1-x10; unchanged inside the band, for a zero weight, or a
    share that is not a number. A share of 1 or more (the term's gradient and the rest's cancel)
    counts as just under 1: the term dominates."""
    if not math.isfinite(share) or weight <= 0.0 or abs(share - rho) <= delta:
        return weight
    share = min(max(share, SHARE_RANGE[0]), SHARE_RANGE[1])
    factor = (rho * (1.0 - share)) / (share * (1.0 - rho))
    return weight * min(max(factor, 1.0 / MAX_FACTOR), MAX_FACTOR)


def _grad_norm(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    if not params:
        raise ValueError(
            "an adaptive KD weight measures the backbone's gradient, but no backbone parameter trains"
        )
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    squares = [g.float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(squares).sum().sqrt() if squares else torch.zeros((), device=loss.device)
