"""Tune config validation and the results it writes (Ray-free)."""

import pandas as pd
import pytest
import yaml

from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.tune.config import Dimension
from vfmkd_ray.tune.plan import SearchRecord, TrialRecord
from vfmkd_ray.tune.report import (
    BEST_CONFIG,
    PLOT,
    RESULTS_CSV,
    best_config,
    markdown,
    trial_table,
    write_outputs,
)
from vfmkd_ray.tune.runner import _check_search, _sampler


def test_dimensions_are_checked():
    with pytest.raises(ValueError, match="low < high"):
        Dimension(kind="uniform", low=1.0, high=0.5)
    with pytest.raises(ValueError, match="loguniform needs low > 0"):
        Dimension(kind="loguniform", low=0.0, high=1.0)
    with pytest.raises(ValueError, match="non-empty values"):
        Dimension(kind="grid", values=[])
    assert _sampler(Dimension(kind="grid", values=[1, 2])) == {"grid_search": [1, 2]}


def _with_space(tmp_path, space: dict):
    path = tmp_path / "tune.yaml"
    terms = {"edge": {"type": "edge"}}  # something to train; the teacher-free term
    path.write_text(
        yaml.safe_dump({"data": {"input_size": 64}, "distill": {"terms": terms}, "tune": {"space": space}})
    )
    return load_config(path)


def test_searched_keys_must_exist_and_accept_the_values(tmp_path):
    _check_search(_with_space(tmp_path, {"train.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}}))
    typo = _with_space(tmp_path, {"train.lrr": {"kind": "choice", "values": [0.1]}})
    with pytest.raises(
        ConfigError, match="(?s)tune.space.train.lrr value 0.1: .*unknown config key 'train.lrr'"
    ):
        _check_search(typo)
    bad_value = _with_space(tmp_path, {"train.epochs": {"kind": "choice", "values": [0]}})
    with pytest.raises(ConfigError, match="(?s)tune.space.train.epochs value 0: .*train.epochs"):
        _check_search(bad_value)


def test_every_value_of_the_space_is_checked_before_ray_not_only_the_first(tmp_path):
    """A value found invalid only when its trial starts has already cost Ray's start-up and the
    trials before it."""
    late = _with_space(tmp_path, {"train.epochs": {"kind": "choice", "values": [2, 3, -1]}})
    with pytest.raises(ConfigError, match="tune.space.train.epochs value -1: "):
        _check_search(late)
    high = _with_space(tmp_path, {"data.val_fraction": {"kind": "uniform", "low": 0.1, "high": 1.5}})
    with pytest.raises(ConfigError, match="tune.space.data.val_fraction value 1.5: "):
        _check_search(high)
    grid = _with_space(tmp_path, {"train.batch_size": {"kind": "grid", "values": [2, 0]}})
    with pytest.raises(ConfigError, match="tune.space.train.batch_size value 0: "):
        _check_search(grid)


def test_results_table_best_config_and_plot(tmp_path):
    record = SearchRecord(
        trials=[
            TrialRecord(key=key, params={"train.lr": lr, "distill.terms.edge.weight": w}, status="finished")
            for key, lr, w in (
                ("trial_0000", 1e-4, 0.1),
                ("trial_0001", 1e-3, 0.5),
                ("trial_0002", 1e-2, 0.9),
            )
        ]
    )
    histories = {  # best val/loss 0.9, 0.4, 0.6 after 1, 3, 2 epochs
        "trial_0000": [{"epoch": 1, "val/loss": 0.9}],
        "trial_0001": [
            {"epoch": 1, "val/loss": 0.7},
            {"epoch": 2, "val/loss": 0.4},
            {"epoch": 3, "val/loss": 0.5},
        ],
        "trial_0002": [{"epoch": 1, "val/loss": 0.6}, {"epoch": 2, "val/loss": 0.8}],
    }
    keys = ["train.lr", "distill.terms.edge.weight"]
    table = trial_table(record, histories, keys, "val/loss", "min")
    assert table["epochs"].tolist() == [1, 3, 2]
    base = load_config(None, [])
    best = best_config(base, {"train.lr": 1e-3, "distill.terms.edge.weight": 0.5})
    write_outputs(str(tmp_path), table, best, keys, "val/loss")
    assert pd.read_csv(tmp_path / RESULTS_CSV)["val/loss"].tolist() == [0.9, 0.4, 0.6]
    saved = yaml.safe_load((tmp_path / BEST_CONFIG).read_text())
    assert saved["train"]["lr"] == 1e-3 and saved["distill"]["terms"]["edge"]["weight"] == 0.5
    assert saved["name"] == "demo-best" and load_config(tmp_path / BEST_CONFIG).train.lr == 1e-3
    assert (tmp_path / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    top = markdown(table, "val/loss", "min", 2).splitlines()
    assert top[2].startswith("| trial_0001 |") and len(top) == 4
