"""A real OpenAI-compatible HTTP server that answers from an OutcomeTable's recorded responses.

It is how collection is tested without keys, how the export's proxy is tested against an upstream, and how a
newcomer sees ``routelab collect`` work end to end. It serves

- ``POST /v1/chat/completions``: the recorded ``response`` of the requested ``model`` for the prompt equal to
  the text of the last ``user`` message, with ``usage`` tokens (the table's token counts where it has them,
  else characters / 4), optional added latency, SSE streaming when ``"stream": true``;
- ``GET /v1/models``: the table's models;
- ``GET /_stats``: request counts per (model, sample), so tests can assert that nothing was asked twice.

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
from evals.serving.wire import error_body, prompt_of, usage_of

__all__ = [
    "CANNED_PREFIX",
    "DEFAULT_FAULTS",
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
    ) -> None:
        self.records: dict[str, dict[str, _Record]] = defaultdict(dict)
        f = table.frame
        for sid, model, prompt, resp, itok, otok in zip(
            f["sample_id"],
            f["model"],
            f["prompt"],
            f["response"],
            f["input_tokens"],
            f["output_tokens"],
            strict=True,
        ):
            # The first row wins when two samples share a prompt: a client cannot tell them apart either.
            self.records[model].setdefault(
                prompt, _Record(sid, resp, _tokens(itok, prompt), _tokens(otok, resp))
            )
        self.models = list(self.records)
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
        return {"requests": 0, "ok": 0, "faults": defaultdict(int), "errors": 0, "canned": 0}

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """A snapshot: totals and per-(model, sample_id) counts (``requests``, ``ok``, ``faults``).

        ``canned`` counts the requests answered with a canned placeholder (their ``sample_id`` in ``by_key`` is
        ``canned:`` and a hash of the prompt).
        """
        with self._lock:
            return {
                "requests": self._totals["requests"],
                "ok": self._totals["ok"],
                "errors": self._totals["errors"],
                "canned": self._totals["canned"],
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
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            await self._chat(scope, body, send)
        elif path == "/v1/models" and method == "GET":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "routelab-replay"} for m in self.models
            ]
            await send_json(send, 200, json.dumps({"object": "list", "data": data}).encode())
        elif path == "/_stats" and method == "GET":
            await send_json(send, 200, json.dumps(self.stats()).encode())
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
        with self._lock:
            st = self._stats[(model, rec.sample_id)]
            n = st.requests
            st.requests += 1
            self._totals["requests"] += 1
            self._totals["canned"] += canned
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

    def _canned(self, model: str, prompt: str) -> _Record:
        """The labelled placeholder answer of ``model`` to a prompt it has no recorded answer for."""
        text = (
            f"{CANNED_PREFIX} This replay server has recorded answers of {model} for "
            f"{len(self.records[model])} prompts and this is not one of them, so this placeholder stands in "
            "for the model's answer."
        )
        key = "canned:" + hashlib.sha256(prompt.encode()).hexdigest()[:12]
        return _Record(key, text, _tokens(float("nan"), prompt), _tokens(float("nan"), text))


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
