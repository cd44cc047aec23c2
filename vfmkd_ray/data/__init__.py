"""Datasets: the synthetic generator, COCO-format readers, image decoding and Ray Data pipelines."""
