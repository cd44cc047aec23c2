"""The feature store's error types, in a module of its own so that the schema (which raises it
when precompute hands it non-finite teacher outputs) and the reader (which imports the schema) can
both use it without an import cycle. ``store.reader`` re-exports it."""

from __future__ import annotations


class FeatureStoreError(ValueError):
    """A store row or dataset that is unusable; the message names the image, layer and store."""


class StoreMadeOtherwiseError(FeatureStoreError):
    """A store whose rows are of other inputs than the run draws (a view of another canvas): wrong
    for every row alike, so never skipped row by row."""
