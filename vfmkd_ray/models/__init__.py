"""Backbones (students and frozen teachers) and the adapters between them."""
