"""A search resumes from its own record, never from Tune's pickles (Ray-free)."""

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import yaml

from tests.conftest import tiny_overrides
from vfmkd_ray import run_files
from vfmkd_ray.config import load_config, validate_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.tune import plan
from vfmkd_ray.tune.config import Dimension
from vfmkd_ray.tune.runner import _optuna, run_tune
from vfmkd_ray.tune.search import KeyedASHA, RecordedSearch

SPACE = {
    "train.lr": Dimension(kind="loguniform", low=1e-4, high=1e-2),
    "train.batch_size": Dimension(kind="grid", values=[2, 4]),
    "student.size": Dimension(kind="choice", values=["n", "s"]),
}


def test_the_plan_of_a_random_search_is_the_same_on_every_launch():
    first = plan.planned_params(SPACE, num_samples=3, seed=7)
    assert first == plan.planned_params(SPACE, num_samples=3, seed=7)
    assert first != plan.planned_params(SPACE, num_samples=3, seed=8)
    assert [p["train.batch_size"] for p in first] == [2, 4] * 3
    assert all(1e-4 <= p["train.lr"] <= 1e-2 and p["student.size"] in ("n", "s") for p in first)
    assert len({p["train.lr"] for p in first}) == 6  # every trial draws its own


def _search(record, planned=None, optuna=None, curves=None, max_epochs=2):
    saved = []
    search = RecordedSearch(
        record,
        lambda r: saved.append(r.model_dump()),
        lambda key: (curves or {}).get(key, []),
        max_epochs,
        "val/loss",
        "min",
        plan=planned,
        optuna=optuna,
    )
    return search, saved


def test_a_relaunch_resumes_unended_trials_first_then_goes_on_with_the_plan():
    planned = plan.planned_params(SPACE, num_samples=2, seed=0)  # 4 trials
    record = plan.SearchRecord(
        trials=[
            plan.TrialRecord(key="trial_0000", params=planned[0], status="finished"),
            plan.TrialRecord(key="trial_0001", params=planned[1], status="started"),  # interrupted
            plan.TrialRecord(key="trial_0002", params=planned[2], status="failed", error="boom"),
        ]
    )
    curves = {"trial_0001": [(1, 0.5), (2, 0.4)], "trial_0003": [(1, 0.9)]}
    search, saved = _search(record, planned=planned, curves=curves)
    suggested = [search.suggest(f"tune-id-{n}") for n in range(4)]
    assert [s["trial"] for s in suggested[:3]] == ["trial_0001", "trial_0002", "trial_0003"]
    assert [s["params"] for s in suggested[:3]] == planned[1:]
    assert suggested[3] == RecordedSearch.FINISHED
    assert saved[-1]["trials"][3] == {
        "key": "trial_0003",
        "params": planned[3],
        "status": "started",
        "error": None,
    }
    search.on_trial_complete("tune-id-0", {"epoch": 2})  # trial_0001: 2 of 2 epochs
    search.on_trial_complete("tune-id-2", {"epoch": 1})  # trial_0003: stopped by ASHA after 1
    search.on_trial_complete("tune-id-1", error=True)
    statuses = {t["key"]: t["status"] for t in saved[-1]["trials"]}
    assert statuses == {
        "trial_0000": "finished",
        "trial_0001": "finished",
        "trial_0002": "failed",
        "trial_0003": "stopped",
    }


def test_optuna_is_told_the_ended_trials_and_suggests_new_keys():
    from vfmkd_ray.config import ExperimentConfig

    cfg = ExperimentConfig.model_validate(
        {
            "data": {"input_size": 64},
            "distill": {"terms": {"edge": {"type": "edge"}}},
            "tune": {
                "search": "optuna",
                "space": {"train.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}},
            },
        }
    )
    record = plan.SearchRecord(
        trials=[
            plan.TrialRecord(key="trial_0000", params={"train.lr": 1e-3}, status="finished"),
            plan.TrialRecord(key="trial_0001", params={"train.lr": 5e-3}, status="stopped"),
        ]
    )
    curves = {"trial_0000": [(1, 0.5), (2, 0.3)], "trial_0001": [(1, 0.9)]}
    optuna = _optuna(cfg)
    search, _ = _search(record, optuna=optuna, curves=curves)
    study = optuna._ot_study
    assert sorted(t.value for t in study.trials) == [0.3, 0.9]
    assert [t.intermediate_values for t in study.trials] == [{0: 0.5, 1: 0.3}, {0: 0.9}]
    suggestion = search.suggest("tune-id-0")
    assert suggestion["trial"] == "trial_0002" and 1e-4 <= suggestion["params"]["train.lr"] <= 1e-2


def test_asha_rungs_are_seeded_with_the_curves_of_earlier_launches():
    def trial(key):
        return SimpleNamespace(trial_id=f"tune-{key}", config={"trial": key})

    def scheduler():
        return KeyedASHA(
            time_attr="epoch", metric="val/loss", mode="min", max_t=4, grace_period=1, reduction_factor=2
        )

    fresh = scheduler()
    fresh.on_trial_add(None, trial("trial_0002"))
    assert fresh.on_trial_result(None, trial("trial_0002"), {"epoch": 1, "val/loss": 0.9}) == "CONTINUE"
    seeded = scheduler()
    seeded.seed("trial_0000", [(1, 0.1), (2, 0.05)])
    seeded.seed("trial_0001", [(1, 0.2)])
    seeded.on_trial_add(None, trial("trial_0002"))
    assert seeded.on_trial_result(None, trial("trial_0002"), {"epoch": 1, "val/loss": 0.9}) == "STOP"
    # A resumed trial keeps its rungs under its key, whatever id Tune gives it this launch.
    seeded.seed("trial_0003", [(1, 0.15)])
    seeded.on_trial_add(None, trial("trial_0003"))
    assert seeded.on_trial_result(None, trial("trial_0003"), {"epoch": 2, "val/loss": 0.01}) == "CONTINUE"


def test_a_record_that_is_not_ours_is_one_line_naming_it(tmp_path):
    (tmp_path / plan.RECORD_FILE).write_text(json.dumps({"trials": [{"key": 1}]}))
    with pytest.raises(ValueError, match=f"{tmp_path}/trials.json is not a search record") as caught:
        plan.read_record(str(tmp_path))
    assert "\n" not in str(caught.value)


def test_a_record_that_would_run_other_overrides_is_refused_before_ray(tmp_path):
    """trials.json lies in run storage: a planted trial must not become a config override."""
    raw = load_config(None, []).model_dump(mode="json")
    raw["tune"] = {"space": {"train.lr": {"kind": "grid", "values": [0.003, 0.001]}}}
    cfg = validate_config(raw)
    planned = plan.planned_params(cfg.tune.space, cfg.tune.num_samples, cfg.seed)
    uri = str(tmp_path / plan.RECORD_FILE)
    ours = plan.TrialRecord(key="trial_0001", params=planned[1], status="started")
    plan.check_record(plan.SearchRecord(trials=[ours]), cfg, planned, uri)
    planted = ours.model_copy(update={"params": planned[1] | {"tracking.uri": "http://elsewhere:5000"}})
    with pytest.raises(ValueError, match=rf"{uri}: trial_0001 holds .*tracking.uri.*, but this search plans"):
        plan.check_record(plan.SearchRecord(trials=[planted]), cfg, planned, uri)
    beyond = ours.model_copy(update={"key": "trial_0099"})
    with pytest.raises(ValueError, match="trial_0099 holds .* but this search plans no such trial"):
        plan.check_record(plan.SearchRecord(trials=[beyond]), cfg, planned, uri)
    (tmp_path / plan.RECORD_FILE).write_text(
        json.dumps({"trials": [{"key": "../x", "params": {}, "status": "started"}]})
    )
    with pytest.raises(ValueError, match="trials.json is not a search record"):
        plan.read_record(str(tmp_path))


class _Payload:
    """What an attacker pickles into run storage: unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_relaunch_reads_no_pickle_from_run_storage_and_summarises_every_launch(tmp_path):
    overrides = [*tiny_overrides(tmp_path), "train.epochs=2", "data.missing_features=online"]
    raw = load_config(None, overrides).model_dump(mode="json")
    raw["tune"] = {"space": {"train.lr": {"kind": "grid", "values": [3e-3, 1e-9]}}, "num_samples": 1}
    config_file = tmp_path / "tune.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    cfg = load_config(config_file)
    write_synthetic_coco(cfg.data)
    directory = tmp_path / "runs" / "tiny-tune"
    # A search whose two trials ended in an earlier launch, as its record and runs hold it.
    planned = plan.planned_params(cfg.tune.space, 1, cfg.seed)
    plan.write_record(
        str(directory),
        plan.SearchRecord(
            trials=[
                plan.TrialRecord(key="trial_0000", params=planned[0], status="finished"),
                plan.TrialRecord(key="trial_0001", params=planned[1], status="stopped"),
            ]
        ),
    )
    histories = {"trial_0000": [0.8, 0.5], "trial_0001": [0.9]}
    for key, losses in histories.items():
        run_files.write_metrics_log(
            str(directory / "trials" / key),
            [{"epoch": e, "val/loss": v} for e, v in enumerate(losses, 1)],
        )
    # Tune's pickles, planted where Tune.restore would read them.
    marker = tmp_path / "payload-ran"
    for name in ("tuner.pkl", "ray_tune/tuner.pkl", "ray_tune/searcher-state.pkl"):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(pickle.dumps(_Payload(marker)))

    summary = run_tune(cfg)
    assert not marker.exists()
    assert not ray.is_initialized()  # nothing left to run: Ray never started
    assert summary.num_trials == 2 and summary.num_early_stopped == 1
    assert summary.best_params == {"train.lr": 3e-3} and summary.best_metric == 0.5
    assert (directory / "best_config.yaml").exists()
