"""``[budget]`` of ``upstreams.toml``: daily and monthly spend limits, for all clients and per client key.

Spend is the proxy's own price of each answer (usage x the export's prices, ``x-routelab-cost-usd``), counted
per UTC day and UTC calendar month: in Redis when ``[state] url`` is set (one budget across replicas), else in
the process. Past a limit a routed request either goes to the cheapest model or is refused with a 429 in
OpenAI's error shape. See :mod:`routers.export.proxy.budget`.

Example::

    [budget]
    daily_usd = 100.0
    monthly_usd = 2000.0
    per_key_daily_usd = 5.0       # each client bearer key's own limits
    per_key_monthly_usd = 50.0
    on_exceeded = "cheapest"      # or "reject"
    name = "default"              # budgets of the same name (on one Redis) share their spend
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.exceptions import ConfigError

__all__ = ["ON_EXCEEDED", "BudgetSettings", "parse"]

#: What a request past a limit gets: the cheapest model, or a 429.
ON_EXCEEDED = ("cheapest", "reject")
_LIMITS = ("daily_usd", "monthly_usd", "per_key_daily_usd", "per_key_monthly_usd")
_KEYS = (*_LIMITS, "on_exceeded", "name")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class BudgetSettings:
    """Settings of ``[budget]`` (defaults: no limit, no budget step)."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    per_key_daily_usd: float | None = None
    per_key_monthly_usd: float | None = None
    on_exceeded: str = "cheapest"
    name: str = "default"

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return any(getattr(self, k) is not None for k in _LIMITS)

    @property
    def per_key(self) -> bool:
        """Whether client keys have their own limits."""
        return self.per_key_daily_usd is not None or self.per_key_monthly_usd is not None


def parse(table: Mapping[str, Any], where: str, models: Sequence[str]) -> BudgetSettings:
    """Check and read the section (an empty table gives the defaults: no budget)."""
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; keys are {', '.join(_KEYS)}")
    limits: dict[str, float] = {}
    for key in _LIMITS:
        if key not in table:
            continue
        v = table[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e12 or v != v:
            raise ConfigError(f"{where}: {key} must be a number of dollars >= 0, got {v!r}")
        limits[key] = float(v)
    action = table.get("on_exceeded", "cheapest")
    if action not in ON_EXCEEDED:
        raise ConfigError(f"{where}: on_exceeded must be one of {', '.join(ON_EXCEEDED)}, got {action!r}")
    name = table.get("name", "default")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name must be 1-64 characters of letters, digits and _ . -, got {name!r}")
    if table and not limits:
        raise ConfigError(f"{where}: no limit set; set at least one of {', '.join(_LIMITS)} (or drop the section)")
    return BudgetSettings(**limits, on_exceeded=action, name=name)
