"""Every ``vfmkd`` command the README and the pages under ``docs/`` show exists with the flags it is
shown with, and a command that names a config names one that exists and loads with the overrides
shown (placeholders in capitals and synopsis brackets are left to the reader). A command the page
shows failing (its next line a comment ``# vfmkd <command>: error: ...``) must fail to load."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vfmkd_ray.cli import build_parser
from vfmkd_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```")
WITH_CONFIG = {"synth", "precompute", "train", "eval", "tune", "transfer"}


def shown_commands() -> list[tuple[str, str, bool]]:
    """(where, command, shown failing) for each ``vfmkd`` command of a fenced block: continuation
    lines joined, ``&&`` chains split, printed output (``vfmkd train: ...``) left out."""
    found = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        inside, pending, start = False, "", 0
        for number, line in enumerate(lines, 1):
            if FENCE.match(line.strip()):
                inside, pending = not inside, ""
                continue
            if not inside:
                continue
            text = line.strip().removeprefix("$ ")
            if pending:
                text = pending + " " + text
            elif not re.match(r"^(\S*/)?vfmkd\s", text):
                continue
            else:
                start = number
            if text.endswith("\\"):
                pending = text[:-1].strip()
                continue
            pending = ""
            following = lines[number].strip() if number < len(lines) else ""
            fails = bool(re.match(r"^# vfmkd \S+: error", following))
            for part in text.split("&&"):
                command = re.sub(r"^(\S*/)?vfmkd\s+", "", part.strip())
                if not command.split()[0].endswith(":"):
                    found.append((f"{page.relative_to(ROOT)}:{start}", command, fails))
    return found


COMMANDS = shown_commands()


def _tokens(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def _is_synopsis(tokens: list[str]) -> bool:
    return any(t.startswith("[") or t.endswith("]") or "..." in t or "|" in t for t in tokens)


def test_the_pages_show_commands_and_a_failing_one():
    assert len(COMMANDS) >= 20, COMMANDS  # the README's command list alone has 11
    assert any(fails for _, _, fails in COMMANDS)


@pytest.mark.parametrize(("where", "command", "fails"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_a_shown_command_exists_with_its_flags_and_its_config_loads(where, command, fails):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    tokens = _tokens(command)
    name = tokens[0]
    assert name in commands, f"{where}: vfmkd has no command {name!r}"
    if name == "submit" and not _is_synopsis(tokens):
        inner = parser.parse_args(tokens)
        tokens, name = [inner.job, *inner.args], inner.job
    sub = commands[name]
    flags = {t.split("=")[0].rstrip("]") for t in tokens if t.lstrip("[").startswith("--")}
    for flag in flags:
        assert flag.lstrip("[") in sub._option_string_actions, f"{where}: vfmkd {name} has no {flag}"
    if _is_synopsis(tokens):
        return
    args = parser.parse_args(tokens)
    config = getattr(args, "config", None) if name in WITH_CONFIG else None
    if config and config.endswith(".yaml") and not config.isupper():
        assert (ROOT / config).is_file(), f"{where}: no config {config}"
        overrides = [o for o in args.overrides if not re.search(r"[A-Z]{3,}", o)]
        if fails:
            with pytest.raises(ConfigError):
                load_config(str(ROOT / config), overrides)
        else:
            load_config(str(ROOT / config), overrides)
    else:
        assert not fails, f"{where}: shown failing, but nothing here loads it"
