"""The ``tracking`` section as the workers must see it, settled on the driver: the MLflow URI from
``MLFLOW_TRACKING_URI`` when the config leaves it out (a cluster's workers do not have this
process's environment), local paths made absolute (workers run in other folders), and a missing
MLflow client refused before any Ray work."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlsplit

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError
from vfmkd_ray.tracking.config import TrackingConfig

MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
SQLITE = "sqlite:///"


def resolve_tracking(settings: TrackingConfig) -> TrackingConfig:
    """Raises ConfigError naming what is missing."""
    if settings.backend == "tensorboard":
        return settings.model_copy(update={"uri": storage.absolute(settings.uri) if settings.uri else None})
    if settings.backend != "mlflow":
        return settings
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("tracking.backend mlflow needs the MLflow client: pip install 'vfmkd_ray[mlflow]'")
    uri = settings.uri or os.environ.get(MLFLOW_URI_ENV)
    if not uri:
        raise ConfigError(
            f"tracking.backend mlflow: set tracking.uri (e.g. http://mlflow-host:5000) or {MLFLOW_URI_ENV}"
        )
    return settings.model_copy(update={"uri": _absolute_mlflow_uri(uri)})


def _absolute_mlflow_uri(uri: str) -> str:
    if uri.startswith(SQLITE) and not uri[len(SQLITE) :].startswith("/"):
        return SQLITE + str(Path(uri[len(SQLITE) :]).resolve())
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        return Path(uri.removeprefix("file://").removeprefix("file:")).resolve().as_uri()
    if not scheme:
        return Path(uri).resolve().as_uri()
    return uri
