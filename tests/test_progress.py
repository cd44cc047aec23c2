"""Live progress and rank 0's relayed lines, drawn on the person's console: Ray-free."""

from __future__ import annotations

import inspect
import io
import logging
import re
import sys

import pytest

from vfmkd_ray import console
from vfmkd_ray.console import Console
from vfmkd_ray.progress import progress_bar
from vfmkd_ray.ray_session import _raylet_messages_to_stderr
from vfmkd_ray.training.relay import WorkerLines, _Shown


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_bar_logs_tenths_and_nothing_when_told(caplog):
    caplog.set_level(logging.INFO, logger="vfmkd_ray")
    with progress_bar("precompute sam", 40) as bar:
        for done in range(4, 41, 4):
            bar.update(done, f"{done / 2:.1f} images/s")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[0] == "precompute sam: 4/40 images (10%), 2.0 images/s"
    assert lines[-1] == "precompute sam: 40/40 images (100%), 20.0 images/s"
    caplog.clear()
    with progress_bar("epoch 1/2", 10, unit="steps", plain=False) as bar:
        bar.update(10)
    assert caplog.records == []


def test_on_a_terminal_the_bar_is_drawn_and_lines_land_above_it():
    terminal = _Terminal()
    shown = Console(terminal, None)
    with console._activated(shown), console._product_logging(shown), progress_bar("precompute sam", 8) as bar:
        bar.update(4, "3.0 images/s")
        logging.getLogger("vfmkd_ray.test").info("a product line")
        bar.update(8, "3.0 images/s")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())  # without colours and moves
    assert "precompute sam" in text and "8/8 images" in text and "3.0 images/s" in text
    assert "[vfmkd] a product line\n" in text


def test_the_driver_shows_from_rank_zero_lines_and_steps(caplog):
    caplog.set_level(logging.INFO, logger="vfmkd_ray")
    shown = _Shown()
    shown.show(
        [
            ("line", logging.INFO, "worker 0 on cpu"),
            ("epoch", "epoch 1/2", 7),
            ("step", 3, "loss 0.5000  12.0 img/s"),
            ("line", logging.WARNING, "tracking stopped"),
            ("epoch", "epoch 2/2", 7),
        ]
    )
    assert shown.bar is not None and shown.bar.label == "epoch 2/2" and shown.bar.done == 0
    shown.close()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "worker 0 on cpu"),
        (logging.WARNING, "tracking stopped"),
    ]


def test_without_a_mailbox_rank_zero_prints_to_its_log_and_other_ranks_say_nothing(capfd):
    WorkerLines(None, rank=1).say("not me")
    WorkerLines(None, rank=0).say("epoch 1/2")
    assert capfd.readouterr().out == "[vfmkd train] epoch 1/2\n"


def test_raylet_messages_go_to_stderr_through_the_hook_where_it_was_measured(capfd):
    """Ray 2.60's driver prints raylet messages to stdout through print_to_stdstream, looked up at
    each message: ray_session relies on both. A Ray upgrade that changes them fails here."""
    ray_worker = pytest.importorskip("ray._private.worker")
    source = inspect.getsource(ray_worker.listen_error_messages)
    assert "print_to_stdstream(" in source and '"is_err": False' in source
    _raylet_messages_to_stderr()
    ray_worker.print_to_stdstream({"lines": ["a raylet line"], "pid": "raylet", "is_err": False}, False)
    printed = capfd.readouterr()
    assert "a raylet line" in printed.err and "a raylet line" not in printed.out


def test_while_a_bar_is_drawn_stderr_still_goes_where_the_console_sent_it():
    """rich would swap sys.stderr for its own while drawing, so Ray's messages and tracebacks,
    which the console keeps in the log file, would reach the person."""
    terminal, log_file = _Terminal(), io.StringIO()
    shown = Console(terminal, "log")
    saved = sys.stderr
    sys.stderr = log_file
    try:
        with console._activated(shown), progress_bar("precompute sam", 8) as bar:
            print("ray noise", file=sys.stderr)
            bar.update(8)
    finally:
        sys.stderr = saved
    assert "ray noise" in log_file.getvalue() and "ray noise" not in terminal.getvalue()


def test_tune_progress_counts_from_the_trials_so_a_resumed_search_starts_where_it_was():
    from types import SimpleNamespace

    from vfmkd_ray.tune.progress import TrialProgress

    def trial(trial_id, status, epochs=0):
        return SimpleNamespace(trial_id=trial_id, status=status, last_result={"epoch": epochs}, local_path="")

    progress = TrialProgress(num_trials=4, max_epochs=2, metric="val/loss")
    restored = [trial("a", "TERMINATED", 2), trial("b", "TERMINATED", 1), trial("c", "RUNNING", 1)]
    assert progress.status([*restored, trial("d", "PENDING")]) == (2, "1 running, 1 stopped early, 0 failed")
    ending = trial("c", "RUNNING", 2)  # Tune may report the end before it updates the status
    assert progress.status([*restored[:2], ending], ended=ending) == (
        3,
        "0 running, 1 stopped early, 0 failed",
    )
    failed = trial("d", "RUNNING", 1)
    assert progress.status([*restored, failed], ended=failed, failed=True) == (
        3,
        "1 running, 1 stopped early, 1 failed",
    )


def test_a_bar_can_lead_its_status_with_the_rate_since_it_began(caplog):
    caplog.set_level(logging.INFO, logger="vfmkd_ray")
    with progress_bar("eval val", 2, show_rate=True) as bar:
        bar.update(1, "1 skipped")
        bar.update(2)
    first, last = (r.getMessage() for r in caplog.records)
    assert re.fullmatch(r"eval val: 1/2 images \(50%\), \d+\.\d images/s, 1 skipped", first), first
    assert re.fullmatch(r"eval val: 2/2 images \(100%\), \d+\.\d images/s", last), last
