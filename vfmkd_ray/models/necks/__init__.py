"""Necks between the student backbone and the heads; ``necks.registry`` builds them by type."""
