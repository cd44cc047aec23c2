"""What a tune run leaves next to Tune's own files: ``results.csv`` (one row per trial, at its best
epoch), ``best_config.yaml`` (ready for ``vfmkd train``) and ``metric_vs_params.png``."""

from __future__ import annotations

import copy
import io
from typing import Any

import pandas as pd

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig, dump_config, set_dotted, validate_config

RESULTS_CSV = "results.csv"
BEST_CONFIG = "best_config.yaml"
PLOT = "metric_vs_params.png"


def trial_table(frame: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """One row per trial: its id, the searched values, its best metric and the epochs it ran."""
    columns = {"trial_id": frame["trial_id"]}
    for key in keys:
        columns[key] = frame[f"config/{key}"]
    columns[metric] = frame[metric]
    columns["epochs"] = frame.get("training_iteration", frame.get("epoch"))
    return pd.DataFrame(columns)


def best_config(base: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    raw = copy.deepcopy(base.model_dump(mode="json"))
    for key, value in params.items():
        set_dotted(raw, key, value)
    raw["name"] = f"{base.name}-best"
    raw["tune"] = {}
    return validate_config(raw)


def write_outputs(
    directory: str, table: pd.DataFrame, best: ExperimentConfig, keys: list[str], metric: str
) -> None:
    storage.write_text_atomic(storage.join(directory, RESULTS_CSV), table.to_csv(index=False))
    storage.write_text_atomic(storage.join(directory, BEST_CONFIG), dump_config(best))
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        axis.scatter(table[key], table[metric])
        axis.set_xlabel(key)
        axis.set_ylabel(metric)
        values = table[key]
        if pd.api.types.is_numeric_dtype(values) and (values > 0).all() and values.max() > 10 * values.min():
            axis.set_xscale("log")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    storage.write_bytes_atomic(storage.join(directory, PLOT), buffer.getvalue())


def markdown(table: pd.DataFrame, metric: str, mode: str, top_k: int) -> str:
    ranked = table.sort_values(metric, ascending=mode == "min").head(top_k)
    header = "| " + " | ".join(ranked.columns) + " |"
    rule = "|" + "---|" * len(ranked.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in ranked.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
