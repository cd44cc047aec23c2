"""YOLC-style detection distillation: a stride-4 center/box detector over any student backbone, the
LSM crop search, local refinement on crops, remap and fusion, and the global and local KD terms."""
