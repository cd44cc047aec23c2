"""Base class for every config section: typed, immutable after validation, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown keys, re-validates on assignment and takes only finite
    floats: ``.inf`` or ``.nan`` (YAML's spellings) in a learning rate, weight or threshold is a
    typo, never a setting (no section means "unbounded" by infinity)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)
