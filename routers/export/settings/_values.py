"""Checks shared by the optional sections' parsers: each returns the value or raises a one-line ConfigError
naming the section (``where``) and the key."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from evals.exceptions import ConfigError

__all__ = ["boolean", "no_unknown_keys", "number", "text"]


def no_unknown_keys(table: Mapping[str, Any], where: str, known: Iterable[str]) -> None:
    """Refuse keys the section does not know (a typo must not silently leave a feature at its default)."""
    known = tuple(known)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; keys are {', '.join(known)}")


def number(where: str, key: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> float | int:
    """``value`` checked to be a finite number (an integer if asked) in [lo, hi]."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
    return int(value) if integer else float(value)


def boolean(where: str, key: str, value: Any) -> bool:
    """``value`` checked to be true or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def text(where: str, key: str, value: Any) -> str:
    """``value`` checked to be a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value
