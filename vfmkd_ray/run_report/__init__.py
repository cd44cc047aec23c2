"""A run's curves (``curves.png``) and summary table, from its per-epoch metrics."""
