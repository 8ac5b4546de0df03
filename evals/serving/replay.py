"""A real OpenAI-compatible HTTP server that answers from an OutcomeTable's recorded responses.

It is how collection is tested without keys, how the export's proxy is tested against an upstream, and how a
newcomer sees ``routelab collect`` work end to end. It serves

- ``POST /v1/chat/completions``: the recorded ``response`` of the requested ``model`` for the prompt equal to
  the text of the last ``user`` message, with ``usage`` tokens (the table's token counts where it has them,
  else characters / 4), optional added latency, SSE streaming when ``"stream": true``;
- ``GET /v1/models``: the table's models;
- ``GET /_stats``: request counts per (model, sample), so tests can assert that nothing was asked twice.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): an unknown model is a 404
``model_not_found``; an unknown prompt a 404 naming the model and the start of the prompt.

**Faults** are injected at ``fault_rate`` to exercise clients: ``429`` (with ``Retry-After``), ``500``,
``timeout`` (the server holds the request for ``hang_s`` seconds, past any sane client timeout), ``malformed``
(a 200 whose body is truncated JSON) and ``drop`` (the connection closes mid-body). Whether the n-th request
for a given (model, prompt) faults, and how, is a deterministic function of ``seed``, the model, the prompt
and n, so a run is reproducible however concurrent requests interleave.

Example:
    >>> with ReplayServer(table, latency_ms=0, fault_rate=0.0, seed=0) as srv:   # doctest: +SKIP
    ...     httpx.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": [...]})
    ...     srv.stats()["ok"]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.serving.background import BackgroundServer

__all__ = ["FAULT_KINDS", "ReplayServer", "build_replay_app"]

#: Faults the server can inject.
FAULT_KINDS: tuple[str, ...] = ("429", "500", "timeout", "malformed", "drop")


class _InjectedDrop(ConnectionAbortedError):
    """Raised inside the app to make uvicorn close the connection mid-response (an injected fault)."""


class _QuietInjectedDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for each injected dropped connection (they are intended)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _InjectedDrop))


logging.getLogger("uvicorn.error").addFilter(_QuietInjectedDrops())


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


def prompt_of(messages: Any) -> str | None:
    """Text of the last user message of an OpenAI chat request (string content, or the text parts of a content list)."""
    if not isinstance(messages, list):
        return None
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
            return None
    return None


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> tuple:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return status, json.dumps(body).encode()


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
        self.stopping = False
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], _KeyStats] = defaultdict(_KeyStats)
        self._totals = {"requests": 0, "ok": 0, "faults": defaultdict(int), "errors": 0}

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """A snapshot: totals and per-(model, sample_id) counts (``requests``, ``ok``, ``faults``)."""
        with self._lock:
            return {
                "requests": self._totals["requests"],
                "ok": self._totals["ok"],
                "errors": self._totals["errors"],
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
            self._totals = {"requests": 0, "ok": 0, "faults": defaultdict(int), "errors": 0}

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
            await _send(send, 200, json.dumps({"object": "list", "data": data}).encode())
        elif path == "/_stats" and method == "GET":
            await _send(send, 200, json.dumps(self.stats()).encode())
        else:
            await _send(
                send, *_error(404, f"no route {method} {scope['path']}", "invalid_request_error", "not_found")
            )

    async def _chat(self, scope: dict, body: bytes, send: Any) -> None:
        if self.api_key is not None:
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {self.api_key}":
                self._count_error()
                await _send(
                    send,
                    *_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
                )
                return
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            self._count_error()
            await _send(
                send, *_error(400, f"request body is not valid JSON ({exc})", "invalid_request_error")
            )
            return
        model, prompt = req.get("model"), prompt_of(req.get("messages"))
        if not isinstance(model, str) or prompt is None:
            self._count_error()
            await _send(
                send,
                *_error(
                    400,
                    "'model' (string) and 'messages' with a user turn are required",
                    "invalid_request_error",
                    param="messages" if isinstance(model, str) else "model",
                ),
            )
            return
        if model not in self.records:
            self._count_error()
            await _send(
                send,
                *_error(
                    404,
                    f"The model {model!r} does not exist; this replay server has: {', '.join(self.models)}",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                ),
            )
            return
        rec = self.records[model].get(prompt)
        if rec is None:
            self._count_error()
            head = prompt[:80].replace("\n", " ")
            await _send(
                send,
                *_error(
                    404,
                    f"no recorded answer of model {model!r} for this prompt "
                    f"({len(prompt)} chars, starting {head!r})",
                    "invalid_request_error",
                    "prompt_not_found",
                    "messages",
                ),
            )
            return
        with self._lock:
            st = self._stats[(model, rec.sample_id)]
            n = st.requests
            st.requests += 1
            self._totals["requests"] += 1
            fault = self._fault_for(model, prompt, n)
            if fault:
                st.faults[fault] = st.faults.get(fault, 0) + 1
                self._totals["faults"][fault] += 1
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault:
            await self._fault(fault, send)
            return
        if req.get("stream"):
            await self._stream(model, rec, req, send)
        else:
            await _send(send, 200, json.dumps(_completion(model, rec)).encode())
        with self._lock:
            st.ok += 1
            self._totals["ok"] += 1

    def _count_error(self) -> None:
        with self._lock:
            self._totals["errors"] += 1

    async def _fault(self, kind: str, send: Any) -> None:
        if kind == "429":
            ra = self.retry_after_s
            header = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
            await _send(
                send,
                *_error(429, "Rate limit reached; retry later.", "rate_limit_error", "rate_limit_exceeded"),
                extra_headers=[(b"retry-after", header.encode())],
            )
        elif kind == "500":
            await _send(
                send, *_error(500, "The server had an error while processing your request.", "server_error")
            )
        elif kind == "timeout":
            deadline = time.monotonic() + self.hang_s
            while time.monotonic() < deadline and not self.stopping:
                await asyncio.sleep(0.05)
            await _send(send, *_error(504, "replay server: injected timeout", "server_error"))
        elif kind == "malformed":
            await _send(
                send, 200, b'{"id": "chatcmpl-replay", "object": "chat.completion", "choices": [{"mess'
            )
        elif kind == "drop":
            # Promise a body, send part of it, then fail: the server closes the connection mid-response.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
            raise _InjectedDrop("replay server: injected dropped connection")

    async def _stream(self, model: str, rec: _Record, req: dict, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        cid, created = f"chatcmpl-replay-{rec.sample_id}", int(time.time())

        def event(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage:
                chunk["usage"] = usage
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        text = rec.response
        pieces = [text[i : i + 64] for i in range(0, len(text), 64)] or [""]
        await send(
            {
                "type": "http.response.body",
                "body": event({"role": "assistant", "content": ""}),
                "more_body": True,
            }
        )
        for piece in pieces:
            await send({"type": "http.response.body", "body": event({"content": piece}), "more_body": True})
        tail = event({}, "stop")
        if (req.get("stream_options") or {}).get("include_usage"):
            tail += event({}, usage=_usage(rec))
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})


def _usage(rec: _Record) -> dict[str, int]:
    return {
        "prompt_tokens": rec.input_tokens,
        "completion_tokens": rec.output_tokens,
        "total_tokens": rec.input_tokens + rec.output_tokens,
    }


def _completion(model: str, rec: _Record) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-replay-{rec.sample_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": rec.response}, "finish_reason": "stop"}
        ],
        "usage": _usage(rec),
    }


async def _send(send: Any, status: int, body: bytes, extra_headers: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


def build_replay_app(
    table: OutcomeTable,
    *,
    latency_ms: float = 0.0,
    fault_rate: float = 0.0,
    faults: Sequence[str] = FAULT_KINDS,
    seed: int = 0,
    retry_after_s: float = 1.0,
    hang_s: float = 30.0,
    api_key: str | None = None,
) -> _ReplayApp:
    """The replay ASGI app without a server (e.g. for ``httpx.ASGITransport``); see :class:`ReplayServer`."""
    if not 0.0 <= fault_rate <= 1.0:
        raise ConfigError(f"fault_rate must be in [0, 1], got {fault_rate!r}")
    unknown = [f for f in faults if f not in FAULT_KINDS]
    if unknown:
        raise ConfigError(f"unknown fault kind(s) {unknown}; valid: {', '.join(FAULT_KINDS)}")
    if latency_ms < 0:
        raise ConfigError(f"latency_ms must be >= 0, got {latency_ms!r}")
    return _ReplayApp(
        table,
        latency_ms=latency_ms,
        fault_rate=fault_rate,
        faults=faults,
        seed=seed,
        retry_after_s=retry_after_s,
        hang_s=hang_s,
        api_key=api_key,
    )


class ReplayServer(BackgroundServer):
    """Run the replay app with uvicorn on loopback, in a background thread.

    Args:
        table: The outcomes to replay (``model``, ``prompt``, ``response``, token columns).
        host: Interface to bind; loopback by default.
        port: Port to bind; 0 (default) picks a free one.
        latency_ms: Added delay before every answer.
        fault_rate: Share of requests that get an injected fault, in [0, 1].
        faults: Which fault kinds to draw from (default all of :data:`FAULT_KINDS`).
        seed: Seed of the fault sequence.
        retry_after_s: ``Retry-After`` seconds sent with an injected 429.
        hang_s: How long an injected ``timeout`` holds the request.
        api_key: If set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).

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
        faults: Sequence[str] = FAULT_KINDS,
        seed: int = 0,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        api_key: str | None = None,
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
