import pytest

from vfmkd_ray.registry import Registry


def test_unknown_name_lists_valid_names():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    registry.add("b", 2)
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid names: a, b"):
        registry.get("c")


def test_duplicate_registration_is_an_error():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 2)
