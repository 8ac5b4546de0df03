"""The async client for OpenAI-compatible chat completions: cached, retried, rate-limited per provider.

One :class:`ChatClient` serves every provider of a config. For each call it

1. looks the normalised request up in the :class:`~evals.collect.cache.ResponseCache` (a hit costs nothing
   and makes no request; identical requests in flight at once share one call);
2. otherwise waits for a slot of the provider's concurrency limit and POSTs ``{base_url}/chat/completions``;
3. retries on 408, 429, 5xx, timeouts, broken connections and malformed bodies, waiting
   ``uniform(0, backoff_s * 2**attempt)`` (capped at ``max_backoff_s``; "full jitter"), or the server's
   ``Retry-After`` on 429/503 when it sends one (capped at ``max_retry_after_s``); any other 4xx fails at once
   (a bad request or a bad key does not get better by asking again);
4. commits the answer to the cache the moment it arrives, then returns it with its token usage and latency.

API keys are read from the environment variables named by the providers when the client is built; they go
into the ``Authorization`` header and nowhere else, and are redacted from every error message.

Tests swap the network for an ``httpx.MockTransport`` or an ``httpx.ASGITransport`` via ``transport=``.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from evals.collect.cache import ResponseCache, request_key
from evals.collect.config import ProviderConfig
from evals.exceptions import ConfigError, ProviderError, ProviderTimeout

__all__ = ["CallStats", "ChatClient", "ChatResult"]

_RETRY_STATUS = {408, 429}


@dataclass(frozen=True)
class ChatResult:
    """One answer."""

    text: str
    """The assistant message content."""
    input_tokens: float
    """Prompt tokens from the response's ``usage`` (NaN when the provider sent none)."""
    output_tokens: float
    """Completion tokens from ``usage`` (NaN when none)."""
    latency_s: float
    """Seconds from sending the successful attempt to having its full body (as recorded when first asked)."""
    cached: bool
    """True when the answer came from the cache (no request was made)."""
    finish_reason: str = ""
    """``stop``, ``length``... as the provider reported it."""
    attempts: int = 0
    """Requests made for this answer in this run (0 for a cache hit)."""


@dataclass
class CallStats:
    """Per (provider, model) counters of one client's life."""

    calls: int = 0
    """Answers obtained by a request (paid)."""
    cache_hits: int = 0
    """Answers served from the cache (free)."""
    attempts: int = 0
    """HTTP requests sent, including failed attempts."""
    retries: int = 0
    """Attempts after a failure."""
    failures: int = 0
    """Calls that failed after all retries."""
    input_tokens: float = 0.0
    """Prompt tokens of paid calls."""
    output_tokens: float = 0.0
    """Completion tokens of paid calls."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed attempts by kind (``429``, ``500``, ``timeout``, ``connection``, ``malformed``...)."""


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class ChatClient:
    """Async chat-completions client over several providers.

    Args:
        providers: Provider configs by name.
        cache: Where answers are kept; None disables caching (every call is a request).
        transport: An ``httpx.AsyncBaseTransport`` replacing the network (tests).
        env: Where keys are read from (default ``os.environ``).
        sleep: The coroutine used to wait between attempts (tests replace it to observe waits).
        seed: Seed of the backoff jitter.

    Raises:
        ConfigError: if a provider names an environment variable that is not set (the message names the
            variable, never a value).

    Example:
        >>> async with ChatClient(cfg.providers, cache=ResponseCache(tmp)) as client:   # doctest: +SKIP
        ...     r = await client.chat("openai", "gpt-4o-mini", [{"role": "user", "content": "hi"}])
    """

    def __init__(
        self,
        providers: Mapping[str, ProviderConfig],
        *,
        cache: ResponseCache | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.providers = dict(providers)
        self.cache = cache
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._keys: dict[str, str] = {}
        for name, p in self.providers.items():
            if p.api_key_env:
                key = env.get(p.api_key_env, "")
                if not key:
                    raise ConfigError(
                        f"provider {name!r}: environment variable {p.api_key_env} is not set "
                        "(it must hold the API key)"
                    )
                self._keys[name] = key
        self._clients = {
            name: httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(p.timeout_s),
                limits=httpx.Limits(max_connections=p.concurrency, max_keepalive_connections=p.concurrency),
            )
            for name, p in self.providers.items()
        }
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._inflight: dict[str, asyncio.Future[ChatResult]] = {}
        self.stats: dict[tuple[str, str], CallStats] = {}

    def redact(self, text: str) -> str:
        """``text`` with every configured key (and its tail) replaced by ``***``."""
        for key in self._keys.values():
            text = text.replace(key, "***")
            if len(key) > 8:
                text = text.replace(key[-8:], "***")
        return text

    def _stat(self, provider: str, model: str) -> CallStats:
        return self.stats.setdefault((provider, model), CallStats())

    async def chat(
        self,
        provider: str,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion (from the cache when possible).

        Args:
            provider: Name of a configured provider.
            model: Model id as the provider knows it.
            messages: OpenAI-style messages.
            params: Request parameters (temperature, max_tokens...); part of the cache key.

        Raises:
            ProviderError: on a non-retryable error or when retries are exhausted.
            ProviderTimeout: when the last attempt timed out.
        """
        if provider not in self.providers:
            raise ConfigError(
                f"unknown provider {provider!r}; configured: {', '.join(sorted(self.providers))}"
            )
        params = dict(params or {})
        p = self.providers[provider]
        key = request_key(p.base_url, model, messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._stat(provider, model).cache_hits += 1
                return _result(hit, cached=True, attempts=0)
        pending = self._inflight.get(key)
        if pending is not None:  # the same request is already on its way: share it, pay once
            result = await asyncio.shield(pending)
            self._stat(provider, model).cache_hits += 1
            return ChatResult(**{**result.__dict__, "cached": True, "attempts": 0})
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._request(p, model, messages, params, key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: sharers, if any, re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self._inflight.pop(key, None)

    async def _request(
        self,
        p: ProviderConfig,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        params: dict[str, Any],
        key: str,
    ) -> ChatResult:
        stat = self._stat(p.name, model)
        slot = self._slots.setdefault(p.name, asyncio.Semaphore(p.concurrency))
        headers = {"Content-Type": "application/json"}
        if p.name in self._keys:
            headers["Authorization"] = f"Bearer {self._keys[p.name]}"
        payload = {**params, "model": model, "messages": list(messages), "stream": False}
        url = f"{p.base_url}/chat/completions"
        last: _Retryable | None = None
        for attempt in range(p.retries + 1):
            if attempt:
                stat.retries += 1
                if last is not None and last.retry_after is not None:
                    if last.retry_after > p.max_retry_after_s:
                        break
                    wait = last.retry_after + self._rng.uniform(0, 0.1 * max(last.retry_after, 0.1))
                else:
                    wait = self._rng.uniform(0, min(p.max_backoff_s, p.backoff_s * 2 ** (attempt - 1)))
                await self._sleep(wait)
            async with slot:
                stat.attempts += 1
                try:
                    body, latency = await self._attempt(p, url, payload, headers)
                except _Retryable as exc:
                    stat.errors[exc.kind] = stat.errors.get(exc.kind, 0) + 1
                    last = exc
                    continue
                except ProviderError:
                    stat.failures += 1
                    raise
            record = {**body, "latency_s": latency}
            if self.cache is not None:
                self.cache.put(key, model, record)
            result = _result(record, cached=False, attempts=attempt + 1)
            stat.calls += 1
            stat.input_tokens += 0.0 if math.isnan(result.input_tokens) else result.input_tokens
            stat.output_tokens += 0.0 if math.isnan(result.output_tokens) else result.output_tokens
            return result
        stat.failures += 1
        assert last is not None
        msg = self.redact(
            f"provider {p.name!r}, model {model!r}: gave up after {stat_attempts(p, last)}: {last}"
        )
        if last.kind == "timeout":
            raise ProviderTimeout(msg)
        raise ProviderError(msg)

    async def _attempt(
        self, p: ProviderConfig, url: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> tuple[dict[str, Any], float]:
        client = self._clients[p.name]
        t0 = time.perf_counter()
        try:
            resp = await client.post(url, json=payload, headers=headers)
        except httpx.TimeoutException:
            raise _Retryable("timeout", f"no answer within {p.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise _Retryable("connection", f"connection error ({type(exc).__name__}: {exc})") from None
        latency = time.perf_counter() - t0
        status = resp.status_code
        if status == 200:
            try:
                data = resp.json()
                text = data["choices"][0]["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("message content is not text")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise _Retryable(
                    "malformed", f"malformed response body ({type(exc).__name__}: {exc})"
                ) from None
            usage = data.get("usage") or {}
            return {
                "text": text,
                "input_tokens": usage.get("prompt_tokens"),
                "output_tokens": usage.get("completion_tokens"),
                "finish_reason": data["choices"][0].get("finish_reason") or "",
                "model": data.get("model", ""),
            }, latency
        detail = _error_message(resp)
        if status in _RETRY_STATUS or status >= 500:
            ra = _retry_after(resp.headers.get("retry-after")) if status in (429, 503) else None
            raise _Retryable(str(status), f"HTTP {status}: {detail}", ra)
        raise ProviderError(
            self.redact(
                f"provider {p.name!r}: HTTP {status} for model {payload['model']!r}: "
                f"{detail} (not retried: a {status} does not change on retry)"
            )
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await asyncio.gather(*(c.aclose() for c in self._clients.values()))

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def stat_attempts(p: ProviderConfig, last: _Retryable) -> str:
    """How the retry budget was spent, for the error message."""
    if last.retry_after is not None and last.retry_after > p.max_retry_after_s:
        return (
            f"the server asked to wait {last.retry_after:g} s (> max_retry_after_s={p.max_retry_after_s:g})"
        )
    return f"{p.retries + 1} attempt(s)"


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return resp.text[:300]


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) and out >= 0 else math.nan


def _result(record: Mapping[str, Any], *, cached: bool, attempts: int) -> ChatResult:
    return ChatResult(
        text=str(record.get("text", "")),
        input_tokens=_num(record.get("input_tokens")),
        output_tokens=_num(record.get("output_tokens")),
        latency_s=_num(record.get("latency_s")),
        cached=cached,
        finish_reason=str(record.get("finish_reason", "")),
        attempts=attempts,
    )
