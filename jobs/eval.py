"""Ray job entrypoint: `python -m jobs.eval ARGS` runs `vfmkd eval ARGS` (see vfmkd_ray.submission)."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
