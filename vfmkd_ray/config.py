"""The experiment schema and how it is loaded: YAML file + dotted ``key=value`` overrides.

Each section is defined next to the code it configures and composed here. Unknown keys and bad
values are reported as ``ConfigError`` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.detection.config import DetectionConfig
from vfmkd_ray.losses.config import DistillConfig
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.object_storage import S3Config
from vfmkd_ray.schema import StrictModel
from vfmkd_ray.store.config import StoreConfig
from vfmkd_ray.train.config import TrainConfig
from vfmkd_ray.tune.config import TuneConfig

TEACHER_ALIAS = re.compile(r"[A-Za-z0-9_]+")
# The experiment YAML files of the repository; the demo's embedded default is demo.yaml here.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


class ExperimentConfig(StrictModel):
    """One distillation experiment: data, models, feature store, losses and training."""

    name: str = Field("vfmkd", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    task: Literal["features", "detection"] = Field(
        "features", description="feature distillation from teacher stores, or YOLC detection distillation"
    )
    data: DataConfig = DataConfig()
    student: StudentConfig = StudentConfig()
    teachers: dict[str, TeacherConfig] = Field(
        default_factory=lambda: {"sam": TeacherConfig()},
        description="teachers by alias, each with its own store; the first is the primary teacher, "
        "whose input size the student trains at",
    )
    store: StoreConfig = StoreConfig()
    distill: DistillConfig = DistillConfig()
    train: TrainConfig = TrainConfig()
    s3: S3Config = S3Config()
    detection: DetectionConfig = DetectionConfig()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _teachers_are_named_and_used(self) -> ExperimentConfig:
        if not self.teachers:
            raise ValueError("teachers is empty: configure at least one teacher")
        for alias in self.teachers:
            if not TEACHER_ALIAS.fullmatch(alias):
                raise ValueError(f"teachers.{alias}: an alias is letters, digits and '_' only")
        detection_only = {"fgd"}
        for name, term in self.distill.terms.items():
            if (term.type in detection_only) != (self.task == "detection"):
                raise ValueError(
                    f"distill.terms.{name} (type {term.type}) does not apply to task: {self.task}; "
                    "task: detection takes fgd terms only (distill.terms: {} for none), task: features "
                    "takes the feature terms"
                )
            alias = getattr(term, "teacher", None)
            if self.task == "detection":
                continue
            if alias is not None and alias not in self.teachers:
                raise ValueError(
                    f"distill.terms.{name}.teacher {alias!r} is not a configured teacher; "
                    f"teachers: {list(self.teachers)}"
                )
        return self

    @property
    def primary_teacher(self) -> str:
        """The alias of the first teacher: its store drives the data stream, its input size the
        student's."""
        return next(iter(self.teachers))


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is allowed."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Loads ``path`` (or the packaged demo config when None) and applies dotted overrides."""
    raw = _read_yaml(Path(path)) if path is not None else _read_packaged("demo.yaml")
    for override in overrides or []:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
    return validate_config(raw)


def validate_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML, as saved in every run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set {key!r}: {prefix!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return _parse_yaml(path.read_text(), str(path))


def _read_packaged(name: str) -> dict[str, Any]:
    path = CONFIGS_DIR / name
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from a clone of the repository (pip install -e .)")
    return _read_yaml(path)


def _parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a mapping at the top level")
    return data


def _describe(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if not key:  # a check across sections; its message names the keys
            lines.append(str(problem["msg"]).removeprefix("Value error, "))
        elif problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(problem["loc"][:-1])
            lines.append(f"unknown config key {key!r}; allowed keys here: {allowed}")
        else:
            got = problem.get("input")
            lines.append(f"bad value for {key!r}: {problem['msg']} (got {got!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _allowed_keys(parent_loc: tuple[Any, ...]) -> str:
    model: Any = ExperimentConfig
    for part in parent_loc:
        if get_origin(model) is dict:  # a named entry, e.g. teachers.<alias>
            model = get_args(model)[1]
            continue
        field = model.model_fields.get(str(part)) if _is_model(model) else None
        if field is None:
            return "(see the schema)"
        model = field.annotation
    if not _is_model(model):
        return "(see the schema)"
    return ", ".join(model.model_fields)


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)
