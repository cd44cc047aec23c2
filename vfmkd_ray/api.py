"""The Python API, what the CLI is a thin layer over::

    import vfmkd_ray as vk

    vk.precompute("configs/demo.yaml")
    run = vk.train("configs/demo.yaml", **{"train.epochs": 2})
    run.metrics_frame()                       # one row per epoch, as metrics.csv holds it
    vk.evaluate(run)                          # box / mask scores, teacher cosine, losses
    vk.export(run, format="rtdetrv2", out="exports/backbone.pth")

A config is a YAML path, an ``ExperimentConfig``, or None (the embedded demo default); keyword
arguments are its dotted overrides, applied as ``key=value`` on the command line is (typed values:
``**{"train.epochs": 2, "data.format": "yolo"}``), and validated the same way. Each function calls
the library function the matching command calls, and raises the same named errors (``ConfigError``,
``TrainingError``, ``FeatureStoreError``, ``ExportError``, ``StorageError``...), which the CLI turns
into its one-line messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vfmkd_ray import storage
from vfmkd_ray.config import ExperimentConfig, load_config, set_dotted, validate_config

if TYPE_CHECKING:
    import pandas

    from vfmkd_ray.evaluation.run_eval import EvalResult
    from vfmkd_ray.handoff.command import ExportResult
    from vfmkd_ray.handoff.snippets import Freeze
    from vfmkd_ray.models.students import StudentConfig
    from vfmkd_ray.store.precompute import PrecomputeSummary
    from vfmkd_ray.training.trainer import RunSummary

ConfigSource = str | Path | ExperimentConfig | None
CONFIG_SUFFIXES = (".yaml", ".yml")
# run_files' names, which it defines beside torch (the CLI imports this module, and not torch).
BEST_MODEL, BEST_BACKBONE = "best_model.pth", "best_backbone.safetensors"


def make_config(source: ConfigSource = None, /, **overrides: Any) -> ExperimentConfig:
    """The validated config of ``source`` with ``overrides`` (dotted keys) applied.

    Raises:
        ConfigError: an unknown key or a value the schema refuses, named.
    """
    if isinstance(source, ExperimentConfig):
        return _with(source, overrides) if overrides else source
    return load_config(source, values=overrides)


def _with(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    raw = cfg.model_dump(mode="json", exclude_unset=True)  # what was set stays set (warnings)
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return validate_config(raw)


@dataclass(frozen=True)
class Run:
    """A training run: its directory and config, and what it holds (read when asked, so a run that
    is still training shows its latest epoch). ``summary``: what ``train`` reported, when this
    object came from it."""

    run_dir: str
    config: ExperimentConfig
    summary: RunSummary | None = field(default=None, repr=False)

    @classmethod
    def open(cls, run_dir: str | Path) -> Run:
        """The run in ``run_dir`` (local or ``s3://``), from the config it saved, pointed at where
        the directory is now (a run copied or moved is evaluated, resumed and exported there)."""
        from vfmkd_ray import run_files

        uri = storage.absolute(str(run_dir)).rstrip("/")
        raw = run_files.read_config_file(run_files.path(uri, run_files.RESOLVED_CONFIG))
        parent, name = uri.rsplit("/", 1)
        set_dotted(raw, "name", name)
        set_dotted(raw, "train.storage_path", parent)
        return cls(uri, validate_config(raw))

    @property
    def metrics(self) -> list[dict[str, float]]:
        """One record per finished epoch, as ``metrics.csv`` holds it."""
        from vfmkd_ray import run_files

        return run_files.read_metrics_table(self.run_dir)

    def metrics_frame(self) -> pandas.DataFrame:
        """``metrics`` as a pandas DataFrame indexed by epoch."""
        import pandas

        return pandas.DataFrame(self.metrics).set_index("epoch")

    @property
    def best_model(self) -> str | None:
        """``best_model.pth`` (the whole model and its config), or None when no epoch was best."""
        return self._file(BEST_MODEL)

    @property
    def best_backbone(self) -> str | None:
        """``best_backbone.safetensors``, or None when no epoch was best."""
        return self._file(BEST_BACKBONE)

    def _file(self, name: str) -> str | None:
        uri = storage.join(self.run_dir, name)
        return uri if storage.exists(uri) else None


def train(source: ConfigSource = None, /, **overrides: Any) -> Run:
    """Trains (or resumes, by name) the run ``source`` describes; returns it when it finishes.

    Raises:
        ConfigError, TrainingError, FeatureStoreError, StorageError: named, as ``vfmkd train``.
    """
    from vfmkd_ray.training.trainer import run_training

    cfg = make_config(source, **overrides)
    summary = run_training(cfg)
    return Run(summary.run_dir, cfg, summary)


def precompute(
    source: ConfigSource = None, /, teachers: list[str] | None = None, **overrides: Any
) -> list[PrecomputeSummary]:
    """Fills the feature store of each teacher (``teachers``: their aliases; default all), resuming
    a store that holds some rows already; one summary per teacher."""
    from vfmkd_ray.store.precompute import run_precompute

    return run_precompute(make_config(source, **overrides), teachers)


def evaluate(
    run: Run | str | Path | ExperimentConfig,
    /,
    checkpoint: str | None = None,
    split: str = "val",
    **overrides: Any,
) -> EvalResult:
    """Scores a run's best model (or ``checkpoint``) on ``split`` of its dataset (``val``,
    ``train`` or ``all``); writes ``eval.json`` into the run. ``run``: a ``Run``, a run directory,
    a config file or config (the run it names)."""
    from vfmkd_ray.evaluation.run_eval import run_eval

    return run_eval(make_config(_run_config(run), **overrides), checkpoint, split)


def export(
    run: Run | str | Path | None = None,
    /,
    *,
    format: str,
    out: str | Path,
    checkpoint: str | None = None,
    student: StudentConfig | None = None,
    input_size: int | None = None,
    freeze: Freeze | None = None,
) -> ExportResult:
    """Writes a backbone for ``format`` (``rtdetrv2``, ``mmyolo``, ``mmdet``, ``timm``, ``onnx``...)
    to ``out`` and checks it loads there; from ``checkpoint``, or the run's ``best_model.pth``.

    Raises:
        ExportError: the format cannot hold this backbone, or the written file fails its check.
    """
    from vfmkd_ray.handoff.command import run_export

    if checkpoint is None:
        if run is None:
            raise ValueError("export needs a run or a checkpoint")
        checkpoint = storage.join(_run_dir(run), BEST_MODEL)
    return run_export(checkpoint, format, str(out), student, input_size, freeze)


def _run_config(run: Run | str | Path | ExperimentConfig) -> ExperimentConfig | str | Path:
    if isinstance(run, Run):
        return run.config
    if isinstance(run, ExperimentConfig) or str(run).endswith(CONFIG_SUFFIXES):
        return run
    return Run.open(run).config


def _run_dir(run: Run | str | Path) -> str:
    if isinstance(run, Run):
        return run.run_dir
    if str(run).endswith(CONFIG_SUFFIXES):
        raise ValueError(f"export takes a run (a Run or its directory) or checkpoint=, not the config {run}")
    return storage.absolute(str(run))
