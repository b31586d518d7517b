"""One small registry per extension point: a dict, `@register(name)`, and entry points.

Third-party packages extend cotrain by declaring an entry point in the group `cotrain.<kind>`; they
are loaded on first lookup, so importing cotrain stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from cotrain.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind.

    Args:
        kind: what is registered (used in error messages and the entry-point group `cotrain.<kind>`).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def _discover(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            group = f"cotrain.{self.kind}"
            self._entry_points = {ep.name: ep for ep in metadata.entry_points(group=group)}
        return self._entry_points

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._discover()))

    def get(self, name: str) -> T:
        if name not in self._items:
            ep = self._discover().get(name)
            if ep is None:
                raise unknown_name(self.kind.rstrip("s"), name, self.names())
            self._items[name] = ep.load()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._discover()
