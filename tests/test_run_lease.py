"""One driver per run: the run lease, locally and on the moto S3 server, and the drivers that take
it (Ray-free: a refused driver stops before Ray or any write)."""

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from vfmkd_ray import run_config, run_files, storage
from vfmkd_ray.cli import main
from vfmkd_ray.config import dump_config, load_config
from vfmkd_ray.run_lease import LEASE_DIR, RunInUseError, RunLease


def _race(run_dir: str, drivers: int = 6) -> tuple[list[RunLease], list[str]]:
    """``drivers`` threads take the lease of ``run_dir`` at the same moment."""
    start = threading.Barrier(drivers)
    won, refused = [], []

    def driver(number: int) -> None:
        lease = RunLease(run_dir, f"driver {number}")
        start.wait()
        try:
            lease.acquire()
            won.append(lease)
        except RunInUseError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=driver, args=(n,)) for n in range(drivers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, refused


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "runs" / "demo")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/runs/demo"


def test_of_drivers_racing_for_one_run_exactly_one_proceeds(run_dir):
    won, refused = _race(run_dir)
    assert len(won) == 1 and len(refused) == 5
    owner = won[0].record
    assert all(f"run {run_dir} is in use by driver " in line and "\n" not in line for line in refused)
    assert all(f"(pid {owner.pid} on {owner.host}, started " in line for line in refused)
    won[0].release()
    assert storage.list_files(storage.join(run_dir, LEASE_DIR), "*.json") == []
    again, _ = _race(run_dir, drivers=3)  # released: the run can be taken again
    assert len(again) == 1
    again[0].release()


def test_a_stale_lease_is_taken_over_once_with_a_warning(run_dir, caplog):
    dead = {"owner": "x", "host": "gone-host", "pid": 4242, "command": "vfmkd train", "started": 0.0}
    old = time.time() - 600
    storage.write_text_atomic(
        storage.join(run_dir, LEASE_DIR, "000003.json"), json.dumps(dead | {"heartbeat": old})
    )
    won, refused = _race(run_dir, drivers=4)
    assert len(won) == 1 and len(refused) == 3 and won[0].generation == 4
    assert "took over the lease" in caplog.text and "pid 4242 on gone-host" in caplog.text
    won[0].release()  # its own generation and the stale one
    assert storage.list_files(storage.join(run_dir, LEASE_DIR), "*.json") == []


def test_the_heartbeat_keeps_a_lease_live_and_a_takeover_stops_the_driver(tmp_path, caplog):
    run_dir = str(tmp_path / "run")
    stopped = threading.Event()
    lease = RunLease(run_dir, "vfmkd train", stale_after_s=2.0, heartbeat_s=0.2, on_lost=stopped.set)
    with lease:
        time.sleep(2.5)  # longer than the bound: only the heartbeat keeps it live
        with pytest.raises(RunInUseError, match=r"last heartbeat [01] s ago"):
            RunLease(run_dir, "second", stale_after_s=2.0).acquire()
        # A driver that judged this one dead and took the run over (as a frozen process would see).
        usurper = RunLease(run_dir, "usurper", heartbeat_s=60)
        usurper.generation = lease.generation + 1
        assert storage.write_bytes_atomic(
            usurper._uri(usurper.generation), usurper._payload(), exclusive=True
        )
        assert stopped.wait(10), "the driver that lost its lease was not stopped"
        assert lease.lost and "was taken over by usurper" in caplog.text
    # The loser deletes nothing: the usurper's lease stands.
    assert [Path(u).name for u in storage.list_files(f"{run_dir}/{LEASE_DIR}", "*.json")] == [
        f"{lease.generation:06d}.json",
        f"{usurper.generation:06d}.json",
    ]


class _LateReader(RunLease):
    """Its first look at the lease folder is ``listed``: what it saw before the holder released."""

    def __init__(self, *args, listed: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.listed = [listed]

    def _generations(self) -> list[int]:
        return self.listed.pop() if self.listed else super()._generations()


def test_a_lease_released_while_another_driver_looks_is_not_taken_for_a_dead_one(tmp_path, caplog):
    """A driver that listed a live lease which was released before it read it must look again,
    not take the missing file for a stale lease and hold generation 2 beside the next driver's 1."""
    run_dir = str(tmp_path / "run")
    first = RunLease(run_dir, "first")
    first.acquire()
    late = _LateReader(run_dir, "late", listed=[first.generation])
    first.release()
    late.acquire()
    assert late.generation == 1 and "took over" not in caplog.text
    late.release()


def test_the_lease_is_released_when_the_driver_fails(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="the run failed"), RunLease(run_dir, "vfmkd train"):
        raise RuntimeError("the run failed")
    with RunLease(run_dir, "next"):
        pass


def _tiny_train_config(tmp_path, **train) -> Path:
    from vfmkd_ray.data.config import DataConfig
    from vfmkd_ray.data.synthetic import write_synthetic_coco

    data = {"root": str(tmp_path / "data"), "synthetic": {"num_images": 8, "image_size": 64}}
    write_synthetic_coco(DataConfig.model_validate(data))
    raw = {
        "name": "leased",
        "data": data | {"input_size": 64},
        "distill": {"terms": {"edge": {"type": "edge"}}},
        "train": {"storage_path": str(tmp_path / "runs"), "epochs": 1} | train,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_second_driver_of_a_live_run_is_refused_before_it_writes_anything(tmp_path, capsys):
    config = _tiny_train_config(tmp_path)
    run_dir = str(tmp_path / "runs" / "leased")
    with RunLease(run_dir, "vfmkd train") as first:
        assert main(["train", str(config)]) == 2
        # Nothing of its own: only the first driver's lease.
        assert [p.relative_to(run_dir) for p in Path(run_dir).rglob("*")] == [
            Path(LEASE_DIR),
            Path(LEASE_DIR, f"{first.generation:06d}.json"),
        ]
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vfmkd train: error: run {run_dir} is in use by vfmkd train (pid ")
    assert len(err.splitlines()) == 1
    assert list(Path(run_dir).iterdir()) == []  # released: the lease folder goes too


def test_a_relaunch_with_another_config_is_refused_naming_the_keys(tmp_path, capsys):
    """The second launch used to rewrite the live run's resolved_config.yaml, which eval and export
    then trusted for a run trained with the first config."""
    config = _tiny_train_config(tmp_path)
    run_dir = tmp_path / "runs" / "leased"
    first_cfg = load_config(config, ["data.input_size=128", "train.lr=0.5"])
    run_config.claim_resolved_config(str(run_dir), first_cfg, begun=False)
    (run_dir / "checkpoint_2026-12-05_15-00-00.000000").mkdir()  # it trained: a run to resume
    first = (run_dir / run_files.RESOLVED_CONFIG).read_text()  # as the first launch recorded it
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vfmkd train: error: run {run_dir} was launched with another config (")
    assert "data.input_size: 128 -> 64; train.lr: 0.5 -> 0.002)" in err and len(err.splitlines()) == 1
    assert (run_dir / run_files.RESOLVED_CONFIG).read_text() == first  # left as the run recorded it
    assert not (run_dir / LEASE_DIR).exists()  # released


def test_a_relaunch_may_train_longer_and_on_other_resources(tmp_path):
    """Resuming with more epochs (or another worker count) is the same run, recorded as such."""
    first = load_config(None, ["train.epochs=2", "train.num_workers=2"])
    assert run_config.claim_resolved_config(str(tmp_path), first, begun=False) == []
    longer = load_config(None, ["train.epochs=3", "train.num_workers=1"])
    changes = run_config.claim_resolved_config(str(tmp_path), longer, begun=True)
    assert changes == ["train.epochs: 2 -> 3", "train.num_workers: 2 -> 1"]
    assert (tmp_path / run_files.RESOLVED_CONFIG).read_text() == dump_config(longer)


def test_a_field_added_to_the_schema_since_the_run_began_is_no_change(tmp_path):
    """A run recorded before a field existed resumes: the field's default is what it trained with."""
    cfg = load_config(None, [])
    recorded = yaml.safe_load(dump_config(cfg))
    del recorded["data"]["max_image_pixels"], recorded["train"]["checkpoint_every_steps"]
    (tmp_path / run_files.RESOLVED_CONFIG).write_text(yaml.safe_dump(recorded))
    assert run_config.claim_resolved_config(str(tmp_path), cfg, begun=True) == []
    changed = load_config(None, ["data.max_image_pixels=2000"])
    with pytest.raises(run_files.RunFileError, match=r"\(data.max_image_pixels: 100000000 -> 2000\)"):
        run_config.claim_resolved_config(str(tmp_path), changed, begun=True)


def test_a_run_from_before_channels_last_resumes_under_a_config_that_turns_it_on(tmp_path):
    """The shipped YOLOv8 configs set train.channels_last; a run recorded before the field (so
    without it) resumes under them, the change named, as a checkpoint restores into either layout."""
    cfg = load_config(None, [])
    recorded = yaml.safe_load(dump_config(cfg))
    del recorded["train"]["channels_last"]
    (tmp_path / run_files.RESOLVED_CONFIG).write_text(yaml.safe_dump(recorded))
    turned_on = load_config(None, ["train.channels_last=true"])
    changes = run_config.claim_resolved_config(str(tmp_path), turned_on, begun=True)
    assert changes == ["train.channels_last: False -> True"]


def test_sigterm_releases_the_lease(tmp_path):
    """`vfmkd jobs stop` and schedulers send SIGTERM: the command exits through its cleanup."""
    import signal
    import subprocess
    import sys

    run_dir, ready = tmp_path / "run", tmp_path / "ready"
    script = (
        "import sys, time; from pathlib import Path\n"
        "from vfmkd_ray.cli import _sigterm_exits\n"
        "from vfmkd_ray.run_lease import RunLease\n"
        f"with _sigterm_exits(), RunLease({str(run_dir)!r}, 'vfmkd train'):\n"
        f"    Path({str(ready)!r}).touch(); time.sleep(60)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((run_dir / LEASE_DIR).iterdir()), "the driver holds the lease"
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (run_dir / LEASE_DIR).exists()


def test_a_lease_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    from tests.small_disk import fill, small_disk

    with small_disk(tmp_path / "small", "64k") as disk:
        fill(disk)
        with pytest.raises(storage.StorageError) as caught:
            RunLease(str(disk / "run"), "vfmkd train").acquire()
        lease = disk / "run" / LEASE_DIR / "000001.json"
        assert str(caught.value) == f"cannot write {lease}: [Errno 28] No space left on device"
        assert list((disk / "run" / LEASE_DIR).iterdir()) == []  # no temporary left


def test_s3_keys_in_the_config_are_no_change_on_a_relaunch(tmp_path):
    """Written configs mask the keys; reading one back takes the mask as unset. The relaunch of the
    same config (keys and all) is the same run."""
    cfg = load_config(None, ["s3.access_key_id=AKIAEXAMPLE", "s3.secret_access_key=secret"])
    assert run_config.claim_resolved_config(str(tmp_path), cfg, begun=True) == []
    assert run_config.claim_resolved_config(str(tmp_path), cfg, begun=True) == []
    assert "AKIAEXAMPLE" not in (tmp_path / run_files.RESOLVED_CONFIG).read_text()


def test_a_launch_that_stopped_before_training_binds_no_config(tmp_path):
    """A first launch that failed a check (a missing store row, say) left its config but no
    checkpoint: the next launch, with the config fixed, is not refused."""
    failed = load_config(None, ["data.missing_features=error"])
    run_config.claim_resolved_config(str(tmp_path), failed, begun=False)
    fixed = load_config(None, ["data.missing_features=skip"])
    assert run_config.claim_resolved_config(str(tmp_path), fixed, begun=False) == []
    assert (tmp_path / run_files.RESOLVED_CONFIG).read_text() == dump_config(fixed)
    with pytest.raises(run_files.RunFileError, match="data.missing_features: 'skip' -> 'error'"):
        run_config.claim_resolved_config(str(tmp_path), failed, begun=True)
