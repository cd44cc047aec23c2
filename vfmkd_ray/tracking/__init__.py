"""Experiment tracking: a run's config, per-epoch metrics and files, sent to MLflow or written as
TensorBoard event files, by rank 0 only."""
