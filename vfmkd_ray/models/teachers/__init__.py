"""Frozen teachers by name: SAM ViT-B/L/H, SAM 2 Hiera-T/S/B+/L, DINOv2 ViT-S/B/L, and ``run``: a
model trained by this product.

The registry and the builders are in ``build``; this package imports nothing, so that a config
(``config``) loads without torch, timm or segment-anything.
"""
