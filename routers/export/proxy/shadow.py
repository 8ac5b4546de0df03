"""Shadow grading: a sample of answered requests is also sent to a reference model, after the client has its
answer, and (optionally) graded right away so an adaptive export backs off and recovers with no human.

How a request becomes a shadow pair, and why none of it can slow or fail the request:

1. :meth:`ShadowGrader.finish` (a finisher, run before the decision log's) samples routed, answered (200) requests
   not answered by the reference itself, at ``[shadow] rate``: non-streamed ones, and streams whose whole text the
   proxy gathered as it relayed them (ended with ``[DONE]``, under the gathering cap). A sampled request is marked
   ``ctx.extra["shadow"] = True`` (the decision record's ``shadow`` flag) and put on a bounded queue with
   ``put_nowait``; a full queue, or a sample whose estimated reference cost (the answer's token counts at the
   reference's prices; without usage, as a stream without ``stream_options.include_usage`` has none, the
   messages' and the answer's characters / 4) would pass the daily spend cap, is dropped and counted instead.
   Nothing else happens on the request path. The cap counts what was spent plus the estimates of the calls queued
   or running, per worker process and UTC day; a reference answer longer than estimated can pass it by that
   difference.
2. Worker tasks (``workers`` of them, a component started with the server) take a sample, ask the reference
   model the same messages through the proxy's upstream client (retries, deadline ``timeout_s``; the reference's
   open circuit drops the sample), and write a :class:`~evals.production.records.ShadowPair` to the decision log
   (``st.decision_log.write``; without a log the pair is counted as unwritten).
3. With ``grade_online = true`` the pair is graded at once as ``routelab logs grade`` would grade it
   (:func:`evals.production.grading.agrade_pair`: exact match when the request carried its expected answer in
   ``x-routelab-expected``, else the pairwise judge grader, both orders, through the ``judge`` upstream; on the
   full texts, not the capped stored ones); the verdict is written as a
   :class:`~evals.production.records.GradeRecord` and, for an adaptive export, fed back as the answering model's
   score in the request's category: 1 when the answer is at least as good as the reference's, else 0. So when a
   cheap model starts failing a category, its posterior drops and the category moves to a stronger model; the
   adaptive router's re-tries bring it back when it does well again.

Counters (``/metrics``, ``routelab_shadow_*``) and a ``shadow`` section of ``/healthz`` show what was sampled,
dropped (per reason), asked, spent (today and in total), graded (per verdict) and fed back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evals.production.grading import agrade_pair
from evals.production.records import ShadowPair
from evals.serving.wire import answer_text
from routers.export.proxy.context import RequestContext
from routers.export.proxy.errors import UpstreamFailed
from routers.export.proxy.upstream import valid_usage
from routers.export.settings.shadow import ShadowSettings

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["DROP_REASONS", "ShadowGrader", "attach", "default_reference"]

log = logging.getLogger("routelab.proxy.shadow")

#: "No cap" for the texts a pair is graded on (they are not stored).
_NO_CAP = 1 << 40
#: Why a sample is dropped (each a ``routelab_shadow_dropped_total`` series from the start).
DROP_REASONS = ("queue_full", "over_daily_cap", "reference_down", "stopped")


@dataclass(frozen=True)
class _Sample:
    """What a shadow call needs from a finished request (copied: the context goes on to the decision log)."""

    request_id: str
    route: str
    category: str | None
    prompt: str
    messages: list[Any]
    answer_text: str
    answered_by: str
    answer_cost_usd: float | None
    estimate_usd: float
    expected: str | None


def default_reference(st: ProxyState) -> str:
    """The export's most expensive model with an upstream (by its price per token, input and output blended)."""

    def blended(model: str) -> float:
        p = st.exported.prices.get(model) or {}
        return 0.75 * float(p.get("input_per_1m") or 0.0) + 0.25 * float(p.get("output_per_1m") or 0.0)

    models = [m for m in st.exported.models if m in st.config.upstreams]
    return max(models, key=lambda m: (blended(m), models.index(m)))


class ShadowGrader:
    """The shadow sampler, its workers and online grading (see the module docstring).

    Args:
        st: The proxy state (upstream client, prices, the export, the decision log once attached).
        settings: The ``[shadow]`` section.
        reference: The reference model (an upstream).
        seed: Seed of the sampling draws (None: not reproducible).
    """

    def __init__(self, st: ProxyState, settings: ShadowSettings, reference: str, seed: int | None = None) -> None:
        self.st, self.settings, self.reference = st, settings, reference
        self._rng = random.Random(seed)
        self._queue: asyncio.Queue[_Sample] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._reserved = 0.0  # estimated spend of queued and running samples (the cap counts it)
        self._day, self._spent_today = _utc_day(), 0.0
        self.counts: dict[tuple[str, ...], float] = defaultdict(float)
        """Counters rendered on ``/metrics`` (key: series, then label values)."""

    # ------------------------------------------------------------------ request path (event loop)
    def finish(self, ctx: RequestContext) -> None:
        """Sample a finished request (a finisher: returns at once; see the module docstring, step 1)."""
        messages, ctx.messages = ctx.messages, None  # the decision log does not need them; free them now
        whole = not ctx.stream or ctx.extra.get("stream_text_complete", False)  # a stream: gathered whole
        if not (ctx.routed and ctx.status == 200 and whole and ctx.answer_text is not None
                and ctx.answered_by is not None and ctx.answered_by != self.reference and ctx.prompt is not None):
            return
        if self._rng.random() >= self.settings.rate:
            return
        if self._queue is None:  # not started, or stopped
            self._drop("stopped")
            return
        estimate = self._estimate(ctx, messages)
        self._roll_day()
        if self._spent_today + self._reserved + estimate > self.settings.daily_spend_usd:
            self._drop("over_daily_cap")
            return
        sample = _Sample(ctx.request_id, ctx.route, ctx.category, ctx.prompt,
                         list(messages or [{"role": "user", "content": ctx.prompt}]), ctx.answer_text,
                         ctx.answered_by, ctx.cost_usd, estimate, ctx.expected)
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self._drop("queue_full")
            return
        self._reserved += estimate
        ctx.extra["shadow"] = True
        self.counts[("sampled",)] += 1

    def _estimate(self, ctx: RequestContext, messages: list[dict[str, Any]] | None) -> float:
        """The reference call's likely cost at the reference's prices (0 when it has none).

        Tokens are the answer's usage; without usage (a stream without ``include_usage``) the characters / 4 of
        the messages sent and of the answer, the convention of the collector and the importers, so an answer that
        came without counts is not waved through the daily cap as free.
        """
        tokens = ctx.usage
        if tokens is None:
            sent = sum(len(t) for t in _message_texts(messages)) if messages else len(ctx.prompt or "")
            tokens = (-(-sent // 4), -(-len(ctx.answer_text or "") // 4))
        return self._price(self.reference, tokens) or 0.0

    def _price(self, model: str, tokens: tuple[int, int]) -> float | None:
        p = self.st.exported.prices.get(model) or {}
        if p.get("input_per_1m") is None:
            return None
        return (tokens[0] * p["input_per_1m"] + tokens[1] * p["output_per_1m"]) / 1e6 + float(
            p.get("request_fee") or 0.0)

    # ------------------------------------------------------------------ component
    async def startup(self) -> None:
        """Create the queue and start the worker tasks (inside the server's event loop)."""
        self._queue = asyncio.Queue(maxsize=self.settings.queue_size)
        self._workers = [asyncio.create_task(self._work(), name=f"routelab-shadow-{i}")
                         for i in range(self.settings.workers)]

    async def shutdown(self) -> None:
        """Stop the workers; samples still queued are dropped and counted (``stopped``)."""
        q, self._queue = self._queue, None
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if q is not None and q.qsize():
            self._drop("stopped", q.qsize())

    def idle(self) -> bool:
        """Whether nothing is queued or being asked/graded (tests and benches wait for this)."""
        return self._in_flight == 0 and (self._queue is None or self._queue.empty())

    async def _work(self) -> None:
        assert self._queue is not None
        q = self._queue
        while True:
            sample = await q.get()
            self._in_flight += 1
            try:
                await self._shadow(sample)
            except Exception:  # noqa: BLE001 - one bad sample must not stop the worker
                self.counts[("errors",)] += 1
                log.exception("shadow sample %s failed", sample.request_id)
            finally:
                self._reserved = max(0.0, self._reserved - sample.estimate_usd)
                self._in_flight -= 1
                q.task_done()

    # ------------------------------------------------------------------ the shadow call
    async def _shadow(self, s: _Sample) -> None:
        st, ref = self.st, self.reference
        if st.is_open(ref, time.monotonic()):
            self._drop("reference_down")
            return
        t0 = time.perf_counter()
        status, text, error, cost = 502, None, "", None
        body = {"model": ref, "messages": s.messages}
        try:
            resp, _ = await st.upstreams.call(ref, body, 1 + st.config.upstreams[ref].retries, False,
                                              time.monotonic() + self.settings.timeout_s)
            status = resp.status
            if status == 200:
                text = answer_text(resp.parsed)
                tokens = valid_usage(resp.parsed.get("usage"))
                cost = None if tokens is None else self._price(ref, tokens)
                if text is None:
                    status, error = 502, "answer without message text"
            else:
                error = f"http {status}"
        except UpstreamFailed as exc:
            status, error = (504 if exc.kind == "deadline" else 502), st.scrub(exc.kind)
        latency = time.perf_counter() - t0
        if cost:
            self._roll_day()
            self._spent_today += cost
            self.counts[("spend_usd",)] += cost
        self.counts[("pairs", "answered" if status == 200 else "failed")] += 1
        facts = dict(
            request_id=s.request_id, time=time.time(), route=s.route, answered_by=s.answered_by, reference=ref,
            reference_status=status, reference_latency_s=latency, category=s.category,
            answer_cost_usd=s.answer_cost_usd, reference_cost_usd=cost, reference_error=error,
            expected=None if s.expected is None else st.scrub(s.expected)[: self.settings.text_cap],
        )
        texts = dict(prompt_text=st.scrub(s.prompt), answer_text=st.scrub(s.answer_text),
                     reference_text=None if text is None else st.scrub(text))
        stored = texts if self.settings.store_text else {}
        self._write(ShadowPair.build(cap=self.settings.text_cap, **stored, **facts))
        if self.settings.grade_online and text is not None:
            # Graded on the whole texts: a judge (the replay judge above all) must see the answers as they were.
            await self._grade(s, ShadowPair.build(cap=_NO_CAP, **texts, **facts))

    # ------------------------------------------------------------------ online grading
    async def _grade(self, s: _Sample, pair: ShadowPair) -> None:
        judge_name = self.settings.judge
        assert judge_name is not None  # parse() requires it with grade_online

        async def judge(messages: list[dict[str, str]]) -> str:
            body = {"model": judge_name, "messages": messages, "temperature": 0}
            attempts = 1 + self.st.config.upstreams[judge_name].retries
            resp, _ = await self.st.upstreams.call(judge_name, body, attempts, False,
                                                   time.monotonic() + self.settings.timeout_s)
            text = answer_text(resp.parsed) if resp.status == 200 else None
            if text is None:
                raise UpstreamFailed(judge_name, f"judge answered HTTP {resp.status} without a verdict text",
                                     f"http_{resp.status}")
            return text

        try:
            grade = await agrade_pair(pair, judge=judge, judge_model=judge_name,
                                      exact_grader=self.settings.exact_grader, online=True)
        except UpstreamFailed as exc:
            self.counts[("grade_failures", "judge_failed")] += 1
            log.warning("shadow grade of %s: the judge failed (%s)", s.request_id, self.st.scrub(exc.why))
            return
        if grade is None:
            self.counts[("grade_failures", "unparsable")] += 1
            return
        self.counts[("grades", grade.verdict)] += 1
        self._write(grade)
        await self._feed_back(s, 1.0 if grade.answer_score >= grade.reference_score else 0.0)

    async def _feed_back(self, s: _Sample, score: float) -> None:
        """The verdict as the answering model's score in the request's category (adaptive exports only)."""
        exported = self.st.exported
        if not exported.adaptive or s.answered_by not in exported.models:
            return
        sink = getattr(self.st, "feedback_sink", None)
        if sink is not None:  # shared state: every replica counts it
            await sink(s.category, s.answered_by, score)
        else:
            exported.state.feedback(s.category, s.answered_by, score)
        self.counts[("feedback", s.answered_by, f"{score:g}")] += 1

    # ------------------------------------------------------------------ bookkeeping
    def _write(self, record: Any) -> None:
        writer = getattr(self.st, "decision_log", None)
        kind = record.kind
        if writer is None or not writer.write(record):
            self.counts[("unwritten", kind)] += 1

    def _drop(self, reason: str, n: int = 1) -> None:
        self.counts[("dropped", reason)] += n

    def _roll_day(self) -> None:
        day = _utc_day()
        if day != self._day:
            self._day, self._spent_today = day, 0.0

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` section: reference, rate, queue, spend today against the cap, and the counters."""
        self._roll_day()
        c = self.counts
        return {
            "reference": self.reference,
            "rate": self.settings.rate,
            "grade_online": self.settings.grade_online,
            "queued": 0 if self._queue is None else self._queue.qsize(),
            "in_flight": self._in_flight,
            "spent_today_usd": round(self._spent_today, 8),
            "daily_spend_usd": self.settings.daily_spend_usd,
            "sampled": int(c[("sampled",)]),
            "dropped": {r: int(c[("dropped", r)]) for r in DROP_REASONS},
            "pairs": {k: int(c[("pairs", k)]) for k in ("answered", "failed")},
            "grades": {v: int(c[("grades", v)]) for v in ("win", "tie", "loss")},
            "grade_failures": {k[1]: int(v) for k, v in c.items() if k[0] == "grade_failures"},
        }

    def metrics_text(self) -> str:
        """The ``routelab_shadow_*`` series (Prometheus text)."""
        self._roll_day()
        c = dict(self.counts)
        out = [
            "# HELP routelab_shadow_sampled_total Requests sampled for a shadow call to the reference model.",
            "# TYPE routelab_shadow_sampled_total counter",
            f"routelab_shadow_sampled_total {c.get(('sampled',), 0):g}",
            "# HELP routelab_shadow_dropped_total Samples dropped, per reason (" + ", ".join(DROP_REASONS) + ").",
            "# TYPE routelab_shadow_dropped_total counter",
        ]
        out += [f'routelab_shadow_dropped_total{{reason="{r}"}} {c.get(("dropped", r), 0):g}' for r in DROP_REASONS]
        out += ["# HELP routelab_shadow_pairs_total Shadow pairs made, by whether the reference answered.",
                "# TYPE routelab_shadow_pairs_total counter"]
        out += [f'routelab_shadow_pairs_total{{reference="{k}"}} {c.get(("pairs", k), 0):g}'
                for k in ("answered", "failed")]
        out += ["# HELP routelab_shadow_spend_usd_total Dollars spent on reference calls.",
                "# TYPE routelab_shadow_spend_usd_total counter",
                f"routelab_shadow_spend_usd_total {c.get(('spend_usd',), 0):.10g}",
                "# HELP routelab_shadow_spend_today_usd Dollars spent on reference calls this UTC day (capped).",
                "# TYPE routelab_shadow_spend_today_usd gauge",
                f"routelab_shadow_spend_today_usd {self._spent_today:.10g}",
                "# HELP routelab_shadow_queue_depth Samples waiting for their reference call.",
                "# TYPE routelab_shadow_queue_depth gauge",
                f"routelab_shadow_queue_depth {0 if self._queue is None else self._queue.qsize()}",
                "# HELP routelab_shadow_grades_total Online verdicts on shadow pairs (answer vs reference).",
                "# TYPE routelab_shadow_grades_total counter"]
        out += [f'routelab_shadow_grades_total{{verdict="{v}"}} {c.get(("grades", v), 0):g}'
                for v in ("win", "tie", "loss")]
        out += ["# HELP routelab_shadow_grade_failures_total Pairs not graded (judge_failed, unparsable).",
                "# TYPE routelab_shadow_grade_failures_total counter"]
        out += [f'routelab_shadow_grade_failures_total{{reason="{r}"}} {c.get(("grade_failures", r), 0):g}'
                for r in ("judge_failed", "unparsable")]
        out += ["# HELP routelab_shadow_feedback_total Verdicts fed back to the adaptive export (model, score).",
                "# TYPE routelab_shadow_feedback_total counter"]
        out += [f'routelab_shadow_feedback_total{{model="{k[1]}",score="{k[2]}"}} {v:g}'
                for k, v in sorted(c.items()) if k[0] == "feedback"]
        out += ["# HELP routelab_shadow_unwritten_total Shadow records not written (no decision log, or it dropped).",
                "# TYPE routelab_shadow_unwritten_total counter"]
        out += [f'routelab_shadow_unwritten_total{{kind="{k[1]}"}} {v:g}'
                for k, v in sorted(c.items()) if k[0] == "unwritten"]
        return "\n".join(out) + "\n"


def _utc_day() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())



def attach(st: ProxyState) -> None:
    """Attach shadow grading to ``st`` when ``[shadow] rate > 0`` (a finisher, a component, ``st.shadow``).

    Must be attached before the decision log: its finisher marks ``ctx.extra["shadow"]`` for the decision record.

    Raises:
        ConfigError: when the reference is not a model of the export.
    """
    settings: ShadowSettings = st.config.section("shadow")
    if not settings.enabled:
        return
    from evals.exceptions import ConfigError

    reference = settings.reference or default_reference(st)
    if reference not in st.exported.models:
        raise ConfigError(f"[shadow] reference {reference!r} is not a model of the export "
                          f"({', '.join(st.exported.models)})")
    grader = ShadowGrader(st, settings, reference, settings.seed)
    st.shadow = grader  # type: ignore[attr-defined]
    st.wants_request_messages = True
    st.finishers.append(grader.finish)
    st.components.append(grader)
    st.health_sections["shadow"] = grader.health
    st.metrics_sections.append(grader.metrics_text)


def _message_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The text of each message's content: a string, or the ``text`` of its text parts."""
    out: list[str] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return out
