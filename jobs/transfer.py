"""Ray job entrypoint: `python -m jobs.transfer ARGS` runs `vfmkd transfer ARGS` (vfmkd_ray.submission)."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["transfer", *sys.argv[1:]]))
