"""Every module of the package imports on a machine without the optional stacks: ruff and the
import contract read imports as text, so a name imported from the wrong module is found only when
the module loads (an export path imported storage from vfmkd_ray.models once, and only a Ray
end-to-end test ran it)."""

import importlib
import pkgutil

import pytest

import vfmkd_ray

MODULES = sorted(m.name for m in pkgutil.walk_packages(vfmkd_ray.__path__, prefix="vfmkd_ray."))


@pytest.mark.parametrize("name", MODULES)
def test_the_module_imports(name):
    importlib.import_module(name)
