"""A real OpenAI-compatible HTTP server that answers from an OutcomeTable's recorded responses.

It is how collection is tested without keys, how the export's proxy is tested against an upstream, and how a
newcomer sees ``routelab collect`` work end to end. It serves

- ``POST /v1/chat/completions``: the recorded ``response`` of the requested ``model`` for the prompt equal to
  the text of the last ``user`` message, with ``usage`` tokens (the table's token counts where it has them,
  else characters / 4), optional added latency, SSE streaming when ``"stream": true``;
- ``GET /v1/models``: the table's models;
- ``GET /_stats``: request counts per (model, sample), so tests can assert that nothing was asked twice;
- a **judge**: a pairwise judge prompt (``evals.graders.judge.JudgePairwise``'s) sent to the judge model name
  (``replay-judge`` by default) is answered ``[[A]]``/``[[B]]``/``[[C]]`` from the recorded scores of the two
  answers (:mod:`evals.serving.replay_judge`), so online and offline grading have known verdicts;
- a **drift switch**: ``POST /_drift {"model", "category", "at"?, "until"?}`` makes that model's answers to
  that category's prompts wrong from ``at`` (Unix seconds, default now) on, ``DELETE /_drift`` (optionally
  ``{"model", "category"}``) ends it, ``GET /_drift`` lists drifts (:mod:`evals.serving.drift`).

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): an unknown model is a 404
``model_not_found``; an unknown prompt a 404 naming the model and the start of the prompt, unless the server
runs with ``unknown_prompts="canned"`` (the keyless demo: any prompt works), in which case it answers with a
clearly labelled placeholder: the content starts with :data:`CANNED_PREFIX`, the completion (and every chunk)
carries ``"replay_canned": true`` and the response the header ``x-replay-canned: true``.

**Faults** are injected at ``fault_rate`` to exercise clients; the kinds (429, 500, timeouts, truncated or
non-JSON 200s, 200s without ``choices``, connections dropped before or during a body or stream, streams that end
without ``[DONE]``, negative or overflowing ``usage``, slow bodies) are listed in :mod:`evals.serving.answers`.
Whether the n-th request for a given (model, prompt) faults, and how, is a deterministic function of ``seed``,
the model, the prompt and n, so a run is reproducible however concurrent requests interleave.

Example:
    >>> with ReplayServer(table, latency_ms=0, fault_rate=0.0, seed=0) as srv:   # doctest: +SKIP
    ...     httpx.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": [...]})
    ...     srv.stats()["ok"]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.serving.answers import (
    CANNED_PREFIX,
    DEFAULT_FAULTS,
    FAULT_KINDS,
    UNKNOWN_PROMPT_MODES,
    Reply,
    send_answer,
    send_fault,
    send_json,
)
from evals.serving.background import BackgroundServer
from evals.serving.drift import DRIFT_PREFIX, DriftSwitch
from evals.serving.replay_judge import DEFAULT_JUDGE_MODEL, parse_pairwise_request, replay_verdict
from evals.serving.wire import error_body, prompt_of, usage_of

__all__ = [
    "CANNED_PREFIX",
    "DEFAULT_FAULTS",
    "DEFAULT_JUDGE_MODEL",
    "DRIFT_PREFIX",
    "FAULT_KINDS",
    "UNKNOWN_PROMPT_MODES",
    "ReplayServer",
    "build_replay_app",
]

@dataclass
class _Record:
    sample_id: str
    response: str
    input_tokens: int
    output_tokens: int
    score: float = math.nan


@dataclass
class _KeyStats:
    requests: int = 0
    ok: int = 0
    faults: dict[str, int] = field(default_factory=dict)


def _tokens(value: float, text: str) -> int:
    if value is not None and math.isfinite(value):
        return int(round(value))
    return max(1, math.ceil(len(text) / 4))


class _ReplayApp:
    """The ASGI application (usable directly with ``httpx.ASGITransport``)."""

    def __init__(
        self,
        table: OutcomeTable,
        *,
        latency_ms: float,
        fault_rate: float,
        faults: Sequence[str],
        seed: int,
        retry_after_s: float,
        hang_s: float,
        api_key: str | None,
        unknown_prompts: str,
        judge_model: str = DEFAULT_JUDGE_MODEL,
    ) -> None:
        self.records: dict[str, dict[str, _Record]] = defaultdict(dict)
        f = table.frame
        # The judge's knowledge: per prompt, every recorded answer's score (and the prompt's category, for drift).
        self.known: dict[str, dict[str, float]] = defaultdict(dict)
        self.category_of: dict[str, str] = {}
        for sid, model, prompt, resp, itok, otok, score, cat in zip(
            f["sample_id"],
            f["model"],
            f["prompt"],
            f["response"],
            f["input_tokens"],
            f["output_tokens"],
            f["score"],
            f["category"],
            strict=True,
        ):
            # The first row wins when two samples share a prompt: a client cannot tell them apart either.
            rec = self.records[model].setdefault(
                prompt, _Record(sid, resp, _tokens(itok, prompt), _tokens(otok, resp), float(score))
            )
            self.known[prompt].setdefault(rec.response, rec.score)
            self.category_of.setdefault(prompt, str(cat))
        self.models = list(self.records)
        self.judge_model = judge_model
        self.drift = DriftSwitch(self.models, list(self.category_of.values()))
        self.latency_s = latency_ms / 1000.0
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.seed = seed
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.api_key = api_key
        self.unknown_prompts = unknown_prompts
        self.stopping = False
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], _KeyStats] = defaultdict(_KeyStats)
        self._totals = self._zero_totals()

    @staticmethod
    def _zero_totals() -> dict[str, Any]:
        return {"requests": 0, "ok": 0, "faults": defaultdict(int), "errors": 0, "canned": 0, "drifted": 0,
                "judged": 0}

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """A snapshot: totals and per-(model, sample_id) counts (``requests``, ``ok``, ``faults``).

        ``canned`` counts the requests answered with a canned placeholder (their ``sample_id`` in ``by_key`` is
        ``canned:`` and a hash of the prompt); ``drifted`` the answers a drift made wrong; ``judged`` the judge
        requests answered.
        """
        with self._lock:
            return {
                "requests": self._totals["requests"],
                "ok": self._totals["ok"],
                "errors": self._totals["errors"],
                "canned": self._totals["canned"],
                "drifted": self._totals["drifted"],
                "judged": self._totals["judged"],
                "faults": dict(self._totals["faults"]),
                "by_key": [
                    {"model": m, "sample_id": s, "requests": v.requests, "ok": v.ok, "faults": dict(v.faults)}
                    for (m, s), v in self._stats.items()
                ],
            }

    def reset_stats(self) -> None:
        """Forget all counts (the fault sequence restarts too)."""
        with self._lock:
            self._stats.clear()
            self._totals = self._zero_totals()

    def _fault_for(self, model: str, prompt: str, n: int) -> str | None:
        if self.fault_rate <= 0 or not self.faults:
            return None
        digest = hashlib.sha256(f"{self.seed}\x00{model}\x00{prompt}\x00{n}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u >= self.fault_rate:
            return None
        return self.faults[digest[8] % len(self.faults)]

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # pragma: no cover - lifespan is off in ReplayServer
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/v1/chat/completions" and method == "POST":
            await self._chat(scope, await _read_all(receive), send)
        elif path == "/v1/models" and method == "GET":
            # The judge model is not listed: /v1/models names the table's models (what a collection can ask).
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "routelab-replay"} for m in self.models
            ]
            await send_json(send, 200, json.dumps({"object": "list", "data": data}).encode())
        elif path == "/_stats" and method == "GET":
            await send_json(send, 200, json.dumps(self.stats()).encode())
        elif path == "/_drift" and method in ("GET", "POST", "DELETE"):
            await self._drift_admin(method, await _read_all(receive), send)
        else:
            await send_json(
                send, 404, error_body(f"no route {method} {scope['path']}", "invalid_request_error", "not_found")
            )

    async def _refuse(self, send: Any, status: int, body: bytes) -> None:
        with self._lock:
            self._totals["errors"] += 1
        await send_json(send, status, body)

    async def _chat(self, scope: dict, body: bytes, send: Any) -> None:
        if self.api_key is not None:
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {self.api_key}":
                return await self._refuse(
                    send, 401, error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                )
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            return await self._refuse(
                send, 400, error_body(f"request body is not valid JSON ({exc})", "invalid_request_error")
            )
        model, prompt = req.get("model"), prompt_of(req.get("messages"))
        if not isinstance(model, str) or prompt is None:
            msg = "'model' (string) and 'messages' with a user turn are required"
            param = "messages" if isinstance(model, str) else "model"
            return await self._refuse(send, 400, error_body(msg, "invalid_request_error", param=param))
        if model == self.judge_model and model not in self.records:
            return await self._judge(req, prompt, send)
        if model not in self.records:
            msg = f"The model {model!r} does not exist; this replay server has: {', '.join(self.models)}"
            return await self._refuse(send, 404, error_body(msg, "invalid_request_error", "model_not_found", "model"))
        rec = self.records[model].get(prompt)
        canned = rec is None
        if canned:
            if self.unknown_prompts != "canned":
                head = prompt[:80].replace("\n", " ")
                msg = (
                    f"no recorded answer of model {model!r} for this prompt ({len(prompt)} chars, starting {head!r}); "
                    "start the replay server with --unknown-prompts canned to get a labelled placeholder instead"
                )
                return await self._refuse(
                    send, 404, error_body(msg, "invalid_request_error", "prompt_not_found", "messages")
                )
            rec = self._canned(model, prompt)
        drifted = not canned and self.drift.active(model, self.category_of.get(prompt, ""))
        if drifted:
            rec = self._wrong(model, prompt, rec)
        with self._lock:
            st = self._stats[(model, rec.sample_id)]
            n = st.requests
            st.requests += 1
            self._totals["requests"] += 1
            self._totals["canned"] += canned
            self._totals["drifted"] += drifted
            fault = self._fault_for(model, prompt, n)
            if fault:
                st.faults[fault] = st.faults.get(fault, 0) + 1
                self._totals["faults"][fault] += 1
        reply = Reply(
            cid=f"chatcmpl-replay-{rec.sample_id}",
            model=model,
            content=rec.response,
            usage=usage_of(rec.input_tokens, rec.output_tokens),
            stream=bool(req.get("stream")),
            include_usage=bool((req.get("stream_options") or {}).get("include_usage")),
            extra={"replay_canned": True} if canned else None,
            headers=((b"x-replay-canned", b"true"),) if canned else (),
        )
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault:
            await send_fault(
                fault,
                reply,
                send,
                retry_after_s=self.retry_after_s,
                hang_s=self.hang_s,
                stopping=lambda: self.stopping,
            )
            return
        await send_answer(reply, send)
        with self._lock:
            st.ok += 1
            self._totals["ok"] += 1

    def _wrong(self, model: str, prompt: str, rec: _Record) -> _Record:
        """``model``'s answer under a drift: the lowest-scored other recorded answer to ``prompt`` when it is
        worse than the model's own, else a labelled wrong answer the judge knows as score 0."""
        worst = min(
            (r for m, by_prompt in self.records.items() if m != model and (r := by_prompt.get(prompt)) is not None),
            key=lambda r: r.score,
            default=None,
        )
        if worst is not None and worst.score < rec.score:
            return _Record(rec.sample_id, worst.response, rec.input_tokens, worst.output_tokens, worst.score)
        text = f"{DRIFT_PREFIX} {model} no longer answers this {self.category_of.get(prompt, '')} question well."
        with self._lock:
            self.known[prompt][text] = 0.0
        return _Record(rec.sample_id, text, rec.input_tokens, _tokens(float("nan"), text), 0.0)

    async def _judge(self, req: dict, user_text: str, send: Any) -> None:
        """Answer a pairwise judge prompt from the recorded scores of its two answers (see the module doc)."""
        pair = parse_pairwise_request(user_text)
        if pair is None:
            msg = (
                f"{self.judge_model!r} is this replay server's pairwise judge: it answers only the prompt of "
                "evals.graders.judge.JudgePairwise (a question and answers A and B in fenced tags)"
            )
            return await self._refuse(send, 400, error_body(msg, "invalid_request_error", param="messages"))
        with self._lock:
            known = dict(self.known.get(pair.question, {}))
            self._totals["judged"] += 1
        text = replay_verdict(known.get(pair.answer_a), known.get(pair.answer_b))
        digest = hashlib.sha256(user_text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        reply = Reply(
            cid=f"chatcmpl-replay-judge-{digest}",
            model=self.judge_model,
            content=text,
            usage=usage_of(_tokens(float("nan"), user_text), _tokens(float("nan"), text)),
            stream=bool(req.get("stream")),
            include_usage=bool((req.get("stream_options") or {}).get("include_usage")),
        )
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        await send_answer(reply, send)

    async def _drift_admin(self, method: str, body: bytes, send: Any) -> None:
        """``GET``/``POST``/``DELETE /_drift``: list, start or stop drifts (see the module docstring)."""
        try:
            spec = json.loads(body) if body.strip() else {}
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            if method == "POST":
                for key in ("model", "category"):
                    if not isinstance(spec.get(key), str):
                        raise ValueError(f"'{key}' (a string) is required")
                self.drift.start(spec["model"], spec["category"], spec.get("at"), spec.get("until"))
            elif method == "DELETE":
                self.drift.stop(spec.get("model"), spec.get("category"), spec.get("at"))
        except (ValueError, TypeError, ConfigError) as exc:
            msg = f"/_drift: {exc}" + ("" if isinstance(exc, ConfigError) else
                                       ' (POST {"model": str, "category": str, "at"?: unix s, "until"?: unix s})')
            return await send_json(send, 400, error_body(msg, "invalid_request_error"))
        await send_json(send, 200, json.dumps({"drifts": self.drift.listing()}).encode())

    def _canned(self, model: str, prompt: str) -> _Record:
        """The labelled placeholder answer of ``model`` to a prompt it has no recorded answer for."""
        text = (
            f"{CANNED_PREFIX} This replay server has recorded answers of {model} for "
            f"{len(self.records[model])} prompts and this is not one of them, so this placeholder stands in "
            "for the model's answer."
        )
        key = "canned:" + hashlib.sha256(prompt.encode()).hexdigest()[:12]
        return _Record(key, text, _tokens(float("nan"), prompt), _tokens(float("nan"), text))


async def _read_all(receive: Any) -> bytes:
    """The whole request body of an ASGI http request."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


def build_replay_app(
    table: OutcomeTable,
    *,
    latency_ms: float = 0.0,
    fault_rate: float = 0.0,
    faults: Sequence[str] = DEFAULT_FAULTS,
    seed: int = 0,
    retry_after_s: float = 1.0,
    hang_s: float = 30.0,
    api_key: str | None = None,
    unknown_prompts: str = "404",
    judge_model: str = DEFAULT_JUDGE_MODEL,
) -> _ReplayApp:
    """The replay ASGI app without a server (e.g. for ``httpx.ASGITransport``); see :class:`ReplayServer`."""
    if not 0.0 <= fault_rate <= 1.0:
        raise ConfigError(f"fault_rate must be in [0, 1], got {fault_rate!r}")
    unknown = [f for f in faults if f not in FAULT_KINDS]
    if unknown:
        raise ConfigError(f"unknown fault kind(s) {unknown}; valid: {', '.join(FAULT_KINDS)}")
    if latency_ms < 0:
        raise ConfigError(f"latency_ms must be >= 0, got {latency_ms!r}")
    if not (math.isfinite(hang_s) and hang_s >= 0):
        raise ConfigError(f"hang_s must be a number of seconds >= 0, got {hang_s!r}")
    if unknown_prompts not in UNKNOWN_PROMPT_MODES:
        raise ConfigError(f"unknown_prompts must be one of {', '.join(UNKNOWN_PROMPT_MODES)}, got {unknown_prompts!r}")
    return _ReplayApp(
        table,
        latency_ms=latency_ms,
        fault_rate=fault_rate,
        faults=faults,
        seed=seed,
        retry_after_s=retry_after_s,
        hang_s=hang_s,
        api_key=api_key,
        unknown_prompts=unknown_prompts,
        judge_model=judge_model,
    )


class ReplayServer(BackgroundServer):
    """Run the replay app with uvicorn on loopback, in a background thread.

    Args:
        table: The outcomes to replay (``model``, ``prompt``, ``response``, token columns).
        host: Interface to bind; loopback by default.
        port: Port to bind; 0 (default) picks a free one.
        latency_ms: Added delay before every answer.
        fault_rate: Share of requests that get an injected fault, in [0, 1].
        faults: Which fault kinds to draw from (default :data:`DEFAULT_FAULTS`; all are in :data:`FAULT_KINDS`).
        seed: Seed of the fault sequence.
        retry_after_s: ``Retry-After`` seconds sent with an injected 429.
        hang_s: How long an injected ``timeout`` holds the request (and a ``slow_body`` takes).
        api_key: If set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
        unknown_prompts: ``"404"`` (default) or ``"canned"``: answer prompts without a recorded answer with a
            labelled placeholder (content starting with :data:`CANNED_PREFIX`).
        judge_model: The model name answered as a pairwise judge (:mod:`evals.serving.replay_judge`).

    Example:
        >>> with ReplayServer(table) as srv:   # doctest: +SKIP
        ...     print(srv.base_url)            # http://127.0.0.1:PORT/v1
    """

    def __init__(
        self,
        table: OutcomeTable,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        fault_rate: float = 0.0,
        faults: Sequence[str] = DEFAULT_FAULTS,
        seed: int = 0,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        api_key: str | None = None,
        unknown_prompts: str = "404",
        judge_model: str = DEFAULT_JUDGE_MODEL,
    ) -> None:
        self.app = build_replay_app(
            table,
            latency_ms=latency_ms,
            fault_rate=fault_rate,
            faults=faults,
            seed=seed,
            retry_after_s=retry_after_s,
            hang_s=hang_s,
            api_key=api_key,
            unknown_prompts=unknown_prompts,
            judge_model=judge_model,
        )
        super().__init__(self.app, host=host, port=port, lifespan="off", name="replay server")

    def stats(self) -> dict[str, Any]:
        """Request counts: totals and per (model, sample_id); see :meth:`_ReplayApp.stats`."""
        return self.app.stats()

    def requests(self, model: str, sample_id: str) -> int:
        """How many requests (faulted or not) the server got for this (model, sample)."""
        with self.app._lock:
            st = self.app._stats.get((model, str(sample_id)))
            return st.requests if st else 0

    def reset_stats(self) -> None:
        """Forget all counts."""
        self.app.reset_stats()

    def start_drift(self, model: str, category: str, at: float | None = None, until: float | None = None) -> None:
        """Make ``model``'s answers to ``category`` wrong from ``at`` (Unix s, default now); see ``POST /_drift``."""
        self.app.drift.start(model, category, at, until)

    def stop_drift(self, model: str | None = None, category: str | None = None) -> int:
        """End the matching drifts now (None = any); how many ended. See ``DELETE /_drift``."""
        return self.app.drift.stop(model, category)
