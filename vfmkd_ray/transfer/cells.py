"""The cells of a transfer grid and the fine-tune config of each.

A cell is one backbone x mode x label fraction x seed. Its config is the experiment's with the
backbone as ``student.weights``, every teacher, feature term and head KD setting removed (a fine-tune
learns from the labels alone, the same way for every backbone), ``train.freeze_backbone`` for the
frozen mode, ``data.label_fraction``, the seed and, with ``transfer.equal_steps``, the labelled
subset streamed 1/fraction times per epoch (``data.repeat``), so that every budget takes about the
same number of optimiser steps and validation passes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass

from vfmkd_ray import storage
from vfmkd_ray.config import ConfigError, ExperimentConfig, validate_config

RANDOM_INIT = "random"
BACKBONE_NAME = re.compile(r"[A-Za-z0-9_.]+")


@dataclass(frozen=True)
class Backbone:
    """A named starting point: a backbone file (a run's best backbone, a checkpoint) or random init."""

    name: str
    uri: str | None  # None: random init
    sha256: str | None = None  # of the file: a cell records which bytes it started from

    def describe(self) -> str:
        return self.uri or "random init"


@dataclass(frozen=True)
class Cell:
    backbone: str
    mode: str  # frozen | unfrozen
    label_fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.mode}-f{self.label_fraction:g}-s{self.seed}"

    def key(self) -> dict:
        return {
            "backbone": self.backbone,
            "mode": self.mode,
            "label_fraction": self.label_fraction,
            "seed": self.seed,
        }


def parse_backbones(specs: list[str]) -> list[Backbone]:
    """``NAME=URI`` (or ``NAME=random``) per entry; names are unique."""
    backbones: dict[str, Backbone] = {}
    for spec in specs:
        name, sep, uri = spec.partition("=")
        if not sep or not uri or not BACKBONE_NAME.fullmatch(name):
            raise ConfigError(
                f"--backbones {spec!r}: give NAME=URI (NAME letters, digits, '_' or '.'; URI a backbone "
                "file or 'random')"
            )
        if name in backbones:
            raise ConfigError(f"--backbones names {name!r} twice")
        backbones[name] = Backbone(name, None if uri == RANDOM_INIT else storage.absolute(uri))
    if not backbones:
        raise ConfigError("--backbones is empty: name at least one NAME=URI")
    return list(backbones.values())


def grid(cfg: ExperimentConfig, backbones: list[Backbone]) -> list[Cell]:
    """Every cell, cheapest budgets first so the table fills in early."""
    spec = cfg.transfer
    return [
        Cell(b.name, mode, fraction, seed)
        for fraction in spec.label_fractions
        for mode in spec.modes
        for seed in spec.seeds
        for b in backbones
    ]


def cell_repeat(cfg: ExperimentConfig, label_fraction: float) -> int:
    """How often a cell streams its labelled subset per epoch (``data.repeat``)."""
    return max(1, round(1 / label_fraction)) if cfg.transfer.equal_steps else 1


def cell_config(cfg: ExperimentConfig, backbone: Backbone, cell: Cell, cells_dir: str) -> ExperimentConfig:
    if not cfg.heads:
        raise ConfigError(
            "transfer fine-tunes the config's heads, but heads is empty: add a head to fine-tune"
        )
    raw = copy.deepcopy(cfg.model_dump(mode="json"))
    raw["name"] = cell.name
    raw["seed"] = cell.seed
    raw["student"].update(weights=backbone.uri, sha256=backbone.sha256)
    raw["data"].update(
        input_size=cfg.input_size,
        label_fraction=cell.label_fraction,
        repeat=cfg.data.repeat * cell_repeat(cfg, cell.label_fraction),
    )
    raw["teachers"] = {}
    raw["distill"]["terms"] = {}
    for name, head in raw["heads"].items():
        if "kd" in head:
            head["kd"] = None
        if head["type"] == "sam_mask":
            if head.get("decoder") == "frozen":
                raise ConfigError(
                    f"heads.{name}: a frozen sam_mask decoder starts from its teacher, which transfer "
                    f"fine-tunes without: set heads.{name}.decoder=trainable"
                )
            head.update(features=None, teacher=None)
    raw["train"].update(
        storage_path=cells_dir,
        epochs=cfg.transfer.epochs or cfg.train.epochs,
        freeze_backbone=cell.mode == "frozen",
    )
    raw["tune"] = {}
    return validate_config(raw)


# Where and with how many resources a cell runs: not what it learns, so not in its fingerprint.
NOT_LEARNED = {
    "s3": None,
    "transfer": None,
    "tracking": None,
    "data": ("decode_num_cpus",),
    "train": (
        "storage_path",
        "cpus_per_worker",
        "max_failures",
        "num_checkpoints_to_keep",
        "prefetch_batches",
        "shared_filesystem",
    ),
}


def fingerprint(cell_cfg: ExperimentConfig) -> str:
    """What a cell learns from: its config but for where it runs and with what resources (the
    backbone file by its sha256), to refuse reusing a cell after the config changed."""
    raw = cell_cfg.model_dump(mode="json")
    for section, keys in NOT_LEARNED.items():
        if keys is None:
            raw.pop(section, None)
        else:
            for key in keys:
                raw[section].pop(key, None)
    raw["student"].pop("weights", None)  # the sha256 says which bytes, wherever they are
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def transfer_dir(cfg: ExperimentConfig) -> str:
    root = cfg.transfer.storage_path or storage.join(cfg.train.storage_path, f"{cfg.name}-transfer")
    return storage.absolute(root)
