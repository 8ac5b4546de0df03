"""How numbers are written for people: one format for a value with its interval, one name for each kind of point.

Every surface that prints a saving or a quality (``routelab eval``, the report, ``routelab export``, the export
README, the app) formats it here, so the same number reads the same everywhere, for example
``88.2% [87.7%, 88.8%]``, and says which point it is:

* :data:`POINT_TEST_FRONTIER`: read off the test frontier (the cheapest point of the *test* sweep that meets the
  criterion; an optimistic, descriptive figure, since the point was chosen with test outcomes);
* :data:`POINT_VALIDATION_CHOSEN`: at the operating point chosen on the validation split and then measured on
  test (what a deployment of that point should expect).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "POINT_TEST_FRONTIER",
    "POINT_VALIDATION_CHOSEN",
    "format_interval",
    "format_number",
    "format_pct",
]

POINT_TEST_FRONTIER = "read off the test frontier"
POINT_VALIDATION_CHOSEN = "at the point chosen on validation, measured on test"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def format_pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage (``0.882`` -> ``"88.2%"``); ``"—"`` when missing or not finite."""
    return "—" if _missing(x) else f"{float(x):.{digits}%}"


def format_number(x: Any, digits: int = 3) -> str:
    """A plain number with ``digits`` decimals; ``"—"`` when missing or not finite."""
    return "—" if _missing(x) else f"{float(x):.{digits}f}"


def format_interval(
    value: Any = None, low: Any = None, high: Any = None, *, pct: bool = False, digits: int | None = None
) -> str:
    """``value [low, high]`` with the unit on every number: ``88.2% [87.7%, 88.8%]`` or ``0.812 [0.790, 0.833]``.

    ``value`` may also be a mapping with ``value``/``low``/``high`` keys (an interval's ``to_dict()``), or an
    object with a ``to_dict`` method. A missing bound prints as ``—``; a missing interval prints the value alone.
    """
    if isinstance(value, Mapping) or hasattr(value, "to_dict"):
        d = value if isinstance(value, Mapping) else value.to_dict()
        value, low, high = d.get("value"), d.get("low"), d.get("high")
    fmt = (lambda x: format_pct(x, 1 if digits is None else digits)) if pct else (
        lambda x: format_number(x, 3 if digits is None else digits)
    )
    if _missing(low) and _missing(high):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"
