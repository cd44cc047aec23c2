"""The one small name -> builder registry used for students, teachers and loss terms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders. Unknown names and duplicate registrations are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``builder`` under ``name``."""

        def decorator(builder: T) -> T:
            self.add(name, builder)
            return builder

        return decorator

    def add(self, name: str, builder: T) -> None:
        if name in self._builders:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._builders[name] = builder

    def get(self, name: str) -> T:
        try:
            return self._builders[name]
        except KeyError:
            valid = ", ".join(sorted(self._builders))
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
