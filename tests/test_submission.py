"""Job submission pieces that need no cluster: runtime env, entrypoints and refusals."""

import pytest

from vfmkd_ray.cli import main
from vfmkd_ray.object_storage import FORWARDED_ENV
from vfmkd_ray.submission import (
    COMMANDS,
    REPO_ROOT,
    SubmissionError,
    project_dependencies,
    refuse_secret_arguments,
    runtime_env,
    submit,
)


def test_runtime_env_uploads_the_repo_without_data_and_passes_env_by_name(monkeypatch):
    for name in FORWARDED_ENV:  # another test's S3 server may have set some
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VFMKD_EXPERIMENT_TAG", "nightly")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    spec = runtime_env("cluster", None, ["VFMKD_EXPERIMENT_TAG"])
    assert spec["working_dir"] == str(REPO_ROOT)
    assert {"/.venv", "/outputs", "/data", "*.parquet", "*.pth"} <= set(spec["excludes"])
    assert not any(pattern in ("data", "data/") for pattern in spec["excludes"]), "vfmkd_ray/data is code"
    assert spec["env_vars"] == {"VFMKD_EXPERIMENT_TAG": "nightly", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    assert "pip" not in spec and "image_uri" not in spec
    assert runtime_env("pip", None, [])["pip"] == project_dependencies()
    assert any(dep.startswith("ray[") for dep in project_dependencies())
    assert runtime_env("image", "rayproject/ray:2.60.0-py311", [])["image_uri"].endswith("py311")
    with pytest.raises(SubmissionError, match="--env NOT_SET_ANYWHERE: not set"):
        runtime_env("cluster", None, ["NOT_SET_ANYWHERE"])
    with pytest.raises(SubmissionError, match="needs --image"):
        runtime_env("image", None, [])


@pytest.mark.parametrize("name", ["WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "DB_PASSWORD"])
def test_secrets_are_refused_as_runtime_env_variables(monkeypatch, name):
    """Ray writes runtime-env values into runtime_env_agent.log and the dashboard."""
    monkeypatch.setenv(name, "secret-value")
    with pytest.raises(SubmissionError, match=f"--env {name}: looks like a secret") as err:
        runtime_env("cluster", None, [name])
    assert "secret-value" not in str(err.value)


def test_every_command_has_a_job_entrypoint():
    for command in COMMANDS:
        assert (REPO_ROOT / "jobs" / f"{command}.py").is_file()
    with pytest.raises(SubmissionError, match="cannot submit 'verify'"):
        submit("http://127.0.0.1:1", "verify", [])


def test_unreachable_job_server_is_a_clear_error(capsys):
    assert main(["jobs", "status", "raysubmit_x", "--address", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in capsys.readouterr().err


def test_secrets_in_a_jobs_arguments_or_config_file_are_refused(tmp_path):
    with pytest.raises(SubmissionError, match=r"s3.secret_access_key=\.\.\.: a secret") as err:
        refuse_secret_arguments(["configs/demo.yaml", "s3.secret_access_key=hunter2"])
    assert "hunter2" not in str(err.value)
    config = tmp_path / "keys.yaml"
    config.write_text("s3:\n  access_key_id: AKIDEXAMPLE\n")
    with pytest.raises(SubmissionError, match="keys.yaml holds s3 keys"):
        refuse_secret_arguments([str(config)])
    refuse_secret_arguments(["configs/demo.yaml", "s3.endpoint_url=http://127.0.0.1:9", "train.lr=1e-3"])


@pytest.mark.parametrize(
    "name", ["GOOGLE_APPLICATION_CREDENTIALS", "AWS_SHARED_CREDENTIALS_FILE", "MY_KEY_PATH"]
)
def test_where_a_secret_is_may_travel(monkeypatch, name):
    monkeypatch.setenv(name, "/mnt/secrets/file")
    assert runtime_env("cluster", None, [name])["env_vars"][name] == "/mnt/secrets/file"
