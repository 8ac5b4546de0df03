"""The decision log: one JSON line per chat request, written off the request path (``[log]`` in upstreams.toml).

How a request becomes a line, and why none of it can slow or fail the request:

1. When a request is over, :meth:`DecisionLog.finish` (a finisher of the proxy state) appends the request's
   :class:`~routers.export.proxy.context.RequestContext` to a bounded queue (a ``deque``: one append, no lock, no
   wake-up of the writer, no I/O, no serialisation on the event loop). A full queue (a slow or stuck disk) drops
   the line and counts it.
2. A writer thread wakes every :data:`WAKE_S` seconds (or at once for a flush or a stop), takes what is queued,
   yields the interpreter lock between records (so the event loop never waits behind a batch), builds each
   :class:`~evals.production.records.DecisionRecord` (validated: a record the schema refuses is dropped and
   counted, never written half-right), and appends the lines to the
   current segment (``decisions-<UTC start>-<sequence>.jsonl``, :func:`evals.production.log_reader.segment_name`).
   It starts a new segment before one would pass ``max_segment_bytes`` or once it is ``max_segment_seconds`` old.
3. A write that fails (read-only or vanished directory, full disk) drops the lines it held, counts them, closes the
   segment and waits :data:`RETRY_S` before opening a new one; lines arriving meanwhile are dropped and counted.

Counters (``/metrics``): ``routelab_decision_log_written_total{kind}``, ``routelab_decision_log_dropped_total
{reason}`` with reasons ``queue_full``, ``write_error``, ``invalid_record``, ``stopped``; ``/healthz`` has a
``decision_log`` section with the same numbers, the state (``writing``, ``failing``, ``stopped``) and the last
error. Keys never reach a line: the record has no field for a header, and texts (only with ``store_text``) go
through the proxy's key scrubber and :func:`evals.production.records.cap_text` (key-shaped strings redacted, cut
to ``text_cap``).

Other writers (shadow pairs, online grades) use :meth:`DecisionLog.write` with any object that has ``to_json()``:
the same queue, segments and counters. The log is reachable as ``st.decision_log`` once attached.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from evals.exceptions import ConfigError
from evals.production.log_reader import segment_name
from evals.production.records import (
    ARMS,
    SCHEMA_VERSION,
    Candidate,
    DecisionRecord,
    RecordError,
    cap_text,
    prompt_hash,
)
from routers.export.proxy.context import RequestContext
from routers.export.settings.log import LogSettings

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["DROP_REASONS", "DecisionLog", "RETRY_S", "WAKE_S", "attach", "decision_json", "record_of"]

log = logging.getLogger("routelab.proxy.log")

#: Seconds between attempts to open a new segment after a write failed.
RETRY_S = 1.0
#: Why a line can be dropped (each a ``routelab_decision_log_dropped_total`` series from the start).
DROP_REASONS = ("queue_full", "write_error", "invalid_record", "stopped")
#: Seconds between the writer's wake-ups: a line reaches its segment within about this long. The request path
#: never wakes the writer (a ``queue.Queue`` put notifies a condition on every request; under load that and the
#: lock hand-overs it causes cost more than the record itself).
WAKE_S = 0.05
#: Lines the writer takes from the queue per write call.
_BATCH = 512
#: Seconds of record building the writer does before it hands the interpreter lock back to the event loop.
_HOLD_S = 0.005
_STOP = object()
#: The prompt hash of a request whose prompt the proxy did not read (a direct model name or a pass-through).
_NO_PROMPT_HASH = prompt_hash("")


_RECORD_FIELDS = tuple(f.name for f in fields(DecisionRecord))
_LEADING = ("schema_version", "kind")  # first in every line (DecisionRecord.to_dict)
_CANDIDATE_FIELDS = tuple(f.name for f in fields(Candidate))


def decision_json(record: DecisionRecord) -> bytes:
    """The JSON line (UTF-8, no newline) of ``record``: the same object as ``record.to_json()`` (a test compares
    them), built field by field instead of through ``dataclasses.asdict`` (whose deep copy costs about 8x more with
    14 candidates) and encoded with orjson (about 8x faster than ``json.dumps``): this runs once per request in
    the writer thread, which shares the interpreter lock with the request path. The record was validated when it
    was built (no NaN or infinity can reach here; orjson would write them as null)."""
    d = {name: getattr(record, name) for name in _RECORD_FIELDS}
    d["candidates"] = [
        {"model": c.model, "predicted_quality": c.predicted_quality, "predicted_cost": c.predicted_cost,
         "eligible": c.eligible}
        for c in record.candidates
    ]
    return orjson.dumps({"schema_version": d.pop("schema_version"), "kind": d.pop("kind"), **d})


def _plain_fast_line(ctx: RequestContext, shadow: bool) -> bytes | None:
    """The decision line of ``ctx`` (no texts) built straight from its facts, or None to take the checked path.

    What :func:`record_of` then :func:`decision_json` give, byte for byte (a test compares them over many
    requests), at about a quarter of the cost: no record and no candidate objects are built. It only answers when
    every value is of the plain kind the checked path certainly accepts (a subset of the schema: finite floats in
    range, real strings, bools; int-valued floats, NaN, a duplicate model or anything unusual gives None), so no
    line is ever written that :class:`~evals.production.records.DecisionRecord` would refuse.
    """
    chosen = ctx.choice if ctx.routed else None
    t, eps, lam, prop = ctx.received, ctx.epsilon, ctx.lam, ctx.propensity
    latency = ctx.latency_s if ctx.latency_s is not None else ctx.elapsed()
    cost = ctx.cost_usd
    usage = ctx.usage or (None, None)
    if not (type(ctx.request_id) is str and ctx.request_id and type(ctx.route) in (str, type(None))
            and type(t) is float and 0.0 <= t < math.inf and type(latency) is float and latency < math.inf
            and type(eps) is float and 0.0 <= eps <= 1.0 and type(ctx.explored) is bool
            and type(ctx.status) is int and type(ctx.reason) is str and ctx.arm in ARMS
            and (ctx.category is None or type(ctx.category) is str)
            and (ctx.prompt is None or type(ctx.prompt) is str)
            and (ctx.answered_by is None or (type(ctx.answered_by) is str and ctx.answered_by))
            and (cost is None or (type(cost) is float and 0.0 <= cost < math.inf))
            and type(usage) is tuple and len(usage) == 2
            and all(n is None or (type(n) is int and n >= 0) for n in usage)):
        return None
    candidates = []
    for p in ctx.predictions:
        q, c, e, m = p.quality, p.cost, p.eligible, p.model
        if not (type(q) is float and type(c) is float and 0.0 <= q <= 1.0 and 0.0 <= c < math.inf
                and type(e) is bool and type(m) is str and m):
            return None
        candidates.append({"model": m, "predicted_quality": q, "predicted_cost": c, "eligible": e})
    if len({c["model"] for c in candidates}) != len(candidates):
        return None
    if chosen is None:
        prop = lam = None
    elif not (type(chosen) is str and chosen and (not candidates or any(c["model"] == chosen for c in candidates))
              and type(prop) is float and 0.0 < prop <= 1.0 and (lam is None or (type(lam) is float
                                                                               and 0.0 <= lam < math.inf))):
        return None
    values = {
        "request_id": ctx.request_id, "time": t, "route": ctx.route or "?",
        "prompt_hash": prompt_hash(ctx.prompt) if ctx.prompt is not None else _NO_PROMPT_HASH,
        "status": ctx.status if 100 <= ctx.status <= 599 else 500, "latency_s": max(0.0, latency),
        "category": ctx.category, "chosen": chosen, "candidates": candidates, "propensity": prop, "lam": lam,
        "epsilon": eps, "explored": ctx.explored, "answered_by": ctx.answered_by, "reason": ctx.reason,
        "input_tokens": usage[0], "output_tokens": usage[1], "cost_usd": cost, "arm": ctx.arm,
        "shadow": bool(shadow), "prompt_text": None, "answer_text": None, "text_truncated": False,
        "kind": "decision", "schema_version": SCHEMA_VERSION,
    }
    return orjson.dumps({"schema_version": SCHEMA_VERSION, "kind": "decision",
                         **{name: values[name] for name in _RECORD_FIELDS if name not in _LEADING}})


def record_of(
    ctx: RequestContext, shadow: bool, *, store_text: bool, text_cap: int, scrub: Any = None
) -> DecisionRecord:
    """The decision record of a finished request (see :class:`~evals.production.records.DecisionRecord`).

    Args:
        ctx: The finished request.
        shadow: Whether it was sampled for shadow grading (read when the request finished).
        store_text: Keep the prompt and answer texts (scrubbed of the proxy's keys, redacted, capped).
        text_cap: Characters kept per text.
        scrub: ``text -> text`` replacing the proxy's own keys (``ProxyState.scrub``); applied before the cap.

    Raises:
        RecordError: when the request's facts do not fit the schema (e.g. a prediction outside [0, 1]).
    """
    chosen = ctx.choice if ctx.routed else None
    usage = ctx.usage or (None, None)
    prompt_text = answer_text = None
    truncated = False
    if store_text:
        clean = scrub or (lambda t: t)
        prompt_text, cut_p = cap_text(None if ctx.prompt is None else clean(ctx.prompt), text_cap)
        answer_text, cut_a = cap_text(None if ctx.answer_text is None else clean(ctx.answer_text), text_cap)
        truncated = cut_p or cut_a
    status = ctx.status if 100 <= ctx.status <= 599 else 500
    return DecisionRecord(
        request_id=ctx.request_id,
        time=ctx.received,
        route=ctx.route or "?",
        prompt_hash=prompt_hash(ctx.prompt) if ctx.prompt is not None else _NO_PROMPT_HASH,
        status=status,
        latency_s=max(0.0, ctx.latency_s if ctx.latency_s is not None else ctx.elapsed()),
        category=ctx.category,
        chosen=chosen,
        candidates=tuple(Candidate(p.model, p.quality, p.cost, p.eligible) for p in ctx.predictions),
        propensity=ctx.propensity if chosen is not None else None,
        lam=ctx.lam if chosen is not None else None,
        epsilon=ctx.epsilon,
        explored=ctx.explored,
        answered_by=ctx.answered_by,
        reason=ctx.reason,
        input_tokens=usage[0],
        output_tokens=usage[1],
        cost_usd=ctx.cost_usd,
        arm=ctx.arm,
        shadow=bool(shadow),
        prompt_text=prompt_text,
        answer_text=answer_text,
        text_truncated=truncated,
    )


class DecisionLog:
    """The writer of a decision-log directory (see the module docstring); a proxy component and finisher.

    Args:
        settings: The ``[log]`` section.
        directory: Where the segments go (``settings.dir`` resolved).
        count: ``(*key, by=...)`` adding to the proxy's counters (thread-safe).
        scrub: ``text -> text`` removing the proxy's keys from stored texts.
    """

    def __init__(self, settings: LogSettings, directory: Path, count: Any, scrub: Any = None) -> None:
        self.settings = settings
        self.directory = directory
        self._count = count
        self._scrub = scrub
        # Appends (event loop) and pops (writer thread) of a deque are atomic; the bound is checked before appending.
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_started = 0.0
        self._segment_bytes = 0
        self._sequence = 0
        self._retry_at = 0.0
        self.written: dict[str, int] = {}
        """Lines written per record kind."""
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        """Lines dropped per reason."""
        self.segments_opened = 0
        self.writer_cpu_s = 0.0
        """CPU seconds the writer thread has spent (building records, encoding and writing lines)."""
        self.last_error: str | None = None
        self._stopped = False
        self._lock = threading.Lock()
        for reason in DROP_REASONS:  # every series visible from the start, at 0
            count("decision_log_dropped", reason, by=0.0)
        count("decision_log_written", "decision", by=0.0)

    # ------------------------------------------------------------------ request path (event loop)
    def finish(self, ctx: RequestContext) -> None:
        """Queue a finished request's record (a finisher: returns at once; a full queue drops and counts)."""
        self._put((ctx, bool(ctx.extra.get("shadow"))))

    def write(self, record: Any) -> bool:
        """Queue any record with ``to_json()`` (a shadow pair, a grade) for the same segments; never blocks.

        Returns:
            Whether it was queued (False: dropped and counted, the queue being full or the log stopped).
        """
        return self._put(record)

    def _put(self, item: Any) -> bool:
        if self._stopped:
            self._drop("stopped")
            return False
        if len(self._queue) >= self.settings.queue_size:
            self._drop("queue_full")
            return False
        self._queue.append(item)
        return True

    # ------------------------------------------------------------------ component
    async def startup(self) -> None:
        """Create the directory (a failure is counted and retried, never fatal) and start the writer thread."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._failed(f"cannot create {self.directory} ({type(exc).__name__}: {exc})")
        self._thread = threading.Thread(target=self._run, name="routelab-decision-log", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Write what is queued, close the segment and stop the thread (waits at most 10 s)."""
        self._stopped = True
        if self._thread is None:
            return
        self._queue.append(_STOP)  # a marker, not a line: after everything queued, whatever the bound
        self._wake.set()
        await asyncio.to_thread(self._thread.join, 10.0)
        self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every line queued so far is written or dropped (tests, benches); False on timeout."""
        done = threading.Event()
        if self._stopped or self._thread is None:
            return False
        self._queue.append(done)  # a marker, not a line: after everything queued, whatever the bound
        self._wake.set()
        return done.wait(timeout)

    # ------------------------------------------------------------------ health
    def counts(self) -> dict[str, dict[str, int]]:
        """``{"written": {kind: lines}, "dropped": {reason: lines}}`` so far."""
        with self._lock:
            return {"written": dict(self.written), "dropped": dict(self.dropped)}

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` section: state, directory, current segment, written and dropped counts, last error."""
        state = "stopped" if self._stopped else ("failing" if self._retry_at > time.monotonic() else "writing")
        return {
            "state": state,
            "dir": str(self.directory),
            "segment": self._segment.name if self._segment is not None else None,
            "queued": len(self._queue),
            "writer_cpu_s": round(self.writer_cpu_s, 6),
            **self.counts(),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        stop = False
        while not stop:
            self._wake.wait(WAKE_S)  # at once for a flush or a stop
            self._wake.clear()
            cpu0 = time.thread_time()
            self._rotate_if_old()
            while self._queue and not stop:
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                lines: list[tuple[str, bytes]] = []
                waiting: list[threading.Event] = []
                held_since = time.perf_counter()
                for item in batch:
                    if item is _STOP:
                        stop = True
                    elif isinstance(item, threading.Event):
                        waiting.append(item)
                    else:
                        line = self._line(item)
                        if line is not None:
                            lines.append(line)
                        if time.perf_counter() - held_since > _HOLD_S:
                            # Hand the interpreter lock back: the event loop waits at most this long for it, not
                            # the interpreter's 5 ms switch interval. Not after every record: each hand-over
                            # makes this thread wait for the loop to let go again, and costs both a switch.
                            time.sleep(0)
                            held_since = time.perf_counter()
                try:
                    self._write(lines)
                except Exception:  # noqa: BLE001 - a bug here must not kill the writer (the queue would only fill)
                    log.exception("decision log: %d line(s) not written", len(lines))
                    self._drop("write_error", len(lines))
                    self._close()
                for event in waiting:
                    event.set()
            self.writer_cpu_s += time.thread_time() - cpu0
        self._close()

    def _line(self, item: Any) -> tuple[str, bytes] | None:
        """``(kind, JSON line with its newline)`` of a queued item, or None when its record is invalid."""
        try:
            if isinstance(item, tuple):
                ctx, shadow = item
                if not self.settings.store_text:  # the common case: straight from the facts when they are plain
                    fast = _plain_fast_line(ctx, shadow)
                    if fast is not None:
                        return "decision", fast + b"\n"
                record = record_of(
                    ctx, shadow, store_text=self.settings.store_text, text_cap=self.settings.text_cap,
                    scrub=self._scrub,
                )
                return "decision", decision_json(record) + b"\n"
            return str(getattr(item, "kind", "decision")), (item.to_json() + "\n").encode("utf-8")
        except (RecordError, ValueError, TypeError, AttributeError, LookupError) as exc:
            self._drop("invalid_record")
            log.warning("decision log: a record was not written (%s)", exc)
            return None

    def _write(self, lines: list[tuple[str, bytes]]) -> None:
        if not lines:
            return
        if self._retry_at > time.monotonic():  # still waiting after a failure: drop rather than pile up
            self._drop("write_error", len(lines))
            return
        self._rotate_if_old()
        done = 0
        try:
            while done < len(lines):
                if self._fd is None:
                    self._open()
                # As many lines as fit in this segment (at least one: a line is never split across segments).
                room = self.settings.max_segment_bytes - self._segment_bytes
                end, size = done, 0
                while end < len(lines):
                    n = len(lines[end][1])
                    first_of_segment = end == done and self._segment_bytes == 0
                    if size + n > room and not first_of_segment:
                        break
                    size, end = size + n, end + 1
                if end == done:  # the segment is full: start the next one
                    self._close()
                    continue
                self._write_all(b"".join(line for _, line in lines[done:end]))
                self._counted(lines[done:end])
                done = end
        except OSError as exc:
            self._drop("write_error", len(lines) - done)
            self._failed(f"cannot write to {self._segment or self.directory} ({type(exc).__name__}: {exc})")
            self._close()

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:  # os.write may write less than asked (a signal, a nearly full disk)
            n = os.write(self._fd, view)
            view = view[n:]
            self._segment_bytes += n

    def _counted(self, lines: list[tuple[str, bytes]]) -> None:
        with self._lock:
            for kind, _ in lines:
                self.written[kind] = self.written.get(kind, 0) + 1
        for kind, _ in lines:
            self._count("decision_log_written", kind)

    def _open(self) -> None:
        """Open a new segment; its name is never one that exists (another worker may write the same directory)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        while True:
            path = self.directory / segment_name(now, self._sequence)
            self._sequence += 1
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:
                continue
            break
        self._segment, self._segment_started, self._segment_bytes = path, time.monotonic(), 0
        self.segments_opened += 1

    def _rotate_if_old(self) -> None:
        if self._fd is not None and time.monotonic() - self._segment_started >= self.settings.max_segment_seconds:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _failed(self, why: str) -> None:
        if self._retry_at <= time.monotonic():  # one warning per failure episode, not one per batch
            log.warning("decision log: %s; dropping lines, retrying in %g s", why, RETRY_S)
        self.last_error = why
        self._retry_at = time.monotonic() + RETRY_S

    def _drop(self, reason: str, n: int = 1) -> None:
        with self._lock:  # the event loop (queue full) and the writer thread both drop
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._count("decision_log_dropped", reason, by=float(n))


def attach(st: ProxyState) -> None:
    """Attach the decision log to ``st`` when ``[log] dir`` is set (a finisher, a component, ``st.decision_log``).

    A relative ``dir`` is resolved against the current directory; a directory inside the export folder is refused
    (the folder must hold only its own files, or it no longer verifies).

    Raises:
        ConfigError: for a ``dir`` inside the export folder.
    """
    settings: LogSettings = st.config.section("log")
    if not settings.enabled:
        return
    assert settings.dir is not None
    directory = Path(settings.dir).expanduser().resolve()
    folder = Path(st.exported.folder).resolve()
    if directory == folder or folder in directory.parents:
        raise ConfigError(
            f"[log] dir {settings.dir!r} is inside the export folder {folder}; an export folder holds only its "
            "own files (it would no longer verify): choose a directory outside it"
        )
    writer = DecisionLog(settings, directory, st.count, st.scrub)
    st.decision_log = writer  # type: ignore[attr-defined]  # other features write shadow pairs and grades here
    st.wants_predictions = True
    st.finishers.append(writer.finish)
    # First component: started before and stopped after the others, which may write to it while they stop.
    st.components.insert(0, writer)
    st.health_sections["decision_log"] = writer.health
