"""The config reference, ``docs/config-reference.md``, written from the schema itself: every key
with its type, default and description, so that the page cannot drift from what the loader accepts.

    python -m vfmkd_ray.config_reference            # rewrite the page
    python -m vfmkd_ray.config_reference --check    # exit 1 if the page is not the schema's (make lint)
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from vfmkd_ray.config import ExperimentConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"
HEADER = """# Config reference

Every key of the experiment config, with its type, default and description. Written by
`python -m vfmkd_ray.config_reference` from the schema (`make lint` checks it is current): edit the
schema's `Field(description=...)`, not this page. `<name>` stands for a key you choose (a head's
name, a teacher's alias, a term's name); a head or term of each `type` has the keys of its table.
How keys are given (YAML, dotted `key=value` overrides) is on [the config page](config.md).
"""


def reference() -> str:
    """The page's text: the top-level keys, then a table per section (a table per ``type`` where a
    section holds one of several kinds of entry: heads, KD terms)."""
    scalars = ""
    sections = []
    for name, field in ExperimentConfig.model_fields.items():
        if not _models(field.annotation):
            scalars += _row(name, field)
            continue
        sections.append(
            f"## `{name}`\n\n" + _row_table(_row(name, field) if not _model(field.annotation) else "")
        )
        for title, rows in _tables(name, field.annotation):
            if rows:  # the section's own keys sit under its heading; its subsections get their own
                sections.append(("" if title == f"`{name}`" else f"### {title}\n\n") + _row_table(rows))
    return "\n".join([HEADER, "## Top level\n\n" + _row_table(scalars), *sections])


def _row_table(rows: str) -> str:
    return f"| key | type | default | description |\n|---|---|---|---|\n{rows}" if rows else ""


def _row(key: str, field: Any) -> str:
    return f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {_text(field.description)} |\n"


def _tables(key: str, annotation: Any) -> list[tuple[str, str]]:
    """(title, rows) of the keys under ``key``: a table for a plain section, one per kind of entry
    (``type``) where the value is one of several, then those of the sections inside."""
    tables = []
    for model, prefix, kind in _models(annotation):
        rows, nested = "", []
        for name, child in model.model_fields.items():
            child_key = f"{key}{prefix}.{name}"
            if not _model(child.annotation):
                rows += _row(child_key, child)
            nested += _tables(child_key, child.annotation)
        title = f"`{key}{prefix}`" + (f" with `type: {kind}`" if kind else "")
        tables += [(title, rows), *nested]
    return tables


def _models(annotation: Any) -> list[tuple[type[BaseModel], str, str]]:
    """The models a value of ``annotation`` may be: (model, the key part it hangs under, its kind)."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if _model(annotation):
        return [(annotation, "", "")]
    if origin in (Union, types.UnionType):
        found = []
        for arg in get_args(annotation):
            found += [(model, prefix, _type_literal(model)) for model, prefix, _ in _models(arg)]
        return found
    if origin is dict:
        return [(model, f".<name>{prefix}", kind) for model, prefix, kind in _models(get_args(annotation)[1])]
    return []


def _type(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        kinds = [_type(arg) for arg in get_args(annotation)]
        return " or ".join(dict.fromkeys(kinds))
    if origin in (list, tuple):
        return (
            f"{origin.__name__} of {', '.join(_type(arg) for arg in get_args(annotation) if arg is not ...)}"
        )
    if origin is dict:
        return f"map of {_type(get_args(annotation)[1])}"
    if annotation is type(None):
        return "null"
    if _model(annotation):
        return "section (by `type`)" if _type_literal(annotation) else "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    return f"`{value!r}`".replace("|", "\\|")


def _text(description: str | None) -> str:
    return (description or "").replace("|", "\\|").replace("\n", " ")


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _model(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_literal(model: type[BaseModel]) -> str:
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return ""
    return "/".join(str(value) for value in get_args(field.annotation))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not the schema's")
    args = parser.parse_args(argv)
    text = reference()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is not the schema's: run python -m vfmkd_ray.config_reference", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
