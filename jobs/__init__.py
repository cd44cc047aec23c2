"""Thin entrypoints for Ray job submission, one per command (``vfmkd submit`` uses them)."""
