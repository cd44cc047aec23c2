"""Bytes per image and cosine similarity to the float32 teacher output, for every store codec.

.venv/bin/python benchmarks/codec_accuracy.py [key=value ...]   # demo config by default
"""

from __future__ import annotations

import sys

from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.codec_report import measure_codecs


def main(overrides: list[str]) -> None:
    cfg = load_config(None, overrides)
    write_synthetic_coco(cfg.data)
    raw, rows = measure_codecs(cfg, cfg.data.synthetic.num_images)
    teacher = cfg.teachers[cfg.primary_teacher]
    print(
        f"{teacher.name} ({teacher.weights} weights) at {teacher.input_size} px, "
        f"{cfg.data.synthetic.num_images} synthetic images"
    )
    print("| codec | bytes/image (scales) | vs fp32 | vs fp16 | mean cosine | min cosine | max abs error |")
    print("|---|---|---|---|---|---|---|")
    print(f"| fp32 | {raw:,.0f} (0) | 1.00 | - | 1 | 1 | 0 |")
    fp16 = next(r.bytes_per_image for r in rows if r.codec == "fp16")
    for r in rows:
        print(
            f"| {r.codec} | {r.bytes_per_image:,.0f} ({r.scale_bytes:,.0f}) | "
            f"{r.bytes_per_image / raw:.3f} | "
            f"{r.bytes_per_image / fp16:.3f} | {r.mean_cosine:.6f} | {r.min_cosine:.6f} | "
            f"{r.max_abs_error:.4f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
