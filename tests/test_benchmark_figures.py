"""The measuring and reporting parts of ``benchmarks/``, without running a benchmark."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks.figures import Figure, ratio
from benchmarks.run_all import markdown, merged
from vfmkd_ray.training.step_clock import StepClock, peak_rss_mb


def test_step_clock_leaves_out_the_wait_for_the_first_batch():
    clock = StepClock()
    time.sleep(0.2)  # the pipeline starting
    clock.batch_arrived()
    for _ in range(3):
        time.sleep(0.02)
        clock.step_done(images=4)
        clock.batch_arrived()  # later arrivals do not move the start
    assert clock.first_batch_s >= 0.2
    assert clock.images == 12
    assert 12 / 0.2 < clock.images_per_s <= 12 / 0.06


def test_a_clock_without_steps_reports_zero_and_memory_is_positive():
    assert StepClock().images_per_s == 0.0
    assert peak_rss_mb() > 10


def test_figure_summary_and_ratio_against_the_median_denominator():
    fig = Figure("s", "rate", "images/s", [3.0, 1.0, 2.0])
    assert (fig.median, fig.low, fig.high) == (2.0, 1.0, 3.0)
    r = ratio("s", "a / b", [9.0, 10.0, 11.0], [4.0, 5.0, 100.0], target=">= 0.9")
    assert r.values == pytest.approx([1.8, 2.0, 2.2])
    assert r.to_json()["median"] == pytest.approx(2.0) and r.target == ">= 0.9"


def test_markdown_shows_every_figure_and_the_before_median():
    now = Figure("training", "step overhead", "ratio", [0.95, 0.93, 0.97], "n/a", ">= 0.9")
    new = Figure("feature store", "int8: stored bytes", "bytes/image", [1_050_000.0])
    machine = {
        "accelerator": "no GPU",
        "cpus": 2,
        "platform": "Linux",
        "python": "3",
        "torch": "2",
        "ray": "2",
    }
    run = {"command": "python -m benchmarks.run_all", "date": "2026-11-21", "minutes": 12.0}
    report = {
        "machine": machine,
        "runs": [run | {"sections": ["training", "feature store"]}],
        "figures": [now.to_json(), new.to_json()],
    }
    old = Figure("training", "step overhead", "ratio", [0.8]).to_json()
    before = {"machine": machine, "runs": [run | {"sections": ["training"]}], "figures": [old]}
    text = markdown(report, before)
    assert "| step overhead | 0.95 (0.93-0.97) | ratio | 3 | >= 0.9 | 0.8 | n/a |" in text
    assert "| int8: stored bytes | 1,050,000 (1,050,000-1,050,000) | bytes/image | 1 | - | - |  |" in text
    assert text.index("## feature store") < text.index("## training")  # the order run_all runs them


def test_a_partial_run_keeps_the_other_sections_of_the_same_machine(tmp_path):
    machine = {"accelerator": "no GPU", "cpus": 2}
    store = Figure("feature store", "int8: stored bytes", "bytes/image", [1.0]).to_json()
    old_training = Figure("training", "step overhead", "ratio", [0.2]).to_json()
    first = {"command": "all", "date": "d1", "minutes": 20, "sections": ["feature store", "training"]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"machine": machine, "runs": [first], "figures": [store, old_training]}))
    training = Figure("training", "step overhead", "ratio", [0.95]).to_json()
    second = {"command": "only training", "date": "d2", "minutes": 9, "sections": ["training"]}
    report = merged(path, machine, second, [training])
    assert report["figures"] == [store, training]
    # The first run keeps the figures of one section: it no longer lists the other as its own.
    kept_first = first | {"sections": ["feature store"], "machine": machine}
    assert report["runs"] == [kept_first, second | {"machine": machine}]
    newer_torch = machine | {"torch": "2.16"}  # the same kind of machine: its sections are kept
    report = merged(path, newer_torch, second, [training])
    assert report["figures"] == [store, training]
    assert [r["machine"] for r in report["runs"]] == [machine, newer_torch]
    other_machine = merged(path, {"accelerator": "1 x H100", "cpus": 16}, second, [training])
    assert other_machine["figures"] == [training] and len(other_machine["runs"]) == 1
