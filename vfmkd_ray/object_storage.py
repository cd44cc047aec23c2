"""S3 settings: from the config or the standard AWS environment, to this process and every worker.

The settings become the standard ``AWS_*`` environment variables, which botocore/s3fs and pyarrow
(``AWS_ENDPOINT_URL``) both read. How they reach Ray workers depends on who started Ray:

- a local Ray started by this process inherits its environment, secrets included: nothing travels
  through Ray's runtime env, which Ray writes in clear text into its logs and dashboard;
- a cluster (``RAY_ADDRESS``, or a submitted job) gets only the non-secret settings (endpoint,
  region, profile, the path of a mounted credentials file) from the driver; its nodes hold the
  keys themselves: their own environment, an instance role (IRSA), or a credentials file mounted
  from a secret (``AWS_SHARED_CREDENTIALS_FILE``).

Keys given in the config are ``SecretStr``: saved configs, manifests, logs and config errors show
them masked.
"""

from __future__ import annotations

import os
import re

from pydantic import SecretStr, field_validator

from vfmkd_ray.schema import StrictModel

# Settings that may travel to a cluster in a Ray runtime env (names only are ever logged).
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
# Never put into a runtime env: a cluster's nodes must hold these themselves.
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    # An MLflow server's credentials (tracking.backend: mlflow): never in a URI or a runtime env.
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
# Variable names that look like secrets, refused by ``vfmkd submit --env`` for the same reason.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|(^|_)(API_)?KEY(_ID)?$", re.IGNORECASE)


MASKED = "**********"  # how a saved config (resolved_config.yaml) shows a key


class S3Config(StrictModel):
    """Unset fields leave the environment (and the AWS credential chain) as it is. A key read back
    from a saved config is the mask, and counts as unset: exporting it would replace real keys."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

    @field_validator("access_key_id", "secret_access_key", mode="before")
    @classmethod
    def _mask_is_unset(cls, value: object) -> object:
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if secret == MASKED else value

    def apply(self) -> None:
        """Exports the configured settings as ``AWS_*`` variables of this process."""
        settings = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id.get_secret_value() if self.access_key_id else None,
            "AWS_SECRET_ACCESS_KEY": (
                self.secret_access_key.get_secret_value() if self.secret_access_key else None
            ),
        }
        for name, value in settings.items():
            if value:
                os.environ[name] = value


def forwarded_env() -> dict[str, str]:
    """The non-secret AWS settings of this process, for a cluster job's ``runtime_env``."""
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}


def secrets_left_behind() -> list[str]:
    """The secret variables set here (AWS, MLflow) that a cluster's workers will not get from this
    process."""
    return [name for name in SECRET_ENV if os.environ.get(name)]


# Names that hold where a secret is, not the secret (e.g. GOOGLE_APPLICATION_CREDENTIALS).
PATH_NAME = re.compile(r"(_FILE|_PATH|_DIR|^GOOGLE_APPLICATION_CREDENTIALS)$", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    if name in SECRET_ENV:
        return True
    return name not in FORWARDED_ENV and not PATH_NAME.search(name) and bool(SECRET_NAME.search(name))
