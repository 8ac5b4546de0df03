"""Live provider telemetry: a moving estimate of each upstream's latency and error rate.

Every upstream attempt is observed (``UpstreamClient.attempt_observers``): its seconds and whether it answered.
Per upstream the proxy keeps exponentially weighted moving averages (EWMA, weight :data:`ALPHA` on the newest
observation, so about the last ten attempts count):

- **latency**: seconds to the answer (to the first event of a stream) of the attempts that answered;
- **error rate**: the share of attempts that failed (timeouts, refused connections, 429/5xx, malformed or
  truncated answers); a client's own 4xx is an answer, and an attempt cut by the request's deadline says
  nothing about the upstream and is not counted.

Both are in ``/metrics`` (``routelab_upstream_latency_ewma_seconds``, ``routelab_upstream_error_rate_ewma``,
``routelab_upstream_observed_attempts_total``) and in ``/healthz`` (``telemetry``). With a decision log (``[log]``)
they are also in the log: a background task (:class:`TelemetryLogger`, a proxy component) writes a
:class:`~evals.production.records.TelemetryRecord` every ``[log] telemetry_every_s`` seconds for each upstream with
new attempts since its last snapshot, and one more per such upstream when the proxy stops, so ``routelab logs
report`` shows each upstream's latency and error rate over the logged period. Nothing of it runs per attempt: an
attempt only updates the averages, as without a log.

An export of the ``provider`` router (runtime kind ``provider``) chooses the cheapest provider within its latency
bound: after each observation the live numbers of the upstreams with at least :data:`MIN_ANSWERS` answers replace
the price table's latency for them (:meth:`routers.runtime.LoadedRouter.set_live`), and an upstream whose error
rate is above :data:`DOWN_ERROR_RATE` (after :data:`MIN_ANSWERS` attempts) counts as down. Before that, and for an
upstream not observed for :data:`STALE_S` seconds (a provider left out for being slow gets no traffic, so its
numbers would never change: it goes back to its listed figures and is tried again), the price table's figures
decide, as in the workbench.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evals.production.records import RecordError, TelemetryRecord

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = [
    "ALPHA", "DOWN_ERROR_RATE", "MIN_ANSWERS", "STALE_S", "Telemetry", "TelemetryLogger", "UpstreamEstimate", "attach",
]

log = logging.getLogger("routelab.proxy.telemetry")

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
        with self._lock:
            self._update(model, seconds, failure, time.monotonic())
        if self._on_change is not None:
            self._on_change(self)

    def observe_many(self, observations: Iterable[tuple[str, float, str | None]]) -> None:
        """Several attempts in their order, as :meth:`observe` one by one would take them (the same EWMAs), with
        one lock and one ``on_change``: how a replica applies a batch of the other replicas' attempts."""
        now, changed = time.monotonic(), False
        with self._lock:
            for model, seconds, failure in observations:
                if failure != "deadline":
                    self._update(model, seconds, failure, now)
                    changed = True
        if changed and self._on_change is not None:
            self._on_change(self)

    def _update(self, model: str, seconds: float, failure: str | None, now: float) -> None:
        a = self.alpha
        e = self.estimates.setdefault(model, UpstreamEstimate())
        err = 0.0 if failure is None else 1.0
        e.error_rate = err if e.error_rate is None else e.error_rate + a * (err - e.error_rate)
        e.attempts += 1
        e.last_seen = now
        if failure is None:
            e.answers += 1
            e.latency_s = seconds if e.latency_s is None else e.latency_s + a * (seconds - e.latency_s)

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


class TelemetryLogger:
    """A proxy component that writes :class:`Telemetry`'s estimates to the decision log (see the module docstring).

    Every ``every_s`` seconds (a task on the server's loop) and once at :meth:`shutdown`, each upstream whose
    ``attempts`` grew since its last snapshot becomes a :class:`~evals.production.records.TelemetryRecord` handed to
    ``writer.write`` (which queues it without blocking; a full queue drops and counts it, as for any log line).

    Args:
        telemetry: The estimates to snapshot.
        writer: An object with ``write(record) -> bool`` (the decision log), or a zero-argument function returning
            one or None (the log attaches after telemetry, so it is looked up when the server starts).
        every_s: Seconds between snapshots (> 0).
    """

    def __init__(self, telemetry: Telemetry, writer: Any, every_s: float) -> None:
        if not every_s > 0:
            raise ValueError(f"telemetry snapshot period must be > 0 seconds, got {every_s!r}")
        self.telemetry, self.every_s = telemetry, float(every_s)
        self._writer = writer
        self._task: asyncio.Task[None] | None = None
        self._written_attempts: dict[str, int] = {}
        self.snapshots = 0
        """Snapshot records handed to the log (queued; the log counts what it wrote or dropped)."""

    def _resolve(self) -> Any:
        return self._writer() if callable(self._writer) and not hasattr(self._writer, "write") else self._writer

    async def startup(self) -> None:
        """Start the periodic task (nothing to do without a log)."""
        if self._resolve() is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="routelab-telemetry-log")

    async def shutdown(self) -> None:
        """Stop the task and write the last snapshot (the log stops after this component)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        self.write_snapshot(final=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                self.write_snapshot()
            except Exception:  # noqa: BLE001 - a bug here must not end the snapshots (or reach a request)
                log.exception("telemetry: a snapshot was not written")

    def write_snapshot(self, *, final: bool = False, now: float | None = None) -> int:
        """Hand one record per upstream with new attempts to the log; the number handed (0 without a log)."""
        writer = self._resolve()
        if writer is None:
            return 0
        t = time.time() if now is None else now
        handed = 0
        for upstream, est in self.telemetry.snapshot().items():
            if est["attempts"] <= self._written_attempts.get(upstream, 0):
                continue  # nothing new since its last snapshot: an idle upstream does not repeat itself
            try:
                record = TelemetryRecord(upstream=upstream, time=t, latency_s=est["latency_ewma_s"],
                                         error_rate=est["error_rate_ewma"], attempts=est["attempts"],
                                         answers=est["answers"], final=final)
            except RecordError as exc:  # an upstream name the schema refuses: skip it, keep the others
                log.warning("telemetry: no snapshot of %r (%s)", upstream, exc)
                continue
            writer.write(record)
            self._written_attempts[upstream] = est["attempts"]
            handed += 1
        self.snapshots += handed
        return handed


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def attach(st: ProxyState) -> None:
    """Observe every upstream attempt of ``st`` (always on: one EWMA update per attempt); report the numbers in
    ``/metrics`` and ``/healthz``; feed them to a provider export's decisions (``st.telemetry``); with ``[log]`` and
    ``telemetry_every_s > 0``, snapshot them to the decision log (a :class:`TelemetryLogger` component)."""
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
    settings = st.config.section("log")
    if settings.enabled and settings.telemetry_every_s > 0:
        # The decision log attaches after this feature (it is the last); look it up when the server starts. Its
        # component is the first started and the last stopped, so the final snapshot is written.
        logger = TelemetryLogger(telemetry, lambda: getattr(st, "decision_log", None), settings.telemetry_every_s)
        st.telemetry_logger = logger  # type: ignore[attr-defined]
        st.components.append(logger)
