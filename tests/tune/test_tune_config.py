"""Tune config validation and the results it writes (Ray-free)."""

import pandas as pd
import pytest
import yaml

from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.tune.config import Dimension
from vfmkd_ray.tune.report import (
    BEST_CONFIG,
    PLOT,
    RESULTS_CSV,
    best_config,
    markdown,
    trial_table,
    write_outputs,
)
from vfmkd_ray.tune.runner import _check_keys, _sampler


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
    _check_keys(_with_space(tmp_path, {"train.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}}))
    typo = _with_space(tmp_path, {"train.lrr": {"kind": "choice", "values": [0.1]}})
    with pytest.raises(ConfigError, match="(?s)tune.space.train.lrr: .*unknown config key 'train.lrr'"):
        _check_keys(typo)
    bad_value = _with_space(tmp_path, {"train.epochs": {"kind": "choice", "values": [0]}})
    with pytest.raises(ConfigError, match="(?s)tune.space.train.epochs: .*train.epochs"):
        _check_keys(bad_value)


def test_results_table_best_config_and_plot(tmp_path):
    frame = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "config/train.lr": [1e-4, 1e-3, 1e-2],
            "config/distill.terms.edge.weight": [0.1, 0.5, 0.9],
            "val/loss": [0.9, 0.4, 0.6],
            "training_iteration": [1, 3, 2],
        }
    )
    keys = ["train.lr", "distill.terms.edge.weight"]
    table = trial_table(frame, keys, "val/loss")
    base = load_config(None, [])
    best = best_config(base, {"train.lr": 1e-3, "distill.terms.edge.weight": 0.5})
    write_outputs(str(tmp_path), table, best, keys, "val/loss")
    assert pd.read_csv(tmp_path / RESULTS_CSV)["val/loss"].tolist() == [0.9, 0.4, 0.6]
    saved = yaml.safe_load((tmp_path / BEST_CONFIG).read_text())
    assert saved["train"]["lr"] == 1e-3 and saved["distill"]["terms"]["edge"]["weight"] == 0.5
    assert saved["name"] == "demo-best" and load_config(tmp_path / BEST_CONFIG).train.lr == 1e-3
    assert (tmp_path / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    top = markdown(table, "val/loss", "min", 2).splitlines()
    assert top[2].startswith("| b |") and len(top) == 4
