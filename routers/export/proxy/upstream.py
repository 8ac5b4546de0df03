"""The upstream client: attempts with retries under a deadline, circuit breakers, and answers validated
before they count.

An answer counts only when it is one: a non-streamed 200 must be a JSON object with a ``choices`` list, read
no further than ``max_response_bytes``; a streamed 200 must deliver a first event that is a JSON chunk (or
the whole stream, ending with ``[DONE]``) before anything is sent to the client. Anything else (truncated or
malformed bodies, a stream dropped before its first event, a redirect, a 408/429/5xx, a timeout, a refused
connection) is a failed attempt: retried, then failed over by the caller, and counted per kind. Once a stream
has started reaching the client it cannot be retried: if it breaks, it ends with an OpenAI-style error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from routers.export.proxy.errors import UpstreamFailed, error_body
from routers.export.proxy.metrics import Metrics
from routers.export.upstreams import ProxyConfig

__all__ = ["WARN_EVERY_S", "Breaker", "Scrubber", "UpstreamClient", "Upstreamed", "valid_usage"]

log = logging.getLogger("routelab.proxy")

#: Seconds between two warnings about the same failing upstream (the failures in between are counted in the next).
WARN_EVERY_S = 10.0

_RETRYABLE_STATUS = {408, 429}  # among 4xx; every 5xx is retried too
_AUTH_FAIL_STATUS = {401, 403}
#: Timeouts this close to the request deadline count as the deadline (timer resolution and races).
_DEADLINE_SLACK_S = 0.05
_DONE = b"data: [DONE]"


@dataclass
class Breaker:
    """One upstream's circuit: skipped until ``open_until`` (monotonic seconds) after failing a request."""

    open_until: float = 0.0
    failures: int = 0


@dataclass
class Upstreamed:
    """An upstream's answer: status, content type, and either the whole body or the stream being relayed."""

    status: int
    content_type: str
    content: bytes
    stream: aiohttp.ClientResponse | None = None
    """A streamed 200 still open; ``content`` then holds the bytes read ahead (its first event, or all)."""
    retry_after: str | None = None
    parsed: Any = None
    """The decoded JSON of a non-streamed 200 (decoded once, to validate it and read its usage)."""
    attempts: int = 1
    """Attempts this upstream took to give this answer (retries included)."""


class _AttemptFailed(Exception):
    def __init__(self, why: str, kind: str) -> None:
        super().__init__(why)
        self.why, self.kind = why, kind


class Scrubber:
    """Removes secrets (upstream keys, client keys) from text and bodies before anything leaves the proxy."""

    #: Shorter secrets are not scrubbed: replacing a 3-character key would mangle every answer.
    MIN_LENGTH = 8

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= self.MIN_LENGTH}, key=len, reverse=True)
        self._bytes = [s.encode() for s in self.secrets]

    def text(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "***")
        return text

    def bytes(self, data: bytes) -> bytes:
        """:meth:`text` for bytes (a substring search per secret when nothing needs replacing)."""
        for s in self._bytes:
            if s in data:
                data = data.replace(s, b"***")
        return data


def valid_usage(usage: Any) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) of a ``usage`` object when both are non-negative finite integers."""
    if not isinstance(usage, dict):
        return None
    out = []
    for key in ("prompt_tokens", "completion_tokens"):
        v = usage.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            return None
        if v < 0 or v > 1e12:  # a trillion tokens in one answer is a broken counter, not a bill
            return None
        out.append(int(v))
    return out[0], out[1]


def _json_failure(data: bytes, exc: ValueError | RecursionError) -> _AttemptFailed:
    """A body that did not decode: truncated (it ends where the decoder wanted more) or malformed."""
    pos = getattr(exc, "pos", None)
    ends_early = pos is not None and pos >= len(data.rstrip())
    if ends_early or str(exc).startswith("Unterminated string"):
        return _AttemptFailed("answer cut off (truncated JSON)", "truncated")
    return _AttemptFailed("answer is not valid JSON", "malformed")


def _check_completion(data: bytes) -> Any:
    """The decoded non-streamed answer, when it is a JSON object with a ``choices`` list."""
    if not data.strip():
        raise _AttemptFailed("empty answer", "truncated")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _json_failure(data, exc) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        raise _AttemptFailed("answer is not a chat completion (no 'choices' list)", "malformed")
    return obj


def _check_first_event(buf: bytes) -> None:
    """Validate the first SSE event read ahead of a stream (a JSON chunk, a comment, or ``[DONE]``)."""
    event = buf.split(b"\n\n", 1)[0].replace(b"\r", b"")
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue  # comments, event names, ids, retry hints
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise _json_failure(payload, exc) from None
        if not isinstance(chunk, dict):
            raise _AttemptFailed("stream's first event is not a JSON object", "malformed")
        if "error" in chunk:
            raise _AttemptFailed("stream began with an error event", "stream_error")
        return


def _attempt_outcome(status: int) -> str | None:
    """None when an attempt's status means the upstream works (an answer, or the client's own 4xx), else its kind."""
    client_error = 400 <= status < 500 and status not in _RETRYABLE_STATUS and status not in _AUTH_FAIL_STATUS
    return None if status == 200 or client_error else f"http_{status}"


class UpstreamClient:
    """Sends requests to the upstreams of a :class:`~routers.export.upstreams.ProxyConfig`.

    Args:
        config: The parsed ``upstreams.toml``.
        upstream_keys: Per model, the key to send ("" = none).
        metrics: Where attempts and failures are counted.
        scrubber: Removes secrets from every body forwarded.
        connector: An aiohttp connector (default: pooled TCP connections, created at :meth:`startup`).
    """

    def __init__(
        self,
        config: ProxyConfig,
        upstream_keys: dict[str, str],
        metrics: Metrics,
        scrubber: Scrubber,
        connector: aiohttp.BaseConnector | None = None,
    ) -> None:
        self.config, self.upstream_keys, self.metrics, self.scrubber = config, upstream_keys, metrics, scrubber
        self.connector = connector
        self.session: aiohttp.ClientSession | None = None
        self.breakers: dict[str, Breaker] = {m: Breaker() for m in config.upstreams}
        self.attempt_observers: list[Callable[[str, float, str | None], None]] = []
        """Called after every attempt with (model, seconds, None for an answer or the failure kind); must not
        block (live telemetry, shared breakers)."""
        self._warned: dict[str, tuple[float, int]] = {}
        """Per upstream: (monotonic time of its last failure warning, failures not logged since)."""
        self.trip_observers: list[Callable[[str, float], None]] = []
        """Called when a breaker opens, with (model, monotonic time it stays open until); must not block
        (shared breakers)."""

    async def startup(self) -> None:
        """Open the pooled client (inside the server's event loop)."""
        # aiohttp, not httpx, on this hot path: at 32 requests in flight httpx's connection pool costs 3.5-5 ms
        # of CPU per request here against aiohttp's 0.3 ms (encode/httpx#3215), which alone would break the
        # proxy's 2 ms latency budget. httpx stays the client everywhere else (collection, tests).
        connector = self.connector or aiohttp.TCPConnector(limit=512, keepalive_timeout=30.0)
        self.session = aiohttp.ClientSession(
            connector=connector, trust_env=False, skip_auto_headers=("User-Agent",), raise_for_status=False
        )

    async def shutdown(self) -> None:
        """Close the client."""
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------------ failure warnings
    def warn_failed(self, model: str, why: str, next_step: str) -> None:
        """Log that ``model``'s upstream failed a request, at most once per :data:`WARN_EVERY_S` per upstream.

        An upstream in trouble fails most requests it gets: one line per failure would flood the log (and cost the
        event loop a formatted, written line per failed request, when it is busiest); the next line says how many
        failures it stands for. Every failure is counted in ``/metrics`` regardless.
        """
        now = time.monotonic()
        last, held = self._warned.get(model, (-WARN_EVERY_S, 0))
        if now - last < WARN_EVERY_S:
            self._warned[model] = (last, held + 1)
            return
        self._warned[model] = (now, 0)
        more = f" ({held} more failure(s) of this upstream in the last {now - last:.0f} s not logged)" if held else ""
        log.warning("upstream %s failed (%s); %s%s", model, why, next_step, more)

    # ------------------------------------------------------------------ breakers
    def is_open(self, model: str, now: float) -> bool:
        """Whether ``model``'s circuit is open (cooling down after a failed request)."""
        return self.breakers[model].open_until > now

    def trip(self, model: str) -> None:
        """Open ``model``'s circuit for ``cooldown_s``."""
        b = self.breakers[model]
        b.failures += 1
        b.open_until = time.monotonic() + self.config.cooldown_s
        for observe in self.trip_observers:
            observe(model, b.open_until)

    # ------------------------------------------------------------------ calls
    async def call(
        self, model: str, body: dict[str, Any], attempts: int, stream: bool, deadline: float, *, rename: bool = True
    ) -> tuple[Upstreamed, float]:
        """Send ``body`` to ``model``'s upstream with retries; return (answer, seconds spent waiting).

        Every attempt, and the backoff between them, ends by ``deadline`` (``time.monotonic()`` seconds).
        ``rename`` replaces the request's ``model`` with the name the upstream knows (not for pass-through of
        names the proxy does not know).

        Returns:
            A validated 200, or a non-retryable client error (4xx) for the caller to forward scrubbed.

        Raises:
            UpstreamFailed: when every attempt failed; ``kind`` is ``deadline`` when time ran out.
        """
        up = self.config.upstreams[model]
        payload = dict(body)
        if rename:
            payload["model"] = up.upstream_model
        content = json.dumps(payload).encode()
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        key = self.upstream_keys.get(model)
        if key:
            headers["authorization"] = f"Bearer {key}"
        url = f"{up.base_url}/chat/completions"
        waited = 0.0
        why, kind = "no attempt made: the request deadline had passed", "deadline"
        assert self.session is not None
        tried = 0
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                why, kind = "the request deadline ran out", "deadline"
                break
            cut_by_deadline = remaining < up.timeout_s
            per = min(up.timeout_s, remaining)
            self.metrics.count("attempts", model)
            tried += 1
            t0 = time.perf_counter()
            resp: Upstreamed | None = None
            try:
                async with asyncio.timeout(remaining):
                    resp = await self._attempt(url, content, headers, per, stream)
            except _AttemptFailed as exc:
                why, kind = exc.why, exc.kind
            except (asyncio.TimeoutError, TimeoutError):  # aiohttp's connect and read timeouts are subclasses
                why = f"timed out after {per:g} s"
                kind = "deadline" if cut_by_deadline else "timeout"
            except aiohttp.ClientPayloadError:
                why, kind = ("stream dropped before its first event", "dropped_stream") if stream else (
                    "answer cut off mid-body",
                    "truncated",
                )
            except aiohttp.ClientError as exc:  # refused, reset, bad HTTP
                why, kind = f"connection failed ({type(exc).__name__})", "connection"
            finally:
                spent = time.perf_counter() - t0
                waited += spent
            if self.attempt_observers:
                outcome = kind if resp is None else _attempt_outcome(resp.status)
                for observe in self.attempt_observers:
                    observe(model, spent, outcome)
            retry_after = 0.0
            if resp is not None:
                if resp.status == 200:
                    self.breakers[model].failures = 0
                    resp.attempts = attempt + 1
                    return resp, waited
                if resp.status in _AUTH_FAIL_STATUS:
                    # A rejected upstream key: retrying will not help, and the body may quote the key.
                    self.metrics.count("failures", model, "auth")
                    env = up.api_key_env or "its key"
                    raise UpstreamFailed(
                        model, f"upstream rejected its key (HTTP {resp.status}); check {env}", "auth", attempt + 1
                    )
                if 300 <= resp.status < 400:
                    # Never followed: a redirect would re-send the prompt (and the key) somewhere else.
                    self.metrics.count("failures", model, "redirect")
                    raise UpstreamFailed(
                        model, f"upstream redirected (HTTP {resp.status}); not followed", "redirect", attempt + 1
                    )
                if 400 <= resp.status < 500 and resp.status not in _RETRYABLE_STATUS:
                    resp.attempts = attempt + 1
                    return resp, waited  # a client error: the caller forwards it (scrubbed)
                # 5xx, 408, 429, and anything else that is not an answer (a 204, a 1xx-turned-final): retried.
                why, kind = f"HTTP {resp.status}", f"http_{resp.status}"
                try:
                    retry_after = min(float(resp.retry_after or 0), 1.0)
                except ValueError:
                    retry_after = 0.0
            self.metrics.count("failures", model, kind)
            if attempt + 1 < attempts:
                delay = max(retry_after, min(0.05 * 2**attempt, 1.0) * (0.5 + random.random() / 2))
                if time.monotonic() + delay >= deadline:
                    why, kind = f"{why}; no time left to retry", "deadline"
                    break
                await asyncio.sleep(delay)
                waited += delay
        raise UpstreamFailed(model, why, kind, tried)

    async def _attempt(
        self, url: str, content: bytes, headers: dict[str, str], per: float, stream: bool
    ) -> Upstreamed:
        """One attempt: the validated answer, or a non-200 read whole (up to the size cap)."""
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=per, sock_read=per)
        raw = await self.session.post(url, data=content, headers=headers, timeout=timeout, allow_redirects=False)
        keep_open = False
        try:
            ctype = raw.headers.get("content-type", "")
            if raw.status == 200 and stream and not ctype.startswith("application/json"):
                ahead = await self._read_first_event(raw)
                keep_open = True
                return Upstreamed(200, ctype, ahead, raw)
            # (A stream request answered with plain JSON, as some servers do, is checked as a completion.)
            data = await self._read_capped(raw)
            resp = Upstreamed(raw.status, ctype, data, retry_after=raw.headers.get("retry-after"))
            if raw.status == 200:
                resp.parsed = _check_completion(data)
            return resp
        finally:
            if not keep_open:
                raw.release()

    async def _read_capped(self, raw: aiohttp.ClientResponse) -> bytes:
        cap = self.config.max_response_bytes
        if raw.content_length is not None:
            if raw.content_length > cap:
                raise _AttemptFailed(f"answer larger than max_response_bytes ({cap:,})", "too_large")
            return await raw.read()  # bounded by the declared length
        parts, size = [], 0
        while chunk := await raw.content.readany():
            size += len(chunk)
            if size > cap:
                raise _AttemptFailed(f"answer larger than max_response_bytes ({cap:,})", "too_large")
            parts.append(chunk)
        return b"".join(parts)

    async def _read_first_event(self, raw: aiohttp.ClientResponse) -> bytes:
        """Read a stream up to the end of its first event (or its end) and check it, before any byte is sent."""
        cap = self.config.max_response_bytes
        buf = b""
        while b"\n\n" not in buf and b"\r\n\r\n" not in buf:
            chunk = await raw.content.readany()
            if not chunk:
                if _DONE not in buf:
                    raise _AttemptFailed("stream ended before its first event", "dropped_stream")
                break
            buf += chunk
            if len(buf) > cap:
                raise _AttemptFailed(f"stream larger than max_response_bytes ({cap:,})", "too_large")
        _check_first_event(buf)
        return buf

    async def relay(self, model: str, resp: Upstreamed, on_usage: Any, deadline: float) -> AsyncIterator[bytes]:
        """Pass a validated stream through as it arrives, scrubbed; end a broken one with an error event.

        Whole lines are forwarded (a secret split across two reads is still found); ``on_usage(usage)`` is
        called with the ``usage`` of the stream's last chunk and may return bytes to send after it. The
        request's ``deadline`` bounds the whole stream: a stream still running then ends with an error event.
        """
        raw = resp.stream
        assert raw is not None
        cap = self.config.max_response_bytes
        scrub = self.scrubber.bytes
        pending, total, tail = resp.content, len(resp.content), b""
        broken: str | None = None
        try:
            async for out in self._relay_lines(raw, pending, total, cap, scrub, deadline):
                if isinstance(out, str):  # the reason the stream broke
                    broken = out
                    break
                tail = (tail + out)[-4096:]
                yield out
        finally:
            raw.release()  # also when the client went away mid-stream (the generator is closed)
        if broken is None and _DONE not in tail:
            broken = "stream from the upstream ended without [DONE]"
        if broken is not None:
            late = broken.startswith("the request deadline")
            self.metrics.count("failures", model, "deadline" if late else "dropped_stream")
            code = "deadline_exceeded" if late else "stream_interrupted"
            event = error_body(f"{model}: {broken}", "upstream_error", code)
            yield b"\ndata: " + json.dumps(event).encode() + b"\n\n"
            return
        for line in reversed(tail.split(b"\n")):
            if line.startswith(b"data: {") and b'"usage"' in line:
                try:
                    usage = json.loads(line[6:]).get("usage")
                except (ValueError, RecursionError, AttributeError):
                    break
                extra = on_usage(usage)
                if extra:
                    yield extra
                break

    @staticmethod
    async def _relay_lines(
        raw: aiohttp.ClientResponse, pending: bytes, total: int, cap: int, scrub: Any, deadline: float
    ) -> AsyncIterator[bytes | str]:
        """The stream's bytes, scrubbed, cut after the last newline of what has arrived; a str (why) if it broke."""
        try:
            while True:
                cut = pending.rfind(b"\n") + 1
                if cut:
                    yield scrub(pending[:cut])
                    pending = pending[cut:]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield "the request deadline ran out mid-stream"
                    return
                timer = asyncio.timeout(remaining)
                try:
                    async with timer:
                        chunk = await raw.content.readany()
                except TimeoutError:
                    # The event loop may fire a timer up to its clock resolution early, and the attempt's own
                    # read timeout (capped at the time left) can win the race by a hair: both are the deadline.
                    if timer.expired() or time.monotonic() >= deadline - _DEADLINE_SLACK_S:
                        yield "the request deadline ran out mid-stream"
                        return
                    raise
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:
                    yield f"stream larger than max_response_bytes ({cap:,})"
                    return
                pending += chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError) as exc:
            yield f"stream from the upstream broke off ({type(exc).__name__})"
            return
        if pending:
            yield scrub(pending)
