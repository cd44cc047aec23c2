"""The ``tune`` section: what to search, how many trials, and how to stop the bad ones early."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from vfmkd_ray.schema import StrictModel


class Dimension(StrictModel):
    """One searched config key: ``uniform``/``loguniform`` between ``low`` and ``high``,
    ``choice`` (sampled) or ``grid`` (every value) over ``values``."""

    kind: Literal["uniform", "loguniform", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Dimension:
        if self.kind in ("uniform", "loguniform"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.kind} needs low < high, got low={self.low} high={self.high}")
            if self.kind == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs low > 0, got {self.low}")
        elif not self.values:
            raise ValueError(f"{self.kind} needs a non-empty values list")
        return self

    def example(self) -> Any:
        """A value of this dimension, to check the key accepts it before any trial runs."""
        return self.values[0] if self.values else self.low


class ASHAConfig(StrictModel):
    grace_period: int = Field(1, ge=1, description="epochs every trial gets before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1, description="default: train.epochs")


class TuneConfig(StrictModel):
    space: dict[str, Dimension] = Field(default_factory=dict, description="dotted config key -> dimension")
    num_samples: int = Field(4, ge=1, description="trials (per grid point when grid dimensions exist)")
    max_concurrent_trials: int = Field(2, ge=1)
    metric: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    scheduler: ASHAConfig = ASHAConfig()
    search: Literal["random", "optuna"] = Field("random", description="optuna needs `pip install optuna`")
    top_k: int = Field(5, ge=1, description="trials printed at the end")
