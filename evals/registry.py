"""A small generic registry of named components (routers, graders, data sources).

After lm-evaluation-harness's ``Registry``: ``register`` works as a decorator, a duplicate name with a
different target raises, and an unknown name raises :class:`UnknownComponentError` listing the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from evals.exceptions import UnknownComponentError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map with helpful errors.

    Args:
        kind: What is registered (``"router"``, ``"grader"``...), used in error messages.

    Example:
        >>> graders = Registry("grader")
        >>> @graders.register("exact")
        ... def exact(): ...
        >>> graders.get("exact") is exact
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers its target under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; re-registering the same object is a no-op."""
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            same_origin = getattr(existing, "__qualname__", None) == getattr(obj, "__qualname__", object()) and (
                getattr(existing, "__module__", None) == getattr(obj, "__module__", object())
            )
            if not same_origin:  # a module re-imported under importlib.reload is not a clash
                raise ValueError(f"{self.kind} {name!r} is already registered to {existing!r}")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            UnknownComponentError: if ``name`` is not registered (the message lists the valid names).
        """
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownComponentError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {valid}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """Sorted (name, object) pairs."""
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def _remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register throwaway components)."""
        self._items.pop(name, None)
