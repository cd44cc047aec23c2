"""Ray job entrypoint: `python -m jobs.tune ARGS` runs `vfmkd tune ARGS` (see vfmkd_ray.submission)."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
