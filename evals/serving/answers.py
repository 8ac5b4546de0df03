"""How the replay server writes an answer over ASGI: the recorded completion (JSON or SSE) and each injected fault.

Faults imitate what real OpenAI-compatible upstreams (and the gateways in front of them) do when they
misbehave, so that clients (``routelab collect``, the exported proxy) can be tested against every one of them.
Each kind is defined for both a non-streamed and a streamed (``"stream": true``) request:

==================== =============================================== ===============================================
kind                 non-streamed request                            streamed request
==================== =============================================== ===============================================
``429``              429 rate-limit error with ``Retry-After``        the same (before any stream starts)
``500``              500 server error                                 the same
``timeout``          holds the request ``hang_s`` s, then 504         the same
``malformed``        200 ``application/json``, truncated JSON         the same (a JSON 200, not a stream)
``drop``             200 promising 4 KB, 17 bytes, connection closed  the same
``not_json``         200 ``text/html`` gateway error page             the same
``no_choices``       200 JSON object without ``choices``              the same (a JSON 200, not a stream)
``drop_before_body`` 200 headers, connection closed before any byte   200 ``text/event-stream`` headers, then closed
``drop_mid_stream``  200, half of the completion, connection closed   the first events, then closed (no ``[DONE]``)
``end_without_done`` 200 with an empty body                           the first events, then a clean end, no
                                                                      ``[DONE]``
``usage_negative``   valid completion, ``usage`` tokens negative      valid stream, final usage chunk negative
``usage_huge``       valid completion, ``usage`` tokens ``1e400``     valid stream, final usage chunk ``1e400``
                     (a JSON number that overflows to infinity)
``slow_body``        valid completion trickled over ``hang_s`` s      valid stream, events spread over ``hang_s`` s
==================== =============================================== ===============================================

The two bad-usage kinds send their usage chunk even when the request did not ask for it, so the fault is visible.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evals.serving.wire import DONE_EVENT, chunk_event, completion_of, error_body

__all__ = [
    "CANNED_PREFIX",
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "UNKNOWN_PROMPT_MODES",
    "Reply",
    "send_answer",
    "send_fault",
    "send_json",
]

#: Faults the server can inject (see the module's table).
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "timeout",
    "malformed",
    "drop",
    "not_json",
    "no_choices",
    "drop_before_body",
    "drop_mid_stream",
    "end_without_done",
    "usage_negative",
    "usage_huge",
    "slow_body",
)
#: Faults injected when none are named (the original five: the fault sequence of a seed stays what it was).
DEFAULT_FAULTS: tuple[str, ...] = ("429", "500", "timeout", "malformed", "drop")
#: What the replay server does with a prompt it has no recorded answer for: a 404, or a labelled canned answer.
UNKNOWN_PROMPT_MODES: tuple[str, ...] = ("404", "canned")
#: How a canned answer (``unknown_prompts="canned"``) starts, so no reader takes it for a model's answer.
CANNED_PREFIX = "[replay: no recorded answer for this prompt]"

# Placeholder replaced by raw JSON text: ``1e400`` is valid JSON but json.dumps cannot write it from a float.
_RAW = "__routelab_raw_usage__"
_HUGE_USAGE = '{"prompt_tokens": 1e400, "completion_tokens": 1e400, "total_tokens": 1e400}'
_NEGATIVE_USAGE = {"prompt_tokens": -100000, "completion_tokens": -100000, "total_tokens": -200000}
_GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class InjectedDrop(ConnectionAbortedError):
    """Raised inside the app to make uvicorn close the connection mid-response (an injected fault)."""


class _QuietInjectedDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for each injected dropped connection (they are intended)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDrop))


logging.getLogger("uvicorn.error").addFilter(_QuietInjectedDrops())


@dataclass(frozen=True)
class Reply:
    """The answer the server would give if nothing went wrong (faults that answer partly start from it)."""

    cid: str
    """Completion id."""
    model: str
    content: str
    """The assistant's text."""
    usage: dict[str, int]
    stream: bool
    """Whether the request asked for ``"stream": true``."""
    include_usage: bool
    """Whether a streamed request asked for the final usage chunk."""
    extra: dict[str, Any] | None = None
    """Extra top-level fields of the completion object / chunks (e.g. the canned-answer label)."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Extra response headers."""


async def send_json(send: Any, status: int, body: bytes, extra_headers: list | None = None) -> None:
    """One complete response with a JSON body and its ``content-length``."""
    await _start(send, status, body, b"application/json", extra_headers)
    await send({"type": "http.response.body", "body": body})


async def _start(send: Any, status: int, body: bytes | None, ctype: bytes, extra: Any = None) -> None:
    headers = [(b"content-type", ctype)]
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra or [])})


def _completion_bytes(reply: Reply, usage: Any) -> bytes:
    obj = completion_of(reply.cid, reply.model, reply.content, _RAW if isinstance(usage, str) else usage)
    obj.update(reply.extra or {})
    text = json.dumps(obj)
    return text.replace(f'"{_RAW}"', usage).encode() if isinstance(usage, str) else text.encode()


def _events(reply: Reply, usage: Any, force_usage: bool) -> list[bytes]:
    """The SSE events of the whole answer, ``[DONE]`` excluded."""

    def ev(delta: dict | None, finish: str | None = None, use: Any = None) -> bytes:
        raw = chunk_event(reply.cid, reply.model, delta, finish, _RAW if isinstance(use, str) else use)
        if reply.extra:  # the extra fields go into every chunk, so a client reading any chunk sees the label
            obj = json.loads(raw[6:])
            obj.update(reply.extra)
            raw = b"data: " + json.dumps(obj).encode() + b"\n\n"
        return raw.replace(f'"{_RAW}"'.encode(), use.encode()) if isinstance(use, str) else raw

    text = reply.content
    pieces = [text[i : i + 64] for i in range(0, len(text), 64)] or [""]
    events = [ev({"role": "assistant", "content": ""})] + [ev({"content": p}) for p in pieces]
    events.append(ev({}, "stop"))
    if reply.include_usage or force_usage:
        events.append(ev(None, use=usage))
    return events


async def send_answer(
    reply: Reply,
    send: Any,
    *,
    usage: Any = None,
    force_usage: bool = False,
    pace_s: float = 0.0,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """The complete answer: a completion JSON, or an SSE stream ending with ``[DONE]``.

    Args:
        usage: The ``usage`` to report instead of ``reply.usage`` (a str is written as raw JSON text).
        force_usage: Send a streamed answer's usage chunk even if the request did not ask for it.
        pace_s: Spread the body over this many seconds (a slow upstream), unless ``stopping()`` turns true.
    """
    usage = reply.usage if usage is None else usage
    if reply.stream:
        parts = _events(reply, usage, force_usage) + [DONE_EVENT]
        await _start(send, 200, None, b"text/event-stream", [(b"cache-control", b"no-cache"), *reply.headers])
    else:
        body = _completion_bytes(reply, usage)
        await _start(send, 200, body, b"application/json", reply.headers)
        n = 20 if pace_s > 0 else 1
        step = -(-len(body) // n)
        parts = [body[i : i + step] for i in range(0, len(body), step)]
    if pace_s <= 0:  # one write: a stream's events arrive together, as from a fast upstream
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
        return
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        await send({"type": "http.response.body", "body": part, "more_body": not last})
        if not last and not stopping():
            await asyncio.sleep(pace_s / len(parts))


async def send_fault(
    kind: str,
    reply: Reply,
    send: Any,
    *,
    retry_after_s: float,
    hang_s: float,
    stopping: Callable[[], bool],
) -> None:
    """Answer with the injected fault ``kind`` (one of :data:`FAULT_KINDS`; see the module's table).

    Raises:
        InjectedDrop: for the kinds that close the connection mid-response (uvicorn then drops it).
    """
    if kind == "429":
        ra = retry_after_s
        header = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
        body = error_body("Rate limit reached; retry later.", "rate_limit_error", "rate_limit_exceeded")
        await send_json(send, 429, body, [(b"retry-after", header.encode())])
    elif kind == "500":
        await send_json(send, 500, error_body("The server had an error while processing your request.", "server_error"))
    elif kind == "timeout":
        deadline = time.monotonic() + hang_s
        while time.monotonic() < deadline and not stopping():
            await asyncio.sleep(0.05)
        await send_json(send, 504, error_body("replay server: injected timeout", "server_error"))
    elif kind == "malformed":
        await send_json(send, 200, b'{"id": "chatcmpl-replay", "object": "chat.completion", "choices": [{"mess')
    elif kind == "drop":
        # Promise a body, send part of it, then fail: the server closes the connection mid-response.
        await _start(send, 200, None, b"application/json", [(b"content-length", b"4096")])
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
        raise InjectedDrop("replay server: injected dropped connection")
    elif kind == "not_json":
        await _start(send, 200, _GATEWAY_PAGE, b"text/html")
        await send({"type": "http.response.body", "body": _GATEWAY_PAGE})
    elif kind == "no_choices":
        body = json.dumps(
            {"id": reply.cid, "object": "chat.completion", "created": int(time.time()), "model": reply.model,
             "usage": reply.usage}
        ).encode()  # fmt: skip
        await send_json(send, 200, body)
    elif kind == "drop_before_body":
        if reply.stream:
            await _start(send, 200, None, b"text/event-stream", [(b"cache-control", b"no-cache")])
        else:
            await _start(send, 200, _completion_bytes(reply, reply.usage), b"application/json")
        raise InjectedDrop("replay server: injected drop before the first byte")
    elif kind in ("drop_mid_stream", "end_without_done"):
        await _partial(kind, reply, send)
    elif kind in ("usage_negative", "usage_huge"):
        await send_answer(
            reply, send, usage=_NEGATIVE_USAGE if kind == "usage_negative" else _HUGE_USAGE, force_usage=True
        )
    elif kind == "slow_body":
        await send_answer(reply, send, pace_s=hang_s, stopping=stopping)
    else:  # pragma: no cover - kinds are validated when the app is built
        raise ValueError(f"unknown fault kind {kind!r}")


async def _partial(kind: str, reply: Reply, send: Any) -> None:
    """Half of the answer, then either a dropped connection or (``end_without_done``) a clean early end."""
    if reply.stream:
        events = _events(reply, reply.usage, False)
        await _start(send, 200, None, b"text/event-stream", [(b"cache-control", b"no-cache")])
        # The role event and at least one content event: bytes a proxy may already have passed on.
        head = b"".join(events[: max(2, len(events) // 2)])
        if kind == "end_without_done":
            await send({"type": "http.response.body", "body": head, "more_body": False})
            return
        await send({"type": "http.response.body", "body": head, "more_body": True})
    else:
        body = _completion_bytes(reply, reply.usage)
        if kind == "end_without_done":
            await send_json(send, 200, b"")
            return
        await _start(send, 200, body, b"application/json")
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    raise InjectedDrop("replay server: injected drop mid-body")
