"""What a tune run leaves next to Tune's own files: ``results.csv`` (one row per trial, at its best
epoch), ``best_config.yaml`` (ready for ``vfmkd train``) and ``metric_vs_params.png``."""

from __future__ import annotations

import copy
import io
from typing import Any

import pandas as pd

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig, dump_config, set_dotted, validate_config
from vfmkd_ray.tune.plan import SearchRecord

RESULTS_CSV = "results.csv"
BEST_CONFIG = "best_config.yaml"
PLOT = "metric_vs_params.png"


def trial_table(
    record: SearchRecord,
    histories: dict[str, list[dict[str, float]]],
    keys: list[str],
    metric: str,
    mode: str,
) -> pd.DataFrame:
    """One row per trial that reported ``metric``: its key, the searched values, its best value of
    ``metric`` (by ``mode``) and the epochs it trained."""
    rows = []
    for trial in record.trials:
        values = [r[metric] for r in histories.get(trial.key, []) if metric in r]
        if not values:
            continue
        best = min(values) if mode == "min" else max(values)
        epochs = max(int(r.get("epoch", 0)) for r in histories[trial.key])
        rows.append(
            {"trial": trial.key, **{k: trial.params.get(k) for k in keys}, metric: best, "epochs": epochs}
        )
    return pd.DataFrame(rows, columns=["trial", *keys, metric, "epochs"])


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
