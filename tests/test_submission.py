"""Job submission pieces that need no cluster: runtime env, entrypoints and refusals."""

import pytest

from vfmkd_ray.cli import main
from vfmkd_ray.submission import (
    COMMANDS,
    REPO_ROOT,
    SubmissionError,
    project_dependencies,
    runtime_env,
    submit,
)


def test_runtime_env_uploads_the_repo_without_data_and_passes_env_by_name(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-value")
    spec = runtime_env("cluster", None, ["WANDB_API_KEY"])
    assert spec["working_dir"] == str(REPO_ROOT)
    assert {"/.venv", "/outputs", "/data", "*.parquet", "*.pth"} <= set(spec["excludes"])
    assert not any(pattern in ("data", "data/") for pattern in spec["excludes"]), "vfmkd_ray/data is code"
    assert spec["env_vars"]["WANDB_API_KEY"] == "secret-value"
    assert "pip" not in spec and "image_uri" not in spec
    assert runtime_env("pip", None, [])["pip"] == project_dependencies()
    assert any(dep.startswith("ray[") for dep in project_dependencies())
    assert runtime_env("image", "rayproject/ray:2.60.0-py311", [])["image_uri"].endswith("py311")
    with pytest.raises(SubmissionError, match="--env NOT_SET_ANYWHERE: not set"):
        runtime_env("cluster", None, ["NOT_SET_ANYWHERE"])
    with pytest.raises(SubmissionError, match="needs --image"):
        runtime_env("image", None, [])


def test_every_command_has_a_job_entrypoint():
    for command in COMMANDS:
        assert (REPO_ROOT / "jobs" / f"{command}.py").is_file()
    with pytest.raises(SubmissionError, match="cannot submit 'verify'"):
        submit("http://127.0.0.1:1", "verify", [])


def test_unreachable_job_server_is_a_clear_error(capsys):
    assert main(["jobs", "status", "raysubmit_x", "--address", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in capsys.readouterr().err
