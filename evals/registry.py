"""A small generic registry of named components (routers, graders, data sources).

After lm-evaluation-harness's ``Registry``: ``register`` works as a decorator, a duplicate name with a
different target raises, and an unknown name raises :class:`UnknownComponentError` naming the closest
registered names ("did you mean") and listing the valid ones. :func:`suggest` is the same "did you mean"
for any list of names (data sources, parameters).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from evals.exceptions import UnknownComponentError

__all__ = ["Registry", "did_you_mean", "suggest"]

T = TypeVar("T")


def _normalised(name: str) -> str:
    # "mmlu_pro", "MMLU-Pro" and "mmlu pro" are one name to a person typing it.
    return "".join(ch for ch in name.lower() if ch.isalnum())


def suggest(name: str, choices: Iterable[str], *, n: int = 3) -> list[str]:
    """The names in ``choices`` closest to ``name``, best first (empty when none is close).

    Case, ``-``, ``_`` and spaces are ignored first (``mmlu_pro`` -> ``mmlu-pro``), then
    :func:`difflib.get_close_matches` finds typos (``knnn`` -> ``knn``).

    Example:
        >>> suggest("mmlu_pro", ["mmlu-pro", "routerbench", "sprout"])
        ['mmlu-pro']
    """
    options = sorted({str(c) for c in choices})
    key = _normalised(str(name))
    same = [c for c in options if _normalised(c) == key and key]
    by_key: dict[str, list[str]] = {}
    for c in options:
        by_key.setdefault(_normalised(c), []).append(c)
    close = difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.6) if key else []
    ordered = same + [c for k in close for c in by_key[k] if c not in same]
    if len(ordered) < n:  # names that differ only in case or separators were covered above
        ordered += [c for c in difflib.get_close_matches(str(name), options, n=n) if c not in ordered]
    return ordered[:n]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'mmlu-pro'?)"`` for the closest choices, or ``""``: to append to an error message."""
    close = suggest(name, choices)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


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
            UnknownComponentError: if ``name`` is not registered: ``unknown router 'knnn' (did you mean
                'knn'?); registered routers: ...``.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" from a broken config
            valid = ", ".join(sorted(self._items)) or "(none)"
            hint = did_you_mean(name, self._items) if isinstance(name, str) else ""
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{hint}; registered {self.kind}s: {valid}"
            ) from None

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
