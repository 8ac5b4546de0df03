"""Live provider telemetry: a moving estimate of each upstream's latency and error rate.

Every upstream attempt is observed (``UpstreamClient.attempt_observers``): its seconds and whether it answered.
Per upstream the proxy keeps exponentially weighted moving averages (EWMA, weight :data:`ALPHA` on the newest
observation, so about the last ten attempts count):

- **latency**: seconds to the answer (to the first event of a stream) of the attempts that answered;
- **error rate**: the share of attempts that failed (timeouts, refused connections, 429/5xx, malformed or
  truncated answers); a client's own 4xx is an answer, and an attempt cut by the request's deadline says
  nothing about the upstream and is not counted.

Both are in ``/metrics`` (``routelab_upstream_latency_ewma_seconds``, ``routelab_upstream_error_rate_ewma``,
``routelab_upstream_observed_attempts_total``) and in ``/healthz`` (``telemetry``).

An export of the ``provider`` router (runtime kind ``provider``) chooses the cheapest provider within its latency
bound: after each observation the live numbers of the upstreams with at least :data:`MIN_ANSWERS` answers replace
the price table's latency for them (:meth:`routers.runtime.LoadedRouter.set_live`), and an upstream whose error
rate is above :data:`DOWN_ERROR_RATE` (after :data:`MIN_ANSWERS` attempts) counts as down. Before that, and for an
upstream not observed for :data:`STALE_S` seconds (a provider left out for being slow gets no traffic, so its
numbers would never change: it goes back to its listed figures and is tried again), the price table's figures
decide, as in the workbench.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["ALPHA", "DOWN_ERROR_RATE", "MIN_ANSWERS", "STALE_S", "Telemetry", "UpstreamEstimate", "attach"]

#: EWMA weight of the newest observation.
ALPHA = 0.2
#: Observations an upstream needs before its live numbers replace the price table's in a provider export.
MIN_ANSWERS = 3
#: Live error rate above which a provider export treats an upstream as down.
DOWN_ERROR_RATE = 0.5
#: Seconds after its last observation when an upstream's live numbers stop counting for a provider export.
STALE_S = 60.0


@dataclass
class UpstreamEstimate:
    """One upstream's live numbers."""

    latency_s: float | None = None
    """EWMA of the seconds of the attempts that answered (None before the first answer)."""
    error_rate: float | None = None
    """EWMA of failed attempts (1) against answers (0); None before the first attempt."""
    attempts: int = 0
    answers: int = 0
    last_seen: float = 0.0
    """``time.monotonic()`` of the last observation."""


class Telemetry:
    """Per-upstream EWMAs of latency and error rate (thread-safe), fed by every upstream attempt.

    Args:
        upstreams: The upstream names to report (others observed are added as they come).
        on_change: Called after each observation (e.g. to push the numbers into a provider export).
        alpha: EWMA weight of the newest observation, in (0, 1].
    """

    def __init__(
        self, upstreams: list[str], on_change: Any = None, alpha: float = ALPHA, stale_s: float = STALE_S
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"telemetry alpha must be in (0, 1], got {alpha!r}")
        self.alpha, self.stale_s = alpha, stale_s
        self.estimates: dict[str, UpstreamEstimate] = {m: UpstreamEstimate() for m in upstreams}
        self._on_change = on_change
        self._lock = threading.Lock()

    def observe(self, model: str, seconds: float, failure: str | None) -> None:
        """An attempt observer: ``failure`` is None for an answer, else its kind (``deadline`` is skipped)."""
        if failure == "deadline":
            return
        a = self.alpha
        with self._lock:
            e = self.estimates.setdefault(model, UpstreamEstimate())
            err = 0.0 if failure is None else 1.0
            e.error_rate = err if e.error_rate is None else e.error_rate + a * (err - e.error_rate)
            e.attempts += 1
            e.last_seen = time.monotonic()
            if failure is None:
                e.answers += 1
                e.latency_s = seconds if e.latency_s is None else e.latency_s + a * (seconds - e.latency_s)
        if self._on_change is not None:
            self._on_change(self)

    def live(self) -> tuple[dict[str, float], list[str]]:
        """(latency per upstream with at least :data:`MIN_ANSWERS` answers, upstreams whose error rate is over
        :data:`DOWN_ERROR_RATE` after at least :data:`MIN_ANSWERS` attempts); upstreams not observed for
        ``stale_s`` seconds are left out of both."""
        fresh_after = time.monotonic() - self.stale_s
        with self._lock:
            fresh = {m: e for m, e in self.estimates.items() if e.last_seen >= fresh_after}
            latency = {m: e.latency_s for m, e in fresh.items() if e.answers >= MIN_ANSWERS and e.latency_s is not None}
            down = [m for m, e in fresh.items()
                    if e.attempts >= MIN_ANSWERS and (e.error_rate or 0.0) > DOWN_ERROR_RATE]
        return latency, down  # type: ignore[return-value]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """JSON-able numbers per upstream (the ``/healthz`` section)."""
        with self._lock:
            return {
                m: {
                    "latency_ewma_s": None if e.latency_s is None else round(e.latency_s, 6),
                    "error_rate_ewma": None if e.error_rate is None else round(e.error_rate, 6),
                    "attempts": e.attempts,
                    "answers": e.answers,
                }
                for m, e in self.estimates.items()
            }

    def metrics_text(self) -> str:
        """The live numbers as Prometheus gauges (an upstream without observations is left out of a gauge)."""
        snap = self.snapshot()
        out = [
            "# HELP routelab_upstream_latency_ewma_seconds Moving average of an upstream's answer latency.",
            "# TYPE routelab_upstream_latency_ewma_seconds gauge",
        ]
        out += [f'routelab_upstream_latency_ewma_seconds{{model="{_label(m)}"}} {v["latency_ewma_s"]:.6g}'
                for m, v in snap.items() if v["latency_ewma_s"] is not None]
        out += ["# HELP routelab_upstream_error_rate_ewma Moving average of an upstream's failed attempts (0-1).",
                "# TYPE routelab_upstream_error_rate_ewma gauge"]
        out += [f'routelab_upstream_error_rate_ewma{{model="{_label(m)}"}} {v["error_rate_ewma"]:.6g}'
                for m, v in snap.items() if v["error_rate_ewma"] is not None]
        out += ["# HELP routelab_upstream_observed_attempts_total Upstream attempts the telemetry observed.",
                "# TYPE routelab_upstream_observed_attempts_total counter"]
        out += [f'routelab_upstream_observed_attempts_total{{model="{_label(m)}"}} {v["attempts"]}'
                for m, v in snap.items()]
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def attach(st: ProxyState) -> None:
    """Observe every upstream attempt of ``st`` (always on: one EWMA update per attempt); report the numbers in
    ``/metrics`` and ``/healthz``; feed them to a provider export's decisions (``st.telemetry``)."""
    state = st.exported.state
    push = None
    if getattr(state, "kind", None) == "provider" and callable(getattr(state, "set_live", None)):

        def push(t: Telemetry) -> None:
            latency, down = t.live()
            state.set_live(latency, down)

    telemetry = Telemetry(list(st.config.upstreams), push)
    st.telemetry = telemetry  # type: ignore[attr-defined]
    st.upstreams.attempt_observers.append(telemetry.observe)
    st.health_sections["telemetry"] = telemetry.snapshot
    st.metrics_sections.append(telemetry.metrics_text)
