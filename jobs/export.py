"""Ray job entrypoint: `python -m jobs.export ARGS` runs `vfmkd export ARGS` (see vfmkd_ray.submission)."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
