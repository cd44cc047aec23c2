"""A run's curves and summary table: Ray-free, on local paths and on the moto S3 server."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vfmkd_ray import run_files, storage
from vfmkd_ray.cli import main
from vfmkd_ray.run_report.curves import CurvesPainter, curves_png
from vfmkd_ray.run_report.summary import report_run, summary_table


def _history(epochs: int = 4) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "step": 3 * e,
            "lr": 0.01 / e,
            "train/loss": 2.0 / e,
            "val/loss": 2.5 / e + (0.5 if e == 3 else 0.0),
            "train/loss/feature_mse": 1.0 / e,
            "val/cos/feature_mse": 0.1 * e,
            "train/data/online_share": 0.2,
            "throughput/train_images_per_s": 10.0 + e,
            "seconds/train": 3.0,
            "seconds/val": 1.0,
        }
        for e in range(1, epochs + 1)
    ]


def test_the_curves_are_a_png_of_the_run():
    png = curves_png(_history(), title="tiny")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] > 800 and image.size[1] > 400
    # A run without some metrics (no online teacher, one epoch) still draws.
    Image.open(io.BytesIO(curves_png([{"epoch": 1, "train/loss": 1.0, "val/loss": 1.2}]))).verify()


def test_the_painter_writes_the_last_history_and_warns_once_when_it_cannot():
    written: list[bytes] = []
    painter = CurvesPainter(written.append, "tiny", warn=lambda text: pytest.fail(text))
    for epochs in range(1, 4):
        painter.refresh(_history(epochs))
    painter.close()
    assert written and Image.open(io.BytesIO(written[-1])).format == "PNG"

    warnings: list[str] = []
    failing = CurvesPainter(lambda png: (_ for _ in ()).throw(OSError("disk full")), "tiny", warnings.append)
    failing.refresh(_history(1))
    failing.refresh(_history(2))
    failing.close()
    assert len(warnings) == 1 and "curves.png not written: OSError: disk full" in warnings[0]


def test_the_summary_has_first_best_and_last_per_metric():
    table = summary_table(_history()).splitlines()
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in table[2:]}
    assert row["val/loss"] == ["2.5", "0.625 (4)", "0.625"]
    assert row["val/cos/feature_mse"] == ["0.1", "0.4 (4)", "0.4"]
    assert row["lr"][1] == "-"  # no better direction
    assert next(iter(row)).startswith("val/") and "epoch" not in row and "step" not in row


def _write_run(run_dir: str) -> None:
    run_files.write_metrics_log(run_dir, _history())


def test_report_reads_a_run_on_s3_and_writes_its_plot(s3_bucket, capsys):
    run_dir = f"{s3_bucket}/runs/tiny"
    _write_run(run_dir)
    assert main(["report", run_dir]) == 0
    out = capsys.readouterr().out
    assert f"run {run_dir}: 4 epochs, 12 steps" in out and "| val/loss " in out
    curves = run_files.path(run_dir, run_files.CURVES_PNG)
    assert f"curves: {curves}" in out
    assert Image.open(io.BytesIO(storage.read_bytes(curves))).format == "PNG"


def test_report_writes_where_it_is_told_and_names_what_is_not_a_run(tmp_path, capsys):
    _write_run(str(tmp_path / "run"))
    report = report_run(str(tmp_path / "run"), str(tmp_path / "plot.png"))
    assert report.epochs == 4 and (tmp_path / "plot.png").exists()
    assert not (tmp_path / "run" / run_files.CURVES_PNG).exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert f"no metrics.csv in {tmp_path / 'nothing'}" in capsys.readouterr().err
    (tmp_path / "run" / run_files.METRICS_CSV).write_text("epoch,val/loss\n1,not-a-number\n")
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "metrics.csv is not a metrics table" in capsys.readouterr().err
