"""S3 settings: from the config or the standard AWS environment, to this process and every worker.

The settings become the standard ``AWS_*`` environment variables, which botocore/s3fs and pyarrow
(``AWS_ENDPOINT_URL``) both read, and which ``ray_session.ensure_ray`` forwards to Ray workers as
job-level environment. Keys given in the config are ``SecretStr``: saved configs, manifests and logs
show them masked. Prefer the credential chain (instance role, IRSA) where there is one.
"""

from __future__ import annotations

import os

from pydantic import SecretStr

from vfmkd_ray.schema import StrictModel

# The variables forwarded to Ray workers (names only are ever logged).
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


class S3Config(StrictModel):
    """Unset fields leave the environment (and the AWS credential chain) as it is."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

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
    """The AWS variables set in this process, for a Ray job's ``runtime_env``."""
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
