"""Bounded, strict YAML reading: config files, ``key=value`` override values and the configs a run
wrote, and the bounded echo of what was read in error messages.

A config is a few KB of plain data, so anything far larger is refused before it is parsed: a file
over ``MAX_BYTES``, and a document whose aliases would expand beyond ``MAX_NODES`` nodes or
``MAX_CHARS`` scalar characters (the "billion laughs" anchor bomb: a few hundred bytes that
expand to billions of values). The expanded size is computed on the composed node graph, each
distinct node once, so the bomb is refused in milliseconds without being expanded. A key given
twice in one mapping is an error naming both lines (PyYAML keeps the last one silently); keys
merged in with ``<<`` keep their YAML meaning, an explicit key overrides them. Only the safe
constructor is used: no Python object tags.
"""

from __future__ import annotations

import itertools
import reprlib
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.events import NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB; the repository's configs are under 2 KB
MAX_NODES = 100_000  # after alias expansion; a config has a few hundred
MAX_CHARS = 4 * MAX_BYTES  # scalar characters after alias expansion (one long string, many aliases)
ECHO_CHARS = 200  # of a value echoed in an error message
MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml (when PyYAML has it) also caps nesting at 1000 levels; pure Python overflows its stack.
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ShortRepr(reprlib.Repr):
    """``reprlib``'s bounded repr, mappings in their own order (as the config wrote them)."""

    def __init__(self) -> None:
        super().__init__()  # keyword arguments only from Python 3.12
        self.maxlevel, self.maxstring, self.maxother = 4, ECHO_CHARS, ECHO_CHARS

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pairs = itertools.islice(x.items(), self.maxdict)
        shown = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in pairs]
        return "{" + ", ".join(shown + (["..."] if len(x) > self.maxdict else [])) + "}"


_SHORT_REPR = _ShortRepr()


class YamlError(ValueError):
    """YAML refused: too large, an alias bomb, a duplicate key or not UTF-8; names the origin."""


class YamlSyntaxError(YamlError):
    """Not YAML at all (an override value that is not YAML is taken as a plain string)."""


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` when short, else its first ``limit`` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def echo(value: Any) -> str:
    """``repr(value)`` for an error message, about ``ECHO_CHARS`` long at most: a long string says
    how long it was; a container is shown in part, without building its whole repr."""
    if not isinstance(value, str):
        return clip(_SHORT_REPR.repr(value))
    if len(value) <= ECHO_CHARS:
        return repr(value)
    return f"{value[:ECHO_CHARS]!r}... ({len(value)} characters)"


def read_yaml_file(path: Path) -> Any:
    """The data of a YAML file, its size checked before it is read."""
    check_size(path.stat().st_size, str(path))
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)  # a file that grew since stat is still bounded
    return load_yaml_bytes(data, str(path))


def check_size(num_bytes: int, origin: str) -> None:
    if num_bytes > MAX_BYTES:
        raise YamlError(
            f"{origin} is {num_bytes} bytes, over the {MAX_BYTES} bytes (1 MiB) a config may hold "
            "(the repository's are under 2 KB)"
        )


def load_yaml_bytes(data: bytes, origin: str) -> Any:
    """The data of a YAML document given as UTF-8 bytes."""
    check_size(len(data), origin)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlError(
            f"{origin} is not UTF-8 text: byte 0x{data[err.start]:02x} at byte offset {err.start} "
            f"({err.reason}); save it as UTF-8"
        ) from None
    return load_yaml_text(text.removeprefix("\ufeff"), origin)


def load_yaml_text(text: str, origin: str) -> Any:
    """The data of one YAML document: bounded, duplicate keys refused, safe tags only."""
    check_size(len(text.encode("utf-8", errors="surrogatepass")), origin)
    loader = _BASE_LOADER(text)
    try:
        _count_nodes(_BASE_LOADER(text), origin)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node, loader, origin)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise YamlSyntaxError(f"{origin} is not valid YAML: {clip(_one_line(err), 1000)}") from None
    except RecursionError:
        raise YamlError(f"{origin} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's message (problem, context and marks on lines of their own) as one line."""
    text = str(err).replace('in "<unicode string>", ', "at ")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _count_nodes(parser: Any, origin: str) -> None:
    """Refuses more than ``MAX_NODES`` nodes (an alias counts one) from the event stream, before
    anything is composed: a flat 1 MiB list takes seconds to compose, its events a fraction."""
    try:
        count = 0
        while parser.check_event():
            count += isinstance(parser.get_event(), NodeEvent)
            if count > MAX_NODES:
                _refuse_size(origin, True)
    finally:
        parser.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_graph(root: Node, loader: Any, origin: str) -> None:
    """Refuses a document whose aliases expand beyond the bounds, or that has a key twice in a
    mapping, visiting each distinct node once (depth first, without recursion)."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, scalar characters) once expanded
    open_nodes: set[int] = set()  # on the current path: meeting one again is a recursive alias
    stack: list[tuple[Node, list[Node] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        if children is not None:  # all of them measured
            open_nodes.discard(id(node))
            nodes = 1 + sum(sizes[id(child)][0] for child in children)
            chars = sum(sizes[id(child)][1] for child in children)
            if isinstance(node, ScalarNode):
                chars += len(node.value)
            if nodes > MAX_NODES or chars > MAX_CHARS:
                _refuse_size(origin, nodes > MAX_NODES)
            sizes[id(node)] = (nodes, chars)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            line = node.start_mark.line + 1
            raise YamlError(f"{origin}: the value anchored at line {line} holds an alias to itself")
        if isinstance(node, MappingNode):
            _refuse_duplicate_keys(node, loader, origin)
        open_nodes.add(id(node))
        children = _children(node)
        stack.append((node, children))
        stack.extend((child, None) for child in children if id(child) not in sizes)


def _refuse_size(origin: str, too_many_nodes: bool) -> NoReturn:
    what = f"{MAX_NODES} values" if too_many_nodes else f"{MAX_CHARS} characters"
    raise YamlError(
        f"{origin} holds over {what} (each alias *name counted as what it repeats), far more than a "
        "config: refused without expanding it"
    )


def _refuse_duplicate_keys(node: MappingNode, loader: Any, origin: str) -> None:
    """A key given twice in one mapping; ``<<`` merge keys are not keys of the mapping itself."""
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
            continue  # a complex key the constructor refuses itself if unhashable
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise YamlError(
                f"{origin}: key {clip(repr(key))} is given twice in one mapping, at line {lines[key]} "
                f"and line {line}: remove one"
            )
        lines[key] = line
