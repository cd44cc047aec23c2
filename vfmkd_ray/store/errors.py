"""The feature store's one error type, in a module of its own so that the schema (which raises it
when precompute hands it non-finite teacher outputs) and the reader (which imports the schema) can
both use it without an import cycle. ``store.reader`` re-exports it."""

from __future__ import annotations


class FeatureStoreError(ValueError):
    """A store row or dataset that is unusable; the message names the image, layer and store."""
