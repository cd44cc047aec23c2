"""Ray job entrypoint: `python -m jobs.train ARGS` runs `vfmkd train ARGS` (see vfmkd_ray.submission)."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
