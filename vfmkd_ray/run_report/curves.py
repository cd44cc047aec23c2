"""``curves.png``: a run's per-epoch metrics as one picture, refreshed by rank 0 after each epoch.

Panels: loss (train solid, validation dashed; the total bold, each head and term thin), cosine to
the teacher per feature term, learning rate, images/s, the online-teacher share, and the seconds
each epoch's passes took. A panel whose metrics a run does not have says so instead of a plot.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

TRAIN, VAL = "train/", "val/"


def curves_png(history: list[dict[str, float]], title: str = "") -> bytes:
    """The picture of ``history`` (one record per epoch, as ``metrics.csv`` holds) as PNG bytes.

    Built on a bare ``Figure`` (no pyplot): no global state, safe in a worker thread.
    """
    # Here, not at import: every Train worker imports this module, only rank 0 paints.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 7), dpi=80)
    # Fixed margins: a constrained layout would double the drawing time, paid every epoch.
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.91, wspace=0.22, hspace=0.38)
    FigureCanvasAgg(figure)
    loss, cosine, lr, rate, online, seconds = figure.subplots(2, 3).flat
    epochs = [record.get("epoch", i + 1) for i, record in enumerate(history)]
    keys = sorted({key for record in history for key in record})
    _train_val(loss, history, epochs, keys, "loss")
    loss.set_title("loss (train solid, val dashed)")
    _train_val(cosine, history, epochs, keys, "cos")
    cosine.set_title("cosine to the teacher")
    _lines(lr, history, epochs, ["lr"], "learning rate")
    _lines(rate, history, epochs, ["throughput/train_images_per_s"], "train images/s")
    _lines(online, history, epochs, ["train/data/online_share"], "online-teacher share")
    _lines(seconds, history, epochs, ["seconds/train", "seconds/val"], "seconds per epoch")
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _train_val(axes, history, epochs, keys: list[str], family: str) -> None:
    """``train/<family>[/<name>]`` against ``val/<family>[/<name>]``, one colour per name."""
    names = sorted(
        {key.removeprefix(split) for key in keys for split in (TRAIN, VAL) if key.startswith(split)}
    )
    names = [n for n in names if n == family or n.startswith(f"{family}/")]
    for colour, name in enumerate(names):
        width = 2.2 if name == family else 1.1
        for split, style in ((TRAIN, "-"), (VAL, "--")):
            values = _series(history, epochs, split + name)
            if values[0]:
                axes.plot(*values, style, color=f"C{colour}", linewidth=width, label=f"{split}{name}")
    _finish(axes, bool(names))


def _lines(axes, history, epochs, keys: list[str], title: str) -> None:
    plotted = False
    for key in keys:
        xs, ys = _series(history, epochs, key)
        if xs:
            axes.plot(xs, ys, marker=".", label=key)
            plotted = True
    axes.set_title(title)
    _finish(axes, plotted)


def _series(history, epochs, key: str) -> tuple[list, list]:
    pairs = [(e, r[key]) for e, r in zip(epochs, history, strict=True) if r.get(key) is not None]
    return [e for e, _ in pairs], [v for _, v in pairs]


def _finish(axes, plotted: bool) -> None:
    if not plotted:
        axes.text(0.5, 0.5, "not in this run", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
        return
    axes.set_xlabel("epoch")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


class CurvesPainter:
    """Rank 0's ``curves.png``, drawn in a thread so that training does not wait for it (about
    0.7 s a drawing on a laptop CPU). A refresh asked for while one is drawn is kept and drawn
    next; ``close`` waits for the last. A drawing that fails is reported once by ``warn``."""

    def __init__(self, write: Callable[[bytes], object], title: str, warn: Callable[[str], None]):
        self._write, self._title, self._warn = write, title, warn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfmkd-curves")
        self._lock = threading.Lock()
        self._pending: list[dict[str, float]] | None = None
        self._warned = False

    def refresh(self, history: list[dict[str, float]]) -> None:
        with self._lock:
            idle = self._pending is None
            self._pending = [dict(record) for record in history]
        if idle:
            self._pool.submit(self._draw)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _draw(self) -> None:
        while True:
            with self._lock:
                history, self._pending = self._pending, None
            if history is None:
                return
            try:
                self._write(curves_png(history, self._title))
            except Exception as err:  # a picture is never worth a run
                if not self._warned:
                    self._warned = True
                    self._warn(f"curves.png not written: {type(err).__name__}: {err}")
