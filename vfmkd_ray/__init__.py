"""vfmkd_ray: distill vision foundation models into small detector backbones on Ray."""

__version__ = "0.1.0"
