"""Distillation loss terms, one file per family, built by name from the config."""
