"""``vfmkd submit`` and ``vfmkd jobs``: commands as Ray jobs over the job server's HTTP API.

The repository is uploaded as the job's working directory (without data, outputs, virtualenvs and
weights) and the command runs as ``python -m jobs.<command>``. The runtime environment is the
cluster's own, a pip list (the project's dependencies), or a container image. Environment variables
are passed by name; their values are never printed, and secrets are never passed at all: Ray writes
runtime-env variables in clear text into its logs and shows them in the dashboard, so keys and
tokens come from the cluster's own environment, an instance role, or a mounted secret file. With
token authentication (Ray >= 2.59 enables it on local clusters) the client sends
``RAY_AUTH_TOKEN``, or the token in ``~/.ray/auth_token``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from vfmkd_ray.config_yaml import read_yaml_file
from vfmkd_ray.object_storage import forwarded_env, looks_secret

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT_RETRIES, AGENT_RETRY_S = 15, 2.0
COMMANDS = ("demo", "precompute", "train", "tune", "transfer", "export", "eval")
# gitignore-style; a leading "/" anchors to the repository root (vfmkd_ray/data is code).
UPLOAD_EXCLUDES = [
    "/.git",
    "/.venv",
    "/outputs",
    "/data",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.parquet",
    "*.pth",
    "*.pt",
    "*.safetensors",
    "*.onnx",
]


class SubmissionError(RuntimeError):
    """The job server refused a request or a job ended badly; the message says which and why."""


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    message: str
    logs: str


def auth_token() -> str | None:
    """``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token``."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() or None if path.is_file() else None


def client(address: str) -> JobSubmissionClient:
    # Sent as a header ourselves: Ray's client reads RAY_AUTH_MODE once, when Ray is imported.
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as err:
        raise SubmissionError(
            f"cannot reach the Ray job server at {address}: {type(err).__name__}: {err}"
        ) from None


def runtime_env(runtime: str, image: str | None, env_names: list[str]) -> dict:
    """Working directory upload plus the chosen environment; ``env_names`` are read from this
    process's environment (a missing one, or one that looks like a secret, is an error naming it)."""
    env = dict(forwarded_env())
    for name in env_names:
        if looks_secret(name):
            raise SubmissionError(
                f"--env {name}: looks like a secret, and Ray logs runtime-env values in clear text; "
                "set it in the cluster nodes' environment, use an instance role, or mount it as a file "
                "(AWS_SHARED_CREDENTIALS_FILE for S3 keys)"
            )
        if name not in os.environ:
            raise SubmissionError(f"--env {name}: not set in this environment")
        env[name] = os.environ[name]
    spec: dict = {"working_dir": str(REPO_ROOT), "excludes": UPLOAD_EXCLUDES, "env_vars": env}
    if runtime == "pip":
        spec["pip"] = project_dependencies()
    elif runtime == "image":
        if not image:
            raise SubmissionError("--runtime image needs --image URI")
        spec["image_uri"] = image
    return spec


def refuse_secret_arguments(args: list[str]) -> None:
    """A key in an override or in the config file would travel in clear text: the entrypoint is
    printed and kept in the job's info, the working directory upload holds the file."""
    for arg in args:
        key = arg.partition("=")[0]
        if "=" in arg and looks_secret(key.replace(".", "_")):
            raise SubmissionError(
                f"{key}=...: a secret in a job's arguments is kept in clear text by Ray; give the "
                "cluster's nodes their own credentials (environment, instance role, mounted file)"
            )
        path = Path(arg)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            raw = read_yaml_file(path)
            s3 = (raw.get("s3") if isinstance(raw, dict) else None) or {}
            if isinstance(s3, dict) and (set(s3) & {"access_key_id", "secret_access_key"}):
                raise SubmissionError(
                    f"{arg} holds s3 keys, which the job's upload would carry in clear text: remove "
                    "them and give the cluster's nodes their own credentials"
                )


def project_dependencies() -> list[str]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def submit(
    address: str,
    command: str,
    args: list[str],
    runtime: str = "cluster",
    image: str | None = None,
    env_names: list[str] | None = None,
) -> str:
    if command not in COMMANDS:
        raise SubmissionError(f"cannot submit {command!r}; commands: {', '.join(COMMANDS)}")
    refuse_secret_arguments(args)
    spec = runtime_env(runtime, image, env_names or [])
    entrypoint = " ".join(["python", "-m", f"jobs.{command}", *(shlex.quote(a) for a in args)])
    jobs = client(address)
    for attempt in range(AGENT_RETRIES + 1):
        try:
            job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env=spec)
            break
        except Exception as err:
            # A head that has just started answers 500 "No available agent" for a few seconds.
            if "No available agent" in str(err) and attempt < AGENT_RETRIES:
                time.sleep(AGENT_RETRY_S)
                continue
            raise SubmissionError(f"the job server at {address} refused the job: {err}") from None
    print(
        f"submitted {job_id}: {entrypoint}  (env: {', '.join(sorted(spec['env_vars'])) or 'none'})",
        flush=True,
    )
    return job_id


def follow(address: str, job_id: str, poll_s: float = 2.0, timeout_s: float | None = None) -> JobOutcome:
    """Prints new log lines until the job ends; returns its final status and logs."""
    jobs = client(address)
    shown, started = 0, time.monotonic()
    while True:
        status = jobs.get_job_status(job_id)
        logs = jobs.get_job_logs(job_id)
        sys.stdout.write(logs[shown:])
        sys.stdout.flush()
        shown = len(logs)
        if status.is_terminal():
            info = jobs.get_job_info(job_id)
            return JobOutcome(job_id, str(status.value), info.message or "", logs)
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise SubmissionError(f"job {job_id} still {status.value} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def status(address: str, job_id: str) -> tuple[str, str]:
    info = client(address).get_job_info(job_id)
    return str(info.status.value), info.message or ""


def logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return client(address).stop_job(job_id)


def succeeded(outcome: JobOutcome) -> bool:
    return outcome.status == JobStatus.SUCCEEDED.value
