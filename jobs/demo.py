"""Ray job entrypoint: `python -m jobs.demo ARGS` runs `vfmkd demo ARGS` (see vfmkd_ray.submission)."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
