"""A measured figure (median and spread of repeated measurements) and the machine it was taken on.

Every benchmark returns ``Figure``s; ``run_all.py`` writes them to JSON and Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Figure:
    """``values`` are the repeated measurements; ``median``/``low``/``high`` summarise them."""

    section: str
    name: str
    unit: str
    values: list[float]
    note: str = ""
    target: str = ""  # e.g. ">= 0.9"; empty when the issue sets none

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_json(self) -> dict:
        return asdict(self) | {"median": self.median, "min": self.low, "max": self.high}


def ratio(section: str, name: str, numerators: list[float], denominators: list[float], **kw) -> Figure:
    """A ratio figure: every numerator over the median denominator, so its spread is the
    numerator's (the denominator's own spread is reported in its own figure)."""
    base = statistics.median(denominators)
    return Figure(section, name, "ratio", [value / base for value in numerators], **kw)


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's flags, with its module docstring as the help text."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


@dataclass(frozen=True)
class Machine:
    platform: str
    cpus: int
    python: str
    torch: str
    ray: str
    accelerator: str
    torch_threads: int
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.accelerator}; {self.cpus} CPUs ({self.torch_threads} torch threads); {self.platform}; "
            f"Python {self.python}, torch {self.torch}, Ray {self.ray}"
        )


def this_machine() -> Machine:
    import ray
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        accelerator = f"{len(names)} x {names[0]}"
    else:
        accelerator = "no GPU (CPU only)"
    return Machine(
        platform=platform.platform(),
        cpus=os.cpu_count() or 1,
        python=platform.python_version(),
        torch=torch.__version__,
        ray=ray.__version__,
        accelerator=accelerator,
        torch_threads=torch.get_num_threads(),
    )
