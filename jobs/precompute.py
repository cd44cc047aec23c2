"""Ray job entrypoint: `python -m jobs.precompute ARGS` runs `vfmkd precompute ARGS`."""

import sys

from vfmkd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["precompute", *sys.argv[1:]]))
