"""``AdaptiveKDWeights``: each adaptive KD term's weight, steered by its share of the backbone's
gradient (after RT-DETRv4's gradient-guided adaptive modulation, arXiv 2510.25257).

On probe steps (every ``probe_every``), a term's share is ``|d(w L_term)/d backbone| / |d L_total /
d backbone|``, measured with ``torch.autograd.grad`` on the step's own graph (no optimiser effect;
the probed step then trains as any other). The epoch's record averages the shares
(``train/grad_share/<term>``); at its end a share outside ``[rho - delta, rho + delta]`` rescales
the weight towards the nearer edge by the odds ratio (if the term's gradient scales with its weight
and the rest does not, a share ``p`` has odds ``p / (1 - p)`` proportional to the weight), clamped
to x0.1-x10 per epoch. The close-mosaic epochs train with the configured weight: the samples change
regime, and the last epochs are not the place to move a loss's weight. The weights are a stateful
part of every checkpoint; each record carries them (``kd_weight/<term>``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vfmkd_ray.losses.base import LossTerm

SHARE_PREFIX = "grad_share/"
WEIGHT_PREFIX = "kd_weight/"
GRAPH_PREFIX = "graph/"  # model_step's weighted term losses, kept with their graph for a probe
MAX_FACTOR = 10.0  # the most a weight moves in one epoch, either way


class AdaptiveKDWeights:
    def __init__(self, terms: dict[str, LossTerm]):
        self.terms = {name: term for name, term in terms.items() if term.adaptive is not None}
        self.configured = {name: term.weight for name, term in self.terms.items()}

    def __bool__(self) -> bool:
        return bool(self.terms)

    def probing(self, step: int) -> list[str]:
        """The adaptive terms whose share step ``step`` (of the run, 0-based) measures."""
        return [name for name, term in self.terms.items() if step % term.adaptive.probe_every == 0]

    def probe(self, losses: dict[str, torch.Tensor], names: list[str], params: list[nn.Parameter]) -> dict:
        """``grad_share/<term>`` of each of ``names``, from the step's ``loss`` and its
        ``graph/<term>`` (``model_step(..., keep_graph=True)``), over ``params``."""
        total = _grad_norm(losses["loss"], params)
        shares = {}
        for name in names:
            share = _grad_norm(losses[f"{GRAPH_PREFIX}{name}"], params) / total.clamp_min(1e-12)
            shares[f"{SHARE_PREFIX}{name}"] = share.detach()
        return shares

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
                share = record.get(f"train/{SHARE_PREFIX}{name}")
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
    share that is not a number in (0, 1)."""
    if not math.isfinite(share) or not 0.0 < share < 1.0 or weight <= 0.0 or abs(share - rho) <= delta:
        return weight
    factor = (rho * (1.0 - share)) / (share * (1.0 - rho))
    return weight * min(max(factor, 1.0 / MAX_FACTOR), MAX_FACTOR)


def _grad_norm(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    squares = [g.float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(squares).sum().sqrt() if squares else torch.zeros((), device=loss.device)
