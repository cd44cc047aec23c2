"""transfer.csv / .md / .png from a hand-made grid: one CSV row per cell, failed cells kept."""

import csv
import io

from vfmkd_ray.transfer.report import TRANSFER_CSV, TRANSFER_MD, TRANSFER_PNG, table_metrics, write_report
from vfmkd_ray.transfer.statistics import CellScore, group_scores


def test_report_files_hold_every_cell_and_name_the_failed_one(tmp_path):
    scores = [
        CellScore("random", "frozen", 0.5, 0, True, {"det/mAP": 0.1, "det/AP_small": 0.05, "det/AP50": 0.2}),
        CellScore(
            "random", "frozen", 0.5, 1, True, {"det/mAP": 0.2, "det/AP_small": float("nan"), "det/AP50": 0.3}
        ),
        CellScore(
            "distilled", "frozen", 0.5, 0, True, {"det/mAP": 0.4, "det/AP_small": 0.1, "det/AP50": 0.5}
        ),
        CellScore("distilled", "frozen", 0.5, 1, False, error="training run failed: worker died"),
    ]
    metrics = table_metrics(scores)
    assert metrics == ["det/mAP", "det/AP_small"]  # AP50 is in the CSV only
    groups = group_scores(scores, metrics, "random")
    text = write_report(str(tmp_path), "vfmkd transfer: t", scores, groups, metrics, "random", ["- a note"])
    rows = list(csv.DictReader(io.StringIO((tmp_path / TRANSFER_CSV).read_text())))
    assert len(rows) == 4
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    assert rows[3]["error"] == "training run failed: worker died" and rows[3]["det/mAP"] == ""
    assert rows[1]["det/AP_small"] == ""  # NaN (no small objects) is empty, not "nan"
    assert (tmp_path / TRANSFER_MD).read_text() == text
    table_rows = [line for line in text.splitlines() if line.startswith("| frozen")]
    assert len(table_rows) == 2
    assert "| distilled | 1 (1 failed) | 0.4000 | +0.2500 |" in text  # one run: no SE, no flag
    assert "distilled frozen 0.5 seed 1: training run failed: worker died" in text
    assert (tmp_path / TRANSFER_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
