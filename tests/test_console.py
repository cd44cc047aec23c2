"""The console a command prints to, and the early checks of where it reads and writes: Ray-free."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vfmkd_ray.config import ConfigError
from vfmkd_ray.console import LOG_DIR_ENV, RAY_JOB_ENV, console
from vfmkd_ray.locations import check_locations

# Stands in for Ray: something that writes to file descriptor 2 behind Python's back.
_COMMAND = """
import os, sys
from vfmkd_ray.console import console
with console("probe", verbose=len(sys.argv) > 1) as out:
    import logging
    logging.getLogger("vfmkd_ray.probe").info("a product line")
    os.write(2, b"raylet noise\\n")
    with console("inner") as inner:
        assert inner is out, "a command inside another shares its console"
    out.error("vfmkd probe: error: image caf\\udce9.png is bad")
"""


def _probe(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, LOG_DIR_ENV: str(tmp_path / "logs"), **env}
    return subprocess.run(
        [sys.executable, "-c", _COMMAND, *args], capture_output=True, text=True, env=environment, timeout=60
    )


def test_the_person_sees_product_lines_and_one_error_line_the_rest_goes_to_the_log(tmp_path):
    done = _probe(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "[vfmkd] a product line" and len(lines) == 2
    assert lines[1].startswith("vfmkd probe: error: image caf\\udce9.png is bad (full log: ")
    log_file = Path(lines[1].rsplit("(full log: ", 1)[1].rstrip(")"))
    assert log_file.parent == tmp_path / "logs" and log_file.read_text() == "raylet noise\n"


@pytest.mark.parametrize("how", ["--verbose", "ray job"])
def test_nothing_is_diverted_when_verbose_or_in_a_ray_jobs_driver(tmp_path, how):
    done = _probe(tmp_path, "--verbose") if how == "--verbose" else _probe(tmp_path, **{RAY_JOB_ENV: "{}"})
    assert done.returncode == 0, done.stderr
    assert "raylet noise" in done.stderr and "(full log:" not in done.stderr


def test_an_unwritable_log_folder_leaves_stderr_alone(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = _probe(tmp_path, **{LOG_DIR_ENV: str(blocker / "logs")})
    assert done.returncode == 0, done.stderr
    assert "raylet noise" in done.stderr


def test_under_a_tests_capture_the_console_writes_to_sys_stderr(capsys):
    with console("captured") as out:
        out.error("one line")
    assert capsys.readouterr().err == "one line\n" and out.log_path is None


def test_locations_of_the_wrong_kind_are_named_before_any_work(tiny_config, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cfg = tiny_config.model_copy(deep=True)
    cfg.store.root = str(a_file)
    with pytest.raises(ConfigError, match=rf"store.root={a_file} is a file, not a directory"):
        check_locations(cfg, writes=("store.root",))
    cfg.store.root = str(a_file / "below")
    with pytest.raises(ConfigError, match=rf"store.root={a_file}/below lies under the file {a_file}"):
        check_locations(cfg, writes=("store.root",))
    with pytest.raises(ConfigError, match=rf"store.root={a_file}/below lies under the file"):
        check_locations(cfg, may_read=("store.root",), writes=("store.root",))
    cfg.data.root = str(tmp_path / "no-data")
    with pytest.raises(ConfigError, match=r"data.root=.*no-data does not exist"):
        check_locations(cfg, reads=("data.root",))

    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    for spelling in ("~/data", f"file://{tmp_path}/data"):
        cfg.data.root = spelling
        check_locations(cfg, reads=("data.root",))
    cfg.store.root = str(tmp_path / "not-yet")  # a store training may do without
    check_locations(cfg, may_read=("store.root",), writes=("train.storage_path",))


def test_an_output_in_a_missing_bucket_is_named(tiny_config, s3_bucket):
    cfg = tiny_config.model_copy(deep=True)
    cfg.train.storage_path = f"{s3_bucket}/team/runs"  # a prefix not there yet, in a bucket that is
    check_locations(cfg, writes=("train.storage_path",))
    cfg.train.storage_path = "s3://no-such-bucket-vfmkd/runs"
    with pytest.raises(ConfigError, match="the bucket s3://no-such-bucket-vfmkd does not exist"):
        check_locations(cfg, writes=("train.storage_path",))
