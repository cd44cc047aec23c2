"""The experiment schema and how it is loaded: YAML file + dotted ``key=value`` overrides.

Each section is defined next to the code it configures and composed here. Unknown keys and bad
values are reported as ``ConfigError`` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from vfmkd_ray.config_checks import check_references, migrate_or_refuse
from vfmkd_ray.config_yaml import YamlError, YamlSyntaxError, clip, echo, load_yaml_text, read_yaml_file
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.heads.config import HeadConfig
from vfmkd_ray.losses.config import DistillConfig
from vfmkd_ray.models.necks.config import NeckConfig
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.object_storage import S3Config, looks_secret
from vfmkd_ray.schema import StrictModel
from vfmkd_ray.store.config import StoreConfig
from vfmkd_ray.tracking.config import TrackingConfig
from vfmkd_ray.training.config import TrainConfig
from vfmkd_ray.transfer.config import TransferConfig
from vfmkd_ray.tune.config import TuneConfig

TEACHER_ALIAS = re.compile(r"[A-Za-z0-9_]+")
# The experiment YAML files of the repository; the demo's embedded default is demo.yaml here.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
MAX_PRINTED_PROBLEMS = 20  # of one invalid config; the count of the rest is printed
MESSAGE_CHARS = 1000  # of a check's own message (the longest, a migration hint, is ~500)


class ExperimentConfig(StrictModel):
    """One experiment: data, the model (student backbone, optional neck, named heads), teachers and
    their feature stores, the feature-KD terms and training."""

    name: str = Field(
        "vfmkd",
        pattern=r"^[A-Za-z0-9_.-]+$",
        max_length=200,
        description="the run's name: its directory under train.storage_path; the same name resumes it",
    )
    seed: int = Field(0, description="seeds the model's initialisation, the data order and augmentation")
    data: DataConfig = DataConfig()
    student: StudentConfig = StudentConfig()
    neck: NeckConfig | None = Field(None, description="between the backbone and the heads; none by default")
    heads: dict[str, HeadConfig] = Field(
        default_factory=dict, description="task heads by name, each of one registered type"
    )
    teachers: dict[str, TeacherConfig] = Field(
        default_factory=dict,
        description="teachers by alias, each with its own store; the first is the primary teacher, "
        "whose input size the student trains at unless data.input_size says otherwise",
    )
    store: StoreConfig = StoreConfig()
    distill: DistillConfig = DistillConfig()
    train: TrainConfig = TrainConfig()
    s3: S3Config = S3Config()
    tune: TuneConfig = TuneConfig()
    transfer: TransferConfig = TransferConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, raw: Any) -> Any:
        return migrate_or_refuse(raw)

    @model_validator(mode="after")
    def _references_hold(self) -> ExperimentConfig:
        for alias in self.teachers:
            if not TEACHER_ALIAS.fullmatch(alias):
                raise ValueError(f"teachers.{clip(alias)}: an alias is letters, digits and '_' only")
        check_references(self)
        return self

    @property
    def primary_teacher(self) -> str:
        """The alias of the first teacher: terms without ``teacher`` read it."""
        return next(iter(self.teachers))

    @property
    def input_size(self) -> int:
        """The letterbox side the student trains at."""
        if self.data.input_size is not None:
            return self.data.input_size
        return self.teachers[self.primary_teacher].input_size


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is allowed."""


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Loads ``path`` (or the packaged demo config when None) and applies dotted overrides: the
    command line's ``key=value`` texts, then ``values`` (dotted key -> a Python value: the API's)."""
    raw = _read_yaml(Path(path)) if path is not None else _read_packaged("demo.yaml")
    for override in overrides or []:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
    for key, value in (values or {}).items():
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
        raise ConfigError(f"override {echo(text)} is not of the form dotted.key=value")
    try:
        parsed = load_yaml_text(value, f"override {clip(key)}") if value else ""
    except YamlSyntaxError:  # not YAML: the text itself (a path, a name)
        parsed = value
    except YamlError as err:
        raise ConfigError(str(err)) from None
    return key.strip(), parsed


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set {echo(key)}: {echo(prefix)} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {clip(str(path))}")
    try:
        data = read_yaml_file(path)
    except YamlError as err:
        raise ConfigError(str(err)) from None
    return _config_mapping(data, str(path))


def _read_packaged(name: str) -> dict[str, Any]:
    path = CONFIGS_DIR / name
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from a clone of the repository (pip install -e .)")
    return _read_yaml(path)


def _config_mapping(data: Any, origin: str) -> dict[str, Any]:
    if data is None:  # an empty file (or comments only) is a mistake, not "all defaults"
        raise ConfigError(
            f"{origin} is empty: a config names at least its data, teachers or heads (see configs/)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a mapping at the top level")
    return data


def _describe(err: ValidationError) -> str:
    """One line per problem, each value and key echoed clipped (a config may hold a huge one)."""
    lines = []
    problems = err.errors()
    for problem in problems[:MAX_PRINTED_PROBLEMS]:
        key = ".".join(str(part) for part in _without_type_tags(problem["loc"]))
        message = clip(str(problem["msg"]).removeprefix("Value error, "), MESSAGE_CHARS)
        if not key:  # a check across sections; its message names the keys
            lines.append(message)
        elif problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(_without_type_tags(problem["loc"])[:-1], problem["loc"])
            lines.append(f"unknown config key {echo(key)}; allowed keys here: {allowed}")
        else:
            # The s3 section as a whole too (``s3=<key>`` would echo the key), and a tracking URI
            # refused for the credentials in it.
            hidden = key in ("s3", "tracking.uri") or looks_secret(key.replace(".", "_"))
            got = "(hidden)" if hidden else echo(problem.get("input"))
            lines.append(f"bad value for {echo(key)}: {message} (got {got})")
    if len(problems) > MAX_PRINTED_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_PRINTED_PROBLEMS} more problems")
    return "invalid config:\n  " + "\n  ".join(lines)


# Where pydantic puts the chosen ``type`` of a tagged section into an error's location.
_TAG_POSITIONS = {("neck",): 1, ("heads",): 2, ("distill", "terms"): 3}


def _without_type_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``heads.det.yolov8.num_classes`` -> ``heads.det.num_classes``: the tag is not a key."""
    for prefix, position in _TAG_POSITIONS.items():
        if tuple(loc[: len(prefix)]) == prefix and len(loc) > position + 1:
            return (*loc[:position], *loc[position + 1 :])
    return tuple(loc)


def _allowed_keys(parent_loc: tuple[Any, ...], full_loc: tuple[Any, ...]) -> str:
    """The keys allowed where an unknown key was found; a tagged section (``heads.<name>``,
    ``neck``, ``distill.terms.<name>``) answers for its own ``type``."""
    model: Any = ExperimentConfig
    tags = [str(part) for part in full_loc]
    for part in parent_loc:
        if get_origin(model) is dict:  # a named entry, e.g. teachers.<alias>
            model = _tagged_member(get_args(model)[1], tags)
            continue
        field = model.model_fields.get(str(part)) if _is_model(model) else None
        if field is None:
            return "(see the schema)"
        model = _tagged_member(field.annotation, tags)
    if not _is_model(model):
        return "(see the schema)"
    return ", ".join(model.model_fields)


def _tagged_member(annotation: Any, tags: list[str]) -> Any:
    """A model from a (possibly Annotated, Optional or tagged-union) annotation: the member whose
    ``type`` literal appears in the error's location."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if _is_model(annotation) or get_origin(annotation) is dict:
        return annotation
    members = [_tagged_member(m, tags) for m in get_args(annotation)]
    members = [m for m in members if _is_model(m)]
    for member in members:
        tag = member.model_fields.get("type")
        if tag is not None and tag.default in tags:
            return member
    return members[0] if len(members) == 1 else annotation


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)
