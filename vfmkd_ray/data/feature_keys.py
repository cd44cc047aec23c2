"""How the training stream and the loss terms name a teacher's output: ``<alias>/<layer>``.

A run names its teachers (``teachers: {sam: ..., dino: ...}``), so two teachers may share layer
names. Kept apart from the teacher models so the data path's decode tasks import neither torch nor
timm: they run in fresh Ray worker processes, where those imports cost seconds of CPU each time.
"""

from __future__ import annotations

KEY_SEPARATOR = "/"


def feature_key(alias: str, layer: str) -> str:
    return f"{alias}{KEY_SEPARATOR}{layer}"


def split_feature_key(key: str) -> tuple[str, str]:
    alias, _, layer = key.partition(KEY_SEPARATOR)
    return alias, layer
