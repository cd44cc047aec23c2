"""The ``tracking`` section: where a run's metrics go besides its own ``metrics.csv``."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from vfmkd_ray.schema import StrictModel

DEFAULT_EXPERIMENT = "vfmkd"


class TrackingConfig(StrictModel):
    backend: Literal["none", "mlflow", "tensorboard"] = Field(
        "none", description="none, mlflow (a tracking server or file store) or tensorboard (event files)"
    )
    uri: str | None = Field(
        None,
        description="mlflow: the tracking URI (http://host:5000, or MLFLOW_TRACKING_URI when unset); "
        "tensorboard: the log directory (default: the run directory's tensorboard/)",
    )
    experiment: str = Field(
        DEFAULT_EXPERIMENT, description="mlflow: the experiment the runs (and a tune's trials) belong to"
    )

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        parts = urlsplit(uri or "")
        if parts.username or parts.password:
            raise ValueError(
                "tracking.uri must not carry credentials (they would be written to resolved_config.yaml "
                "and shown in messages): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
                "MLFLOW_TRACKING_TOKEN"
            )
        return uri
