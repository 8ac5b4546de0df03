"""Spend budgets (``[budget]`` in ``upstreams.toml``): daily and monthly dollar limits, for all clients and per
client key, enforced across replicas.

Spend is what the proxy prices each answer at (usage x the export's prices, the ``x-routelab-cost-usd``
header), added by a finisher once the request is over, to counters per UTC day and UTC month: atomic
``INCRBYFLOAT`` counters in Redis when ``[state] url`` is set (one budget for every replica; the keys expire
after their period; every replica follows their values as they are published, see
:mod:`routers.export.proxy.shared_state`), in the process otherwise. Before routing, a policy step compares the
counters with the limits without waiting on Redis (a counter a replica has never seen is read once, bounded by
``[state] timeout_ms``; the replica's own estimate when Redis is away) and, once a limit is reached, either
sends the request to the cheapest model (``on_exceeded = "cheapest"``; the request's ``decided_by`` is then
``budget``) or refuses it with a 429 in OpenAI's error shape (``"reject"``).

A request in flight when the limit is crossed is answered (its cost is known only afterwards), so spend can
pass a limit by the requests in flight at that moment. Direct and pass-through requests count toward the
budget; only routed requests are steered or refused.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from routers.export.proxy.context import RequestContext
from routers.export.proxy.errors import ClientRequestError, openai_error
from routers.export.proxy.shared_state import SharedState
from routers.export.settings.budget import BudgetSettings

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["Budget", "BudgetExceeded", "LocalCounters", "attach"]

log = logging.getLogger("routelab.proxy")

_DAY_TTL_S = 3 * 86400
_MONTH_TTL_S = 40 * 86400


class BudgetExceeded(ClientRequestError):
    """A 429 in OpenAI's quota-error shape (``type`` ``insufficient_quota``), with ``retry-after`` set to the
    seconds until the exceeded period ends."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, status=429, code="budget_exceeded")
        self.retry_after_s = retry_after_s

    def response(self) -> JSONResponse:  # noqa: D102
        return openai_error(429, self.message, "insufficient_quota", self.code,
                            {"retry-after": str(self.retry_after_s)})


def _usd(value: float) -> str:
    """Dollars, readable at any size: ``$12.50``, ``$0.002``."""
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def cheapest_model(st: ProxyState) -> str:
    """The export's cheapest model that has an upstream: by its price per million input + output tokens,
    then its per-request fee (ties: the export's model order)."""

    def price(m: str) -> tuple[float, float]:
        p = st.exported.prices.get(m) or {}
        per_token = float(p.get("input_per_1m") or 0.0) + float(p.get("output_per_1m") or 0.0)
        return per_token, float(p.get("request_fee") or 0.0)

    models = [m for m in st.exported.models if m in st.config.upstreams]
    return min(models, key=price)


class LocalCounters:
    """In-process counters with the interface budgets use (when ``[state]`` names no Redis)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, key: str, amount: float, ttl_s: int, *, urgent: bool = False) -> None:
        """Add ``amount`` to ``key`` (``ttl_s`` and ``urgent`` only matter in Redis)."""
        self.values[key] = self.values.get(key, 0.0) + amount

    async def read(self, keys: Sequence[str], fresh: bool = False) -> list[float]:
        """The current values of ``keys`` (0 for unknown ones; in one process they are always fresh)."""
        return [self.values.get(k, 0.0) for k in keys]

    def estimate(self, key: str) -> float:
        """The value of ``key`` without waiting (here: exact)."""
        return self.values.get(key, 0.0)


class Budget:
    """The budget of one proxy: its limits, its counters (shared or local), its policy step and its finisher.

    Args:
        st: The proxy state.
        settings: The ``[budget]`` section.
        counters: :class:`~routers.export.proxy.shared_state.SharedState` (Redis) or
            :class:`LocalCounters`.
        clock: Returns the current UTC time (tests move it across a day).
    """

    def __init__(
        self,
        st: ProxyState,
        settings: BudgetSettings,
        counters: SharedState | LocalCounters,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.st, self.settings, self.counters = st, settings, counters
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.cheapest = cheapest_model(st)
        self.prefix = f"routelab:budget:{settings.name}"
        self.exceeded: dict[str, int] = {"cheapest": 0, "reject": 0}
        self.max_cost = 0.0
        """The dearest request this replica has counted (sets how close to a limit counters are read fresh)."""
        self.keys_seen: set[str] = set()
        """Client key ids that spent on this replica (their spend is listed in /metrics)."""
        self._periods: tuple[dt.date | None, str, str] = (None, "", "")

    # ------------------------------------------------------------------ counters
    def _limits(self, key_id: str | None, now: dt.datetime) -> list[tuple[str, str, str, float | None, int]]:
        """(scope, period, counter key, limit or None, ttl) for every counter a request counts toward."""
        date = now.date()
        if self._periods[0] != date:  # twice per request: format the day and the month once per day
            self._periods = (date, now.strftime("%Y-%m-%d"), now.strftime("%Y-%m"))
        _, day, month = self._periods
        s = self.settings
        out = [
            ("all", "day", f"{self.prefix}:all:day:{day}", s.daily_usd, _DAY_TTL_S),
            ("all", "month", f"{self.prefix}:all:month:{month}", s.monthly_usd, _MONTH_TTL_S),
        ]
        if s.per_key and key_id is not None:
            out += [
                (key_id, "day", f"{self.prefix}:key:{key_id}:day:{day}", s.per_key_daily_usd, _DAY_TTL_S),
                (key_id, "month", f"{self.prefix}:key:{key_id}:month:{month}", s.per_key_monthly_usd, _MONTH_TTL_S),
            ]
        return out

    def _seconds_left(self, period: str, now: dt.datetime) -> int:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "day":
            end = start + dt.timedelta(days=1)
        else:
            end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return max(1, int((end - now).total_seconds()))

    # ------------------------------------------------------------------ the policy step and the finisher
    async def step(self, st: ProxyState, ctx: RequestContext) -> None:
        """Past a limit: route to the cheapest model, or refuse with a 429 (see the module docstring)."""
        now = self.clock()
        checks = [c for c in self._limits(ctx.client_key_id, now) if c[3] is not None]
        if not checks:
            return
        keys = [c[2] for c in checks]
        spent = await self.counters.read(keys)
        # Near a limit, read the shared counters themselves rather than follow them: another replica's last
        # spend may still be on its way (far from every limit, no request waits on Redis).
        if any(v >= c[3] - self._margin(c[3]) for c, v in zip(checks, spent, strict=True)):  # type: ignore[operator]
            spent = await self.counters.read(keys, fresh=True)
        over = [(c, v) for c, v in zip(checks, spent, strict=True) if v >= c[3]]  # type: ignore[operator]
        if not over:
            return
        (scope, period, _, limit, _), value = over[0]
        who = "all clients" if scope == "all" else f"client key {scope}"
        daily = "daily" if period == "day" else "monthly"
        what = f"the {daily} spend budget of {who} ({_usd(limit)}) is used up ({_usd(value)} spent)"
        ctx.extra["budget"] = {"scope": scope, "period": period, "limit_usd": limit, "spent_usd": value}
        if self.settings.on_exceeded == "reject":
            self.exceeded["reject"] += 1
            raise BudgetExceeded(
                f"{what}; requests are refused until the {period} ends (on_exceeded = \"reject\" in [budget] "
                "of upstreams.toml)",
                self._seconds_left(period, now),
            )
        self.exceeded["cheapest"] += 1
        ctx.choice, ctx.decided_by, ctx.propensity = self.cheapest, "budget", 1.0

    def _margin(self, limit: float) -> float:
        """How close to ``limit`` the counters are read fresh: a tenth of it, plus a few of the dearest
        requests seen (what the replicas may have spent since their last published update)."""
        return 0.1 * limit + 4 * self.max_cost

    def finish(self, ctx: RequestContext) -> None:
        """Add a finished request's cost to every counter it counts toward."""
        if not ctx.cost_usd:
            return
        self.max_cost = max(self.max_cost, float(ctx.cost_usd))
        if ctx.client_key_id is not None and self.settings.per_key:
            self.keys_seen.add(ctx.client_key_id)
        cost = float(ctx.cost_usd)
        for _, _, key, limit, ttl in self._limits(ctx.client_key_id, self.clock()):
            # Near a limit, pushed at once: another replica near it must see this spend on its next (fresh) read.
            # Far from every limit, with the next batch (within FLUSH_INTERVAL_S): a push per request would cost
            # every replica a Redis call and a published message per request, and nothing reads it so soon.
            near = limit is not None and self.counters.estimate(key) + cost >= limit - self._margin(limit)
            self.counters.add(key, cost, ttl, urgent=near)

    # ------------------------------------------------------------------ metrics
    def _metric_rows(self, now: dt.datetime) -> list[tuple[str, str, str, float | None, int]]:
        rows = self._limits(None, now)
        for key_id in sorted(self.keys_seen):
            rows += self._limits(key_id, now)[2:]
        return rows

    def counter_keys(self) -> list[str]:
        """The counters ``/metrics`` shows now (refreshed from Redis every second by the shared state)."""
        return [row[2] for row in self._metric_rows(self.clock())]

    def metrics_text(self) -> str:
        """Budget limits, spend (this replica's latest view of the shared counters) and exceeded requests."""
        now = self.clock()
        lines = [
            "# HELP routelab_budget_limit_usd Spend limit per scope (all, or a client key id) and period.",
            "# TYPE routelab_budget_limit_usd gauge",
        ]
        rows = self._metric_rows(now)
        for scope, period, _, limit, _ in rows:
            if limit is not None:
                lines.append(f'routelab_budget_limit_usd{{scope="{scope}",period="{period}"}} {limit:.10g}')
        lines += [
            "# HELP routelab_budget_spent_usd Spend in the current UTC day / month, all replicas together.",
            "# TYPE routelab_budget_spent_usd gauge",
        ]
        for scope, period, key, _, _ in rows:
            lines.append(
                f'routelab_budget_spent_usd{{scope="{scope}",period="{period}"}} {self.counters.estimate(key):.10g}'
            )
        lines += [
            "# HELP routelab_budget_exceeded_total Routed requests past a limit, by what was done "
            "(cheapest: sent to the cheapest model; reject: refused with 429).",
            "# TYPE routelab_budget_exceeded_total counter",
        ]
        lines += [f'routelab_budget_exceeded_total{{action="{a}"}} {n}' for a, n in self.exceeded.items()]
        return "\n".join(lines) + "\n"


def attach(st: ProxyState, shared: SharedState | None) -> Budget | None:
    """Add the budget step, finisher and metrics when ``[budget]`` sets a limit; counters in ``shared`` (Redis)
    when given, else in the process."""
    settings: BudgetSettings = st.config.section("budget")
    if not settings.enabled:
        return None
    budget = Budget(st, settings, shared if shared is not None else LocalCounters())
    st.policy_steps.append(budget.step)
    st.finishers.append(budget.finish)
    st.metrics_sections.append(budget.metrics_text)
    if shared is not None:
        shared.watched.append(budget.counter_keys)
    return budget
