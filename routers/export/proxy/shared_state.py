"""State shared by the proxy replicas of one export through Redis (``[state] url`` in ``upstreams.toml``).

Shared: circuit breakers (an upstream that fails through one replica is skipped by the others), the adaptive
router's feedback evidence (a feedback posted to one replica changes every replica's next decision), the live
upstream telemetry, request and spend counters (``routelab_shared_*`` in ``/metrics``) and the spend counters
budgets read (:mod:`.budget`).

How, and what a request waits for:

* **Breakers**: a replica that trips a breaker writes ``<ns>:breaker:<model>`` (expiring with the cooldown) and
  publishes it on ``<ns>:events``; every replica's subscriber opens its own breaker for the time left. The
  request path never reads Redis for breakers.
* **Feedback**: ``POST /v1/feedback`` runs one Lua script that fades and counts the category's row atomically in
  ``<ns>:evidence:<category>`` (the runtime's rule: the row times ``forgetting``, then ``+score`` successes and
  ``+1-score`` failures), then publishes the new row; the replica that took the feedback sets its own row from
  the script's answer before it replies, the others from the message. Routing reads the local copy only.
* **Live telemetry**: every upstream attempt is published (in batches) and fed to the other replicas'
  latency and error-rate averages (:mod:`.telemetry`), so all of them see every attempt.
* **Counters**: finishers queue increments; a background task adds them, in batches every
  ``FLUSH_INTERVAL_S`` (budget spend at once when a limit is near), in one script call (``INCRBYFLOAT``,
  applied once even when sent again) that publishes the new values, so every replica follows every counter
  without reading it. Budgets decide on those values; a counter a replica has never seen is read once
  (one ``MGET``): the only Redis call a chat request can wait for.

Every Redis call made for a request is bounded by ``timeout_ms``. When Redis does not answer, the replica goes
on with its local state (breakers, evidence and counters it keeps anyway), says ``degraded`` in ``/healthz``
and ``routelab_state_degraded 1`` in ``/metrics``, keeps what it could not push (feedback in order, counter
deltas, open breakers), and tries to reconnect every ``reconnect_s``. On reconnection it pushes those local
deltas, then pulls the shared state (breakers, evidence rows, counters) and serves from it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from evals.exceptions import ConfigError
from routers.export.proxy import shared_state_report
from routers.export.proxy.shared_state_redis import (
    COUNTERS_LUA,
    FEEDBACK_LUA,
    REPLACE_ROW_LUA,
    RESTORE_COUNTER_LUA,
    SEED_ROW_LUA,
    flat_to_row,
    row_fields,
)
from routers.export.proxy.shared_state_report import SHARED_REASONS
from routers.export.settings.shared_state import SharedStateSettings
from routers.runtime import check_feedback

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["SHARED_REASONS", "SharedState", "StateUnavailable", "attach", "default_namespace"]

log = logging.getLogger("routelab.proxy")


#: A feedback or evidence replacement waiting for Redis: (id, row or "*", model or whole evidence, score).
PendingItem = tuple[str, str, Any, float]


class StateUnavailable(Exception):
    """Redis did not answer in time (or is known to be away): use local state."""


def default_namespace(exported: Any) -> str:
    """``routelab:<router name>:<arrays sha256[:12]>``: the replicas of one export share it, others do not."""
    name = str(exported.manifest["router"]["name"])
    digest = str((exported.manifest.get("files") or {}).get("arrays.npz") or "")[:12] or "noarrays"
    return f"routelab:{name}:{digest}"


class SharedState:
    """The Redis-backed shared state of one replica: a component of the :class:`ProxyState` (see module doc).

    Attributes:
        TIMEOUTS_BEFORE_DEGRADED: Slow answers in a row that make the replica go on with local state.
        FLUSH_INTERVAL_S: Counter increments and telemetry are pushed in batches at most this often.
        MAX_PENDING_OBS: Upstream attempts queued for the other replicas' telemetry at most (then dropped).

    Args:
        st: The proxy state it shares (breakers of ``st.upstreams``, the export's adaptive evidence).
        settings: The ``[state]`` section.
        password: The Redis password (read from ``password_env`` by :func:`attach`), or None.
    """

    TIMEOUTS_BEFORE_DEGRADED = 3
    FLUSH_INTERVAL_S = 0.05
    MAX_PENDING_OBS = 1000

    def __init__(self, st: ProxyState, settings: SharedStateSettings, password: str | None = None) -> None:
        self.st, self.settings, self.password = st, settings, password
        self.namespace = settings.namespace or default_namespace(st.exported)
        self.channel = f"{self.namespace}:events"
        self.timeout_s = settings.timeout_ms / 1000.0
        self.replica = uuid.uuid4().hex[:12]
        self.redis: Any = None
        self.up = False
        """Whether Redis answered last time (False: degraded, serving on local state)."""
        self.connected_once = False
        self.degraded_since: float | None = time.time()
        self.last_error = "not connected yet"
        self.resyncs = 0
        self.errors = 0
        self.timeouts_in_a_row = 0
        self.rt_sum = 0.0
        self.rt_n = 0
        # Local deltas not yet in Redis (pushed by the flusher, or at resynchronisation).
        self.pending: dict[str, tuple[float, int]] = {}
        """Counter key -> (amount not pushed yet, ttl seconds)."""
        self.unacked: dict[str, dict[str, tuple[float, int]]] = {}
        """Batch id -> increments sent to Redis without an answer yet (sent again under the same id)."""
        self.known: dict[str, float] = {}
        """Counter key -> its value in Redis when last read or pushed."""
        self.pending_trips: dict[str, float] = {}
        self.pending_obs: list[tuple[str, float, str | None]] = []
        """Upstream attempts (model, seconds, failure) to publish to the other replicas' live telemetry."""
        """Model -> monotonic time its breaker stays open until (to publish)."""
        self.pending_feedback: list[PendingItem] = []
        """(feedback id, evidence row, model, score) applied locally, not yet counted in Redis (in order); row
        ``"*"`` is a whole replacement (``PUT /v1/feedback/state``) whose evidence stands in for the model."""
        self.row_version: dict[str, int] = {}
        self.shared_rows: dict[str, dict[str, list[float]]] = {}
        """Evidence row -> its values as last read from Redis (without this replica's pending feedback)."""
        self.ttl: dict[str, int] = {}
        """Counter key -> its expiry in seconds (0 = none)."""
        self.adaptive = bool(st.exported.adaptive)
        self.initial_evidence = st.exported.state.get_evidence() if self.adaptive else {}
        self.forgetting = float(st.exported.state.meta.get("forgetting", 1.0)) if self.adaptive else 1.0
        self._wake: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        """Set with something that must not wait for the batch (an urgent counter, a trip, a feedback)."""
        self._lost: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._script: Any = None
        self._counters_script: Any = None
        self._replace_script: Any = None
        self._metric_keys = [self.key("requests", r) for r in SHARED_REASONS] + [
            self.key("cost", m) for m in st.config.upstreams
        ]
        self.watched: list[Callable[[], list[str]]] = []
        """Functions naming more counters to refresh every second for ``/metrics`` (budgets add theirs)."""

    def key(self, *parts: str) -> str:
        """A key in this state's namespace."""
        return ":".join((self.namespace, *parts))

    # ------------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        """Connect (or start degraded if Redis is away) and start the background tasks."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._wake, self._hurry, self._lost = asyncio.Event(), asyncio.Event(), asyncio.Event()
        # No client-side retries: a replica that cannot reach Redis at once goes on with local state.
        self.redis = aioredis.Redis.from_url(
            self.settings.url,
            password=self.password,
            socket_connect_timeout=max(self.timeout_s, 0.2),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name=f"routelab-{self.replica}",
        )
        self._script = self.redis.register_script(FEEDBACK_LUA)
        self._counters_script = self.redis.register_script(COUNTERS_LUA)
        self._replace_script = self.redis.register_script(REPLACE_ROW_LUA)
        with contextlib.suppress(Exception):
            await self._resync()
        if not self.up:
            log.warning("shared state: Redis at %s not reachable (%s); serving on local state",
                        self.settings.url, self.last_error)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(t) for t in (self._keeper(), self._flusher(), self._subscriber())]

    async def shutdown(self) -> None:
        """Push what is pending (bounded by the timeout), stop the tasks, close the client."""
        if self.up:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(max(self.timeout_s, 0.5)):
                    await self._push_counters()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    # ------------------------------------------------------------------ calls with a deadline
    async def call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis call within ``timeout_ms``; raise :class:`StateUnavailable` (at once while degraded)."""
        if not self.up:
            raise StateUnavailable(self.last_error)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                out = await make()
        except Exception as exc:  # noqa: BLE001 - timeouts, connection errors, Redis errors: all mean "local"
            self.mark_lost(exc)
            raise StateUnavailable(self.last_error) from None
        self.rt_sum += time.perf_counter() - t0
        self.rt_n += 1
        self.timeouts_in_a_row = 0
        return out

    def mark_lost(self, exc: BaseException) -> None:
        """Redis failed us: serve on local state and let the keeper reconnect.

        A broken or refused connection counts at once; a slow answer (a timeout) only when it is the
        ``TIMEOUTS_BEFORE_DEGRADED``-th in a row, so one slow fsync does not send a replica to local state.
        """
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError):
            self.timeouts_in_a_row += 1
            if self.timeouts_in_a_row < self.TIMEOUTS_BEFORE_DEGRADED:
                return
        if self.up:
            self.up = False
            self.degraded_since = time.time()
            log.warning("shared state: Redis unreachable (%s); serving on local state", self.last_error)
        if self._lost is not None:
            self._lost.set()

    # ------------------------------------------------------------------ counters (requests, spend, budgets)
    def add(self, key: str, amount: float, ttl_s: int = 0, *, urgent: bool = False) -> None:
        """Queue ``+amount`` on a shared counter: pushed with the next batch (within ``FLUSH_INTERVAL_S``), at
        once when ``urgent`` (budget spend near a limit), or at resynchronisation while Redis is away."""
        self.ttl[key] = ttl_s
        old, _ = self.pending.get(key, (0.0, ttl_s))
        self.pending[key] = (old + amount, ttl_s)
        if self._wake is not None:
            self._wake.set()
            if urgent:
                self._hurry.set()  # type: ignore[union-attr]

    def estimate(self, key: str) -> float:
        """A counter's value without waiting: last known shared value + what this replica has not pushed."""
        unacked = sum(batch[key][0] for batch in self.unacked.values() if key in batch)
        return self.known.get(key, 0.0) + self.pending.get(key, (0.0, 0))[0] + unacked

    async def read(self, keys: Sequence[str], fresh: bool = False) -> list[float]:
        """Counters' current values, without waiting on Redis for counters this replica already follows.

        Every replica's pushes are published with the counters' new values, so a followed counter's estimate
        (:meth:`estimate`) is current to within the publish delay. A counter seen for the first time (every
        counter, with ``fresh``) is read with one ``MGET`` bounded by ``timeout_ms`` (the local estimate if
        Redis does not answer in time).
        """
        unknown = list(keys) if fresh else [k for k in keys if k not in self.known]
        if unknown:
            try:
                values = await self.call(lambda: self.redis.mget(unknown))
            except StateUnavailable:
                return [self.estimate(k) for k in keys]
            for k, v in zip(unknown, values, strict=True):
                self.known[k] = max(self.known.get(k, 0.0), float(v) if v is not None else 0.0)
        return [self.estimate(k) for k in keys]

    def count_request(self, reason: str, model: str | None, cost: float | None) -> None:
        """Count one finished chat request (and its spend) across replicas."""
        self.add(self.key("requests", reason), 1.0)
        if model is not None and cost:
            self.add(self.key("cost", model), cost)

    async def _push_counters(self) -> None:
        """Every counter increment not in Redis yet, then every pending breaker trip.

        Increments go in batches applied once each: a batch whose answer was lost (a timeout, a crash after the
        write) is sent again under the same id and not counted twice.
        """
        if self.pending:
            batch, self.pending = self.pending, {}
            self.unacked[uuid.uuid4().hex] = batch
        for bid, batch in list(self.unacked.items()):
            keys = list(batch)
            args = [self.channel, self.replica, *(x for k in keys for x in (repr(batch[k][0]), str(batch[k][1])))]
            values = await self._counters_script(keys=[self.key("batch-seen", bid), *keys], args=args)
            self.unacked.pop(bid, None)
            for k, v in zip(keys, values, strict=True):
                self.known[k] = max(self.known.get(k, 0.0), float(v))
        if not self.pending_trips and not self.pending_obs:
            return
        trips, self.pending_trips = self.pending_trips, {}
        obs, self.pending_obs = self.pending_obs, []
        try:
            pipe = self.redis.pipeline(transaction=False)
            if obs:  # live telemetry: lost with the connection if it breaks (old observations are not live)
                pipe.publish(self.channel, json.dumps({"k": "obs", "from": self.replica, "obs": obs}))
            now = time.monotonic()
            for model, until in trips.items():
                left_ms = int((until - now) * 1000)
                if left_ms > 0:
                    pipe.set(self.key("breaker", model), "1", px=left_ms)
                    pipe.publish(self.channel, json.dumps({"k": "trip", "from": self.replica, "model": model,
                                                           "left_ms": left_ms}))
            await pipe.execute()
        except BaseException:
            for model, until in trips.items():  # sent again later (setting a breaker twice changes nothing)
                self.pending_trips[model] = max(until, self.pending_trips.get(model, 0.0))
            raise

    # ------------------------------------------------------------------ breakers
    def on_trip(self, model: str, open_until: float) -> None:
        """A breaker opened here (``open_until``: monotonic seconds): tell the other replicas."""
        self.pending_trips[model] = max(open_until, self.pending_trips.get(model, 0.0))
        if self._wake is not None:
            self._wake.set()
            self._hurry.set()  # type: ignore[union-attr]

    def on_attempt(self, model: str, seconds: float, failure: str | None) -> None:
        """An upstream attempt here: published (in batches) to the other replicas' live telemetry."""
        if failure == "deadline" or not self.up:  # a deadline says nothing about the upstream
            return
        if len(self.pending_obs) < self.MAX_PENDING_OBS:
            self.pending_obs.append((model, round(seconds, 6), failure))
        if self._wake is not None:
            self._wake.set()

    def _observe_remote(self, obs: Sequence[Sequence[Any]]) -> None:
        telemetry = getattr(self.st, "telemetry", None)  # routers.export.proxy.telemetry, when attached
        if telemetry is None:
            return
        ups = self.st.config.upstreams  # one lock and one provider-state push per batch, not per attempt
        telemetry.observe_many((str(m), float(s), None if f is None else str(f)) for m, s, f in obs if str(m) in ups)

    def _open_breaker(self, model: str, left_s: float) -> None:
        b = self.st.upstreams.breakers.get(model)
        if b is not None and left_s > 0:
            b.open_until = max(b.open_until, time.monotonic() + left_s)

    # ------------------------------------------------------------------ adaptive feedback
    def _row_name(self, category: str | None) -> str:
        return category if category and category in self.initial_evidence else ""

    async def feedback(self, category: str | None, model: str, score: float) -> None:
        """Count one feedback for every replica (this one included, before returning).

        Raises:
            ValueError: for an unknown model or a score outside [0, 1] (nothing counted anywhere).
        """
        check_feedback(model, score, self.st.exported.models)
        item = (uuid.uuid4().hex, self._row_name(category), model, float(score))
        try:
            await self.call(lambda: self._push_feedback(item))
        except StateUnavailable:
            # Counted here now, and in Redis when it answers again (the id keeps it from being counted twice).
            self.st.exported.state.feedback(item[1], model, float(score))
            self.pending_feedback.append(item)
            if self._wake is not None:  # still up after a slow answer: the flusher retries it at once
                self._wake.set()
                self._hurry.set()  # type: ignore[union-attr]

    async def replace_evidence(self, state: dict[str, Any] | str | bytes) -> None:
        """``PUT /v1/feedback/state`` on every replica: replace the evidence here (refused, changing nothing, if it
        does not fit: ValueError), then every row in Redis, which the other replicas follow."""
        self.st.exported.state.set_evidence(state)
        item: PendingItem = (uuid.uuid4().hex, "*", self.st.exported.state.get_evidence(), 0.0)
        self.pending_feedback = [item]  # feedback not pushed yet is part of the evidence being replaced
        with contextlib.suppress(StateUnavailable):
            await self.call(self._push_pending_feedback)

    async def _push_pending_feedback(self) -> None:
        """Push queued feedback (and evidence replacements) in order; each leaves the queue once in Redis."""
        while self.pending_feedback:
            await self._push_feedback(self.pending_feedback[0])
            self.pending_feedback.pop(0)

    async def _push_feedback(self, item: PendingItem) -> None:
        fid, row, model, score = item
        if row == "*":  # a whole evidence replacement: every row, each published
            assert isinstance(model, dict)
            for name, values in model.items():
                flat = await self._replace_script(
                    keys=[self.key("evidence", name)], args=[self.channel, self.replica, name, *row_fields(values)]
                )
                self._set_row(name, flat, force=True)
            return
        assert isinstance(model, str)
        seed = row_fields(self.initial_evidence[row])
        flat = await self._script(
            keys=[self.key("evidence", row), self.key("feedback-seen", fid)],
            args=[repr(self.forgetting), model, repr(score), self.channel, self.replica, row, *seed],
        )
        self._set_row(row, flat)

    def _set_row(self, row: str, flat: Sequence[Any], *, force: bool = False) -> None:
        """Set this replica's evidence row from Redis (newer versions only, unless ``force``)."""
        values, version = flat_to_row(flat, self.st.exported.models) if flat else (self.initial_evidence[row], 0)
        if not force and version <= self.row_version.get(row, -1):
            return
        evidence = self.st.exported.state.get_evidence()
        evidence[row] = values
        self.st.exported.state.set_evidence(evidence)
        self.row_version[row] = version
        self.shared_rows[row] = values

    # ------------------------------------------------------------------ background tasks
    async def _resync(self) -> None:
        """Push local deltas (feedback in order, counters, breakers), then pull the shared state."""
        async with asyncio.timeout(max(5.0, 20 * self.timeout_s)):
            if self.connected_once:  # pooled connections to the Redis that went away are dead: drop them all
                await self.redis.connection_pool.disconnect()
            await self.redis.ping()
            await self._restore_lost()
            await self._push_pending_feedback()
            await self._push_counters()
            models = list(self.st.config.upstreams)
            pipe = self.redis.pipeline(transaction=False)
            for m in models:
                pipe.pttl(self.key("breaker", m))
            rows = list(self.initial_evidence)
            for row in rows:
                pipe.hgetall(self.key("evidence", row))
            followed = list(dict.fromkeys([*self._metric_keys, *self.known]))
            pipe.mget(followed)
            res = await pipe.execute()
        for m, ttl in zip(models, res[: len(models)], strict=True):
            if ttl and ttl > 0:
                self._open_breaker(m, ttl / 1000.0)
        for row, h in zip(rows, res[len(models) : len(models) + len(rows)], strict=True):
            flat = [x for kv in h.items() for x in kv] if isinstance(h, dict) else h
            self._set_row(row, flat, force=True)
        for k, v in zip(followed, res[-1], strict=True):
            self.known[k] = float(v) if v is not None else 0.0
        if self.connected_once:
            self.resyncs += 1
            log.warning("shared state: Redis is back; local deltas pushed and shared state pulled")
        self.connected_once = True
        self.up, self.degraded_since, self.last_error = True, None, ""
        assert self._lost is not None
        self._lost.clear()

    async def _restore_lost(self) -> None:
        """Redis came back without our keys (restarted without persistence): write back what this replica last
        saw there. Counters get the largest value any replica saw (exact when one of them saw the last write
        before the loss); an evidence row, the first replica's copy."""
        pipe = self.redis.pipeline(transaction=False)
        for k, v in self.known.items():
            if v:
                pipe.eval(RESTORE_COUNTER_LUA, 2, k, f"{k}:restored", repr(v), str(self.ttl.get(k, 0)))
        for row, values in self.shared_rows.items():
            version = self.row_version.get(row, 0)
            if version > 0:
                pipe.eval(SEED_ROW_LUA, 1, self.key("evidence", row), "v", str(version), *row_fields(values))
        if len(pipe):
            await pipe.execute()

    async def _keeper(self) -> None:
        """While degraded: reconnect every ``reconnect_s``. While up: refresh the counters shown in /metrics."""
        assert self._lost is not None
        while True:
            if not self.up:
                await asyncio.sleep(self.settings.reconnect_s)
                try:
                    await self._resync()
                except Exception as exc:  # noqa: BLE001 - still away; try again later
                    self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._lost.wait()
            if self.up:
                keys = self._metric_keys + [k for watch in self.watched for k in watch()]
                try:
                    async with asyncio.timeout(max(self.timeout_s, 0.5)):
                        values = await self.redis.mget(keys)
                except Exception as exc:  # noqa: BLE001
                    self.mark_lost(exc)
                    continue
                for k, v in zip(keys, values, strict=True):
                    self.known[k] = float(v) if v is not None else 0.0

    async def _flusher(self) -> None:
        """Push what is queued: breaker trips, feedback and urgent counters at once; other counter increments and
        telemetry in batches, at most every ``FLUSH_INTERVAL_S`` (one push per request would cost each request
        a Redis call's CPU on every replica)."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            if not (self._hurry.is_set() or self.pending_trips or self.pending_feedback):
                # Collect a batch, unless something urgent comes meanwhile (it goes at once, with the batch so far).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.FLUSH_INTERVAL_S):
                        await self._hurry.wait()
            self._wake.clear()
            self._hurry.clear()
            if not self.up:
                continue  # kept; pushed at resynchronisation
            try:
                async with asyncio.timeout(max(self.timeout_s, 0.5)):
                    await self._push_pending_feedback()  # feedback whose push was too slow, in order
                    await self._push_counters()
                self.timeouts_in_a_row = 0
            except Exception as exc:  # noqa: BLE001
                self.mark_lost(exc)

    async def _subscriber(self) -> None:
        """Apply the other replicas' breaker trips and evidence rows as they are published."""
        while True:
            while not self.up:
                await asyncio.sleep(0.05)
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._pull_rows()  # what was published before the subscription took effect
                while self.up:
                    msg = await pubsub.get_message(timeout=0.5)
                    if msg is not None:
                        self._apply(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the connection broke: Redis is away
                self.mark_lost(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _pull_rows(self) -> None:
        """Set every evidence row from Redis where Redis holds a newer version."""
        if not self.initial_evidence:
            return
        rows = list(self.initial_evidence)
        async with asyncio.timeout(max(1.0, 10 * self.timeout_s)):
            pipe = self.redis.pipeline(transaction=False)
            for row in rows:
                pipe.hgetall(self.key("evidence", row))
            res = await pipe.execute()
        for row, h in zip(rows, res, strict=True):
            if h:
                self._set_row(row, [x for kv in h.items() for x in kv])

    def _apply(self, data: Any) -> None:
        try:
            msg = json.loads(data)
            if msg.get("from") == self.replica:
                return
            if msg.get("k") == "trip":
                self._open_breaker(str(msg["model"]), float(msg["left_ms"]) / 1000.0)
            elif msg.get("k") == "counts":  # another replica's push: the counters' new values
                c = msg["c"]
                for i in range(0, len(c) - 1, 2):
                    k, v = str(c[i]), float(c[i + 1])
                    if k in self.known or k.startswith(self.namespace) or k.startswith("routelab:budget:"):
                        self.known[k] = max(self.known.get(k, 0.0), v)
            elif msg.get("k") == "obs":
                self._observe_remote(msg["obs"])
            elif msg.get("k") == "row" and str(msg.get("row")) in self.initial_evidence:
                self._set_row(str(msg["row"]), msg.get("h") or [])
        except (ValueError, KeyError, TypeError, AttributeError):
            self.errors += 1
            log.warning("shared state: ignored a malformed message on %s", self.channel)


def _finisher(shared: SharedState) -> Callable[[Any], None]:
    def count_shared(ctx: Any) -> None:
        reason = (ctx.reason or "failed").split(" ")[0]
        if reason in SHARED_REASONS:
            shared.count_request(reason, ctx.answered_by, ctx.cost_usd)

    return count_shared


def attach(st: ProxyState) -> SharedState | None:
    """Share ``st``'s breakers, adaptive evidence and counters through Redis when ``[state] url`` is set.

    Returns the :class:`SharedState` (budgets count spend through it), or None for in-process state.
    """
    settings: SharedStateSettings = st.config.section("state")
    if not settings.shared:
        return None
    if importlib.util.find_spec("redis") is None:
        raise ConfigError(
            f"[state] url = {settings.url!r} needs the Python package 'redis': pip install -e \".[server]\" "
            "(or pip install redis), or remove [state] url to keep state in the process"
        )
    password = (os.environ.get(settings.password_env) or None) if settings.password_env else None
    shared = SharedState(st, settings, password)
    st.components.append(shared)
    st.finishers.append(_finisher(shared))
    st.upstreams.trip_observers.append(shared.on_trip)
    st.upstreams.attempt_observers.append(shared.on_attempt)
    if shared.adaptive:
        st.feedback_sink = shared.feedback
        st.evidence_sink = shared.replace_evidence
    st.health_sections["state"] = lambda: shared_state_report.health(shared)
    st.metrics_sections.append(lambda: shared_state_report.metrics_text(shared))
    return shared
