"""An OpenAI-compatible proxy that routes each request with an exported router (``routelab serve FOLDER``).

Endpoints:

* ``POST /v1/chat/completions``: a request for a routed name (``router`` by default, see ``route_names``
  in ``upstreams.toml``) is routed on the text of its last user message and forwarded (with aiohttp's pooled
  client, see :meth:`ProxyState.startup` for why not httpx), with its ``model`` replaced, to the chosen
  model's upstream; a request for one of the folder's models is passed through to
  that model's upstream unchanged. Streaming (SSE) is passed through as it arrives.
* ``GET /v1/models``, ``GET /healthz`` (no auth), ``GET /metrics`` (Prometheus text format).
* ``POST /v1/feedback`` ``{"category", "model", "score"}``: feeds an adaptive export; others answer 404.
  ``GET``/``PUT /v1/feedback/state`` reads or replaces a worker's counts (to keep them across a restart).

Failure handling, per upstream: a per-attempt timeout and ``retries`` extra attempts on connection errors,
timeouts, 408/429/5xx and malformed bodies (short exponential backoff; ``Retry-After`` honoured up to
1 s). When the chosen model's upstream fails every attempt, the next model of ``fallback_order`` (after the
chosen one, wrapping around) is tried; the failed upstream is then skipped for ``cooldown_s`` seconds (a
circuit breaker), so later requests go straight to the fallback without paying its retry budget. After the
cooldown the next request tries it again; when every candidate is cooling down, each is probed once.

Response headers: ``x-routelab-model`` (the model that answered), ``x-routelab-choice`` (the router's
choice), ``x-routelab-reason`` (``routed``, ``fallback from <model>``, ``passthrough``),
``x-routelab-cost-usd`` (usage x the export's prices). A stream's usage arrives after its headers, so a
streamed answer that reports usage ends with the SSE comment ``: x-routelab-cost-usd <dollars>`` instead.
Request bodies over ``max_request_bytes`` (``[proxy]`` of ``upstreams.toml``, 8 MiB by default) get 413.

Security: clients must send ``Authorization: Bearer <key>`` with a key from the environment variable named
by ``client_keys_env`` (``ROUTELAB_PROXY_KEYS`` by default), unless the server was built with
``no_auth=True``. Upstream keys are read from the environment variables named in ``upstreams.toml``; they
are sent only to their upstream and never appear in responses, errors or logs (upstream 401/403 bodies,
which can quote a key, are not forwarded; other forwarded error bodies are scrubbed). The only state is the
circuit breakers, the metrics and an adaptive router's counts, so several workers can run behind a load
balancer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from evals.exceptions import ConfigError
from evals.serving.background import BackgroundServer
from evals.serving.replay import prompt_of  # the replay server reads requests the same way
from routers.export.exporter import ExportedRouter, load_exported
from routers.export.upstreams import ProxyConfig, Upstream

__all__ = ["ProxyServer", "ProxyState", "app_from_environment", "build_proxy_app", "prompt_of", "serve"]

log = logging.getLogger("routelab.proxy")

_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_AUTH_FAIL_STATUS = {401, 403}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        status_code=status,
        headers=dict(headers or {}),
    )


class _UpstreamFailed(Exception):
    """One upstream failed every attempt (message is safe to show: no bodies, no keys)."""

    def __init__(self, model: str, why: str) -> None:
        super().__init__(f"{model}: {why}")
        self.model, self.why = model, why


@dataclass
class _Breaker:
    open_until: float = 0.0
    failures: int = 0


class ProxyState:
    """Everything the proxy holds: the router, its upstream config, keys, breakers and metrics.

    Args:
        exported: The loaded export.
        config: Parsed ``upstreams.toml``.
        client_keys: Accepted bearer keys; ``None`` disables client auth (``--no-auth``).
        upstream_keys: Per model, the upstream key ("" = none), read from the environment by the caller.
        connector: An aiohttp connector (default: pooled TCP connections, created at startup).
        offload_routing: Run the routing decision in a worker thread (for encoders that take milliseconds).
    """

    def __init__(
        self,
        exported: ExportedRouter,
        config: ProxyConfig,
        *,
        client_keys: list[str] | None,
        upstream_keys: Mapping[str, str],
        connector: aiohttp.BaseConnector | None = None,
        offload_routing: bool | None = None,
    ) -> None:
        self.exported = exported
        self.config = config
        self.client_keys = [k.encode() for k in client_keys] if client_keys is not None else None
        self.upstream_keys = dict(upstream_keys)
        self._secrets = [k for k in self.upstream_keys.values() if k]
        self.connector = connector
        enc = exported.manifest.get("encoder") or ""
        self.offload_routing = (
            bool(enc) and not enc.startswith("hash-bow") and enc != "minilm-static"
            if offload_routing is None
            else offload_routing
        )
        self.by_upstream_name = {u.upstream_model: m for m, u in config.upstreams.items()}
        self.breakers: dict[str, _Breaker] = defaultdict(_Breaker)
        self.client: aiohttp.ClientSession | None = None
        self.counts: dict[tuple[str, ...], float] = defaultdict(float)
        self.latency_hist = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_n = 0
        self.routing_sum = 0.0  # seconds spent deciding (featurisation included), for /metrics
        self.routing_n = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        """Open the pooled upstream client (inside the server's event loop)."""
        # aiohttp, not httpx, on this hot path: at 32 requests in flight httpx's connection pool costs 3.5-5 ms
        # of CPU per request here against aiohttp's 0.3 ms (encode/httpx#3215), which alone would break the
        # proxy's 2 ms latency budget. httpx stays the client everywhere else (collection, tests).
        connector = self.connector or aiohttp.TCPConnector(limit=512, keepalive_timeout=30.0)
        self.client = aiohttp.ClientSession(
            connector=connector, trust_env=False, skip_auto_headers=("User-Agent",), raise_for_status=False
        )

    async def shutdown(self) -> None:
        """Close the upstream client."""
        if self.client is not None:
            await self.client.close()

    # ------------------------------------------------------------------ helpers
    def scrub(self, text: str) -> str:
        """Replace every upstream key in ``text`` with ``***``."""
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        """:meth:`scrub` for bytes."""
        for s in self._secrets:
            data = data.replace(s.encode(), b"***")
        return data

    def count(self, *key: str, by: float = 1.0) -> None:
        """Add to a metric counter."""
        with self._lock:
            self.counts[key] += by

    def observe_added(self, seconds: float) -> None:
        """Record the proxy's own time for one request (total minus time waiting on upstreams)."""
        with self._lock:
            self.latency_sum += seconds
            self.latency_n += 1
            for i, b in enumerate(_LATENCY_BUCKETS):
                if seconds <= b:
                    self.latency_hist[i] += 1
                    break
            else:
                self.latency_hist[-1] += 1

    def is_open(self, model: str, now: float) -> bool:
        """Whether the circuit of ``model``'s upstream is open (cooling down)."""
        return self.breakers[model].open_until > now

    def cost_of(self, model: str, usage: Any) -> float | None:
        """Dollars for a response's ``usage`` at the export's price of ``model`` (None if not computable)."""
        p = self.exported.prices.get(model) or {}
        if not isinstance(usage, dict) or p.get("input_per_1m") is None:
            return None
        try:
            tin = float(usage.get("prompt_tokens") or 0)
            tout = float(usage.get("completion_tokens") or 0)
        except (TypeError, ValueError):
            return None
        return (tin * p["input_per_1m"] + tout * p["output_per_1m"]) / 1e6 + float(
            p.get("request_fee") or 0.0
        )

    def authorised(self, request: Request) -> bool:
        """Whether the request carries an accepted bearer key (always true without client auth)."""
        if self.client_keys is None:
            return True
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return False
        given = header[7:].strip().encode()
        ok = False
        for k in self.client_keys:  # compare with every key, constant time, no early exit
            ok |= hmac.compare_digest(given, k)
        return ok

    def candidates(self, chosen: str) -> list[str]:
        """The chosen model, then the fallback order after it, wrapping around."""
        order = list(self.config.fallback_order)
        if chosen in order:
            i = order.index(chosen)
            rest = order[i + 1 :] + order[:i]
        else:
            rest = order
        return [chosen] + [m for m in rest if m != chosen]

    # ------------------------------------------------------------------ upstream calls
    async def call(
        self, model: str, body: dict[str, Any], attempts: int, stream: bool
    ) -> tuple[_Upstreamed, float]:
        """Send ``body`` to ``model``'s upstream with retries; return (response, seconds spent waiting).

        A non-streamed 200 is read whole and checked to be JSON; a streamed 200 is returned unread (the caller
        relays and releases it); any other status is read whole.

        Raises:
            _UpstreamFailed: when every attempt failed (a retryable error, or an upstream auth failure).
        """
        up: Upstream = self.config.upstreams[model]
        payload = dict(body)
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
        # Per attempt: connecting and every read wait at most timeout_s (a stream may run longer in total).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=up.timeout_s, sock_read=up.timeout_s)
        waited = 0.0
        why = "no attempt made"
        assert self.client is not None
        for attempt in range(attempts):
            self.count("attempts", model)
            t0 = time.perf_counter()
            resp: _Upstreamed | None = None
            try:
                raw = await self.client.post(url, data=content, headers=headers, timeout=timeout)
                try:
                    if raw.status == 200 and stream:
                        resp = _Upstreamed(raw.status, raw.content_type, b"", raw)
                    else:
                        data = await raw.read()
                        resp = _Upstreamed(raw.status, raw.headers.get("content-type", ""), data, None)
                        if raw.status == 200:
                            resp.parsed = json.loads(data)  # a truncated/malformed body is a failure, retried
                        resp.retry_after = raw.headers.get("retry-after")
                finally:
                    if resp is None or resp.stream is None:
                        raw.release()
            except asyncio.TimeoutError:  # aiohttp's connect and read timeouts are subclasses
                why = f"timed out after {up.timeout_s:g} s"
            except aiohttp.ClientError as exc:  # refused, reset, dropped mid-body, bad HTTP
                why = f"connection failed ({type(exc).__name__})"
            except ValueError:
                why = "malformed response body"
            finally:
                waited += time.perf_counter() - t0
            retry_after = 0.0
            if resp is not None:
                if resp.status == 200:
                    self.breakers[model] = _Breaker()
                    return resp, waited
                if resp.status in _AUTH_FAIL_STATUS:
                    # A rejected upstream key: retrying will not help, and the body may quote the key.
                    env = up.api_key_env or "its key"
                    why = f"upstream rejected its key (HTTP {resp.status}); check {env}"
                    self.count("failures", model, "auth")
                    raise _UpstreamFailed(model, why)
                if resp.status not in _RETRYABLE_STATUS:
                    return resp, waited  # a client error: the caller forwards it (scrubbed)
                why = f"HTTP {resp.status}"
                try:
                    retry_after = min(float(resp.retry_after or 0), 1.0)
                except ValueError:
                    retry_after = 0.0
            self.count("failures", model, why.split(" (")[0].split(" after")[0])
            if attempt + 1 < attempts:
                delay = max(retry_after, min(0.05 * 2**attempt, 1.0) * (0.5 + random.random() / 2))
                await asyncio.sleep(delay)
                waited += delay
        raise _UpstreamFailed(model, why)


@dataclass
class _Upstreamed:
    """An upstream's answer: status, content type, and either the whole body or the unread stream."""

    status: int
    content_type: str
    content: bytes
    stream: aiohttp.ClientResponse | None
    retry_after: str | None = None
    parsed: Any = None
    """The decoded JSON of a non-streamed 200 (decoded once, to validate it and read its usage)."""


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _too_large(st: ProxyState) -> JSONResponse:
    st.count("requests", "too_large")
    return _error(
        413,
        f"request body is larger than this proxy accepts ({st.config.max_request_bytes:,} bytes; "
        "raise max_request_bytes in the [proxy] section of upstreams.toml to allow more)",
        code="request_too_large",
    )


def _reply_headers(model: str, choice: str | None, reason: str, cost: float | None) -> dict[str, str]:
    h = {"x-routelab-model": model, "x-routelab-reason": reason}
    if choice is not None:
        h["x-routelab-choice"] = choice
    if cost is not None:
        h["x-routelab-cost-usd"] = f"{cost:.8f}"
    return h


async def _chat(request: Request) -> Response:
    st: ProxyState = request.app.state.proxy
    t_start = time.perf_counter()
    if not st.authorised(request):
        return _error(
            401,
            "missing or invalid bearer key: send 'Authorization: Bearer <key>' with a key from "
            f"{st.config.client_keys_env}",
            "authentication_error",
            "invalid_api_key",
            {"www-authenticate": "Bearer"},
        )
    raw = await _read_body(request, st.config.max_request_bytes)
    if raw is None:
        return _too_large(st)
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return _error(400, f"request body is not a JSON object ({exc})")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return _error(400, "'model' (a string) is required")
    stream = bool(body.get("stream"))
    exported = st.exported
    choice: str | None = None
    if name in st.config.route_names:
        prompt = prompt_of(body.get("messages"))
        if prompt is None:
            return _error(400, "'messages' needs a user message (its text is what the router routes on)")
        cat = request.headers.get("x-routelab-category")
        cats = [cat] if cat else None
        if st.offload_routing:
            from starlette.concurrency import run_in_threadpool

            t_route = time.perf_counter()
            idx = await run_in_threadpool(exported.route_indices, [prompt], None, cats)
        else:
            t_route = time.perf_counter()
            idx = exported.route_indices([prompt], None, cats)
        st.routing_sum += time.perf_counter() - t_route  # one event loop: no lock needed for two adds
        st.routing_n += 1
        choice = exported.models[int(idx[0])]
        st.count("choice", choice)
        candidates = st.candidates(choice)
    else:
        model = name if name in st.config.upstreams else st.by_upstream_name.get(name)
        if model is None:
            return _error(
                404,
                f"model {name!r} is neither routed ({', '.join(st.config.route_names)}) nor one of "
                f"this proxy's models ({', '.join(st.config.upstreams)})",
                code="model_not_found",
            )
        candidates = [model]
    now = time.monotonic()
    live = [m for m in candidates if not st.is_open(m, now)]
    # When every candidate is cooling down, probe them in order with one attempt each rather than refuse.
    plan = [(m, 1 + st.config.upstreams[m].retries) for m in live] or [(m, 1) for m in candidates]
    failures: list[str] = []
    waited = 0.0
    for model, attempts in plan:
        try:
            resp, w = await st.call(model, body, attempts, stream)
        except _UpstreamFailed as exc:
            failures.append(st.scrub(str(exc)))
            st.breakers[model].failures += 1
            st.breakers[model].open_until = time.monotonic() + st.config.cooldown_s
            log.warning(
                "upstream %s failed (%s); %s",
                model,
                st.scrub(exc.why),
                "trying the next model" if model != plan[-1][0] else "no model left",
            )
            continue
        waited += w
        if choice is None:
            reason = "passthrough"
        elif model == choice:
            reason = "routed"
        else:
            reason = f"fallback from {choice}"
        st.count("requests", reason.split(" ")[0])
        st.count("answered", model)
        if resp.status != 200:  # a client error from the upstream: forward it, scrubbed
            st.count("upstream_client_errors", model)
            headers = _reply_headers(model, choice, reason, None)
            st.observe_added(time.perf_counter() - t_start - waited)
            return Response(
                st.scrub_bytes(resp.content),
                status_code=resp.status,
                media_type=resp.content_type or "application/json",
                headers=headers,
            )
        if stream:
            headers = _reply_headers(model, choice, reason, None)
            st.observe_added(time.perf_counter() - t_start - waited)
            assert resp.stream is not None
            return StreamingResponse(
                _relay(st, model, resp.stream),
                status_code=200,
                headers=headers,
                media_type=resp.content_type or "text/event-stream",
                background=BackgroundTask(resp.stream.release),
            )
        usage = resp.parsed.get("usage") if isinstance(resp.parsed, dict) else None
        cost = st.cost_of(model, usage)
        if cost is not None:
            st.count("cost_usd", model, by=cost)
        headers = _reply_headers(model, choice, reason, cost)
        st.observe_added(time.perf_counter() - t_start - waited)
        log.info("%s -> %s (%s) %.1f ms", name, model, reason, 1000 * (time.perf_counter() - t_start))
        return Response(resp.content, status_code=200, media_type="application/json", headers=headers)
    st.count("requests", "failed")
    return _error(
        502,
        "every upstream failed: " + "; ".join(failures),
        "upstream_error",
        "upstream_failed",
        {"x-routelab-reason": "failed", **({"x-routelab-choice": choice} if choice else {})},
    )


async def _relay(st: ProxyState, model: str, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Pass an SSE stream through as it arrives; count the usage of its last chunk when present.

    When the stream reports usage (the client sent ``stream_options: {"include_usage": true}``), its cost
    follows the last event as the SSE comment ``: x-routelab-cost-usd <dollars>``.
    """
    tail = b""
    try:
        async for chunk in resp.content.iter_any():
            tail = (tail + chunk)[-4096:]
            yield chunk
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        st.count("failures", model, "stream interrupted")
        log.warning("stream from %s interrupted (%s)", model, type(exc).__name__)
        return
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                cost = st.cost_of(model, json.loads(line[6:]).get("usage"))
            except ValueError:
                cost = None
            if cost is not None:
                st.count("cost_usd", model, by=cost)
                # Headers left before the usage arrived: the cost goes in an SSE comment after the last event
                # (SSE clients, the OpenAI SDK's included, skip comment lines).
                yield f": x-routelab-cost-usd {cost:.8f}\n\n".encode()
            break


async def _models(request: Request) -> Response:
    st: ProxyState = request.app.state.proxy
    if not st.authorised(request):
        return _error(401, "missing or invalid bearer key", "authentication_error", "invalid_api_key")
    data = [
        {"id": n, "object": "model", "created": 0, "owned_by": "routelab-router"}
        for n in st.config.route_names
    ]
    data += [
        {"id": m, "object": "model", "created": 0, "owned_by": st.exported.provider(m)}
        for m in st.config.upstreams
    ]
    return JSONResponse({"object": "list", "data": data})


async def _healthz(request: Request) -> Response:
    st: ProxyState = request.app.state.proxy
    now = time.monotonic()
    ups = {m: ("cooling down" if st.is_open(m, now) else "up") for m in st.config.upstreams}
    return JSONResponse(
        {
            "status": "ok",
            "router": st.exported.manifest["router"]["name"],
            "lam": st.exported.lam,
            "upstreams": ups,
        }
    )


def _feedback_refusal(request: Request) -> Response | None:
    """The 401/404 answer to a feedback request that cannot be taken, or None."""
    st: ProxyState = request.app.state.proxy
    if not st.authorised(request):
        return _error(401, "missing or invalid bearer key", "authentication_error", "invalid_api_key")
    if not st.exported.adaptive:
        return _error(
            404,
            f"this export ({st.exported.manifest['router']['name']!r}) is not adaptive: feedback is "
            "accepted only by an export of an adaptive router",
            code="not_adaptive",
        )
    return None


async def _feedback(request: Request) -> Response:
    """``POST /v1/feedback`` ``{"category", "model", "score"}``: count one answer's quality."""
    st: ProxyState = request.app.state.proxy
    refused = _feedback_refusal(request)
    if refused is not None:
        return refused
    raw = await _read_body(request, st.config.max_request_bytes)
    if raw is None:
        return _too_large(st)
    try:
        fb = json.loads(raw)
        if not isinstance(fb, dict):
            raise ValueError("not a JSON object")
        category, model, score = fb.get("category"), fb["model"], fb["score"]
    except (ValueError, KeyError):
        return _error(400, 'feedback must be a JSON object {"category": str, "model": str, "score": number}')
    try:
        st.exported.state.feedback(None if category is None else str(category), model, score)
    except ValueError as exc:  # names the problem: the unknown model (listing the models) or the bad score
        return _error(400, str(exc))
    st.count("feedback", str(model))
    return JSONResponse({"ok": True})


async def _feedback_state(request: Request) -> Response:
    """``GET``/``PUT /v1/feedback/state``: read or replace this worker's adaptive counts.

    So an operator can save the counts before a restart and restore them, or copy one worker's counts to the
    others (each worker learns only from the feedback it receives).
    """
    st: ProxyState = request.app.state.proxy
    refused = _feedback_refusal(request)
    if refused is not None:
        return refused
    if request.method == "GET":
        return JSONResponse(st.exported.state.get_evidence())
    raw = await _read_body(request, st.config.max_request_bytes)
    if raw is None:
        return _too_large(st)
    try:
        st.exported.state.set_evidence(raw)
    except ValueError as exc:  # JSON errors included; nothing changed
        return _error(400, f"feedback state not accepted: {exc}")
    st.count("feedback_state_set", "all")
    return JSONResponse({"ok": True})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


async def _metrics(request: Request) -> Response:
    st: ProxyState = request.app.state.proxy
    if not st.authorised(request):
        return _error(401, "missing or invalid bearer key", "authentication_error", "invalid_api_key")
    with st._lock:
        counts = dict(st.counts)
        hist, total, n = list(st.latency_hist), st.latency_sum, st.latency_n
    out = [
        "# HELP routelab_requests_total Chat requests by outcome (routed, fallback, passthrough, failed, "
        "too_large).",
        "# TYPE routelab_requests_total counter",
    ]
    for reason in ("routed", "fallback", "passthrough", "failed", "too_large"):
        out.append(f'routelab_requests_total{{reason="{reason}"}} {counts.get(("requests", reason), 0):g}')
    series = (
        ("routelab_model_requests_total", "answered", "Requests answered per model.", ("model",)),
        (
            "routelab_router_choice_total",
            "choice",
            "Router decisions per model (before any fallback).",
            ("model",),
        ),
        ("routelab_upstream_attempts_total", "attempts", "Upstream attempts per model.", ("model",)),
        (
            "routelab_upstream_failures_total",
            "failures",
            "Failed upstream attempts per model and kind.",
            ("model", "kind"),
        ),
        ("routelab_feedback_total", "feedback", "Feedback received per model (adaptive exports).", ("model",)),
        (
            "routelab_cost_usd_total",
            "cost_usd",
            "Dollars spent per model (usage x export prices).",
            ("model",),
        ),
    )
    for metric, key, help_, labels in series:
        out += [f"# HELP {metric} {help_}", f"# TYPE {metric} counter"]
        for k, v in sorted(counts.items()):
            if k[0] == key:
                lab = ",".join(f'{name}="{_label(val)}"' for name, val in zip(labels, k[1:], strict=False))
                out.append(f"{metric}{{{lab}}} {v:.10g}")
    now = time.monotonic()
    out += [
        "# HELP routelab_upstream_up 1 unless the upstream is cooling down after failures.",
        "# TYPE routelab_upstream_up gauge",
    ]
    out += [
        f'routelab_upstream_up{{model="{_label(m)}"}} {0 if st.is_open(m, now) else 1}'
        for m in st.config.upstreams
    ]
    out += [
        "# HELP routelab_added_latency_seconds Proxy time per request, excluding upstream waits.",
        "# TYPE routelab_added_latency_seconds histogram",
    ]
    cum = 0
    for b, c in zip(_LATENCY_BUCKETS, hist, strict=False):
        cum += c
        out.append(f'routelab_added_latency_seconds_bucket{{le="{b:g}"}} {cum}')
    out.append(f'routelab_added_latency_seconds_bucket{{le="+Inf"}} {n}')
    out += [f"routelab_added_latency_seconds_sum {total:.9f}", f"routelab_added_latency_seconds_count {n}"]
    out += [
        "# HELP routelab_routing_seconds Time spent on routing decisions (featurisation included).",
        "# TYPE routelab_routing_seconds summary",
        f"routelab_routing_seconds_sum {st.routing_sum:.9f}",
        f"routelab_routing_seconds_count {st.routing_n}",
    ]
    return PlainTextResponse("\n".join(out) + "\n", media_type="text/plain; version=0.0.4")


def build_proxy_app(
    folder: str | os.PathLike[str] | ExportedRouter,
    *,
    no_auth: bool = False,
    environ: Mapping[str, str] | None = None,
    upstreams_path: str | os.PathLike[str] | None = None,
    connector: aiohttp.BaseConnector | None = None,
    trust_foreign_runtime: bool = False,
) -> Starlette:
    """The proxy's ASGI app for an export folder (verified and loaded first).

    Args:
        folder: The export folder (or an already loaded :class:`ExportedRouter`).
        no_auth: Accept requests without a client key (explicit opt-out; local use only).
        environ: Where keys are read from (default ``os.environ``).
        upstreams_path: Another ``upstreams.toml`` to use instead of the folder's.
        connector: An aiohttp connector for the upstream calls (default: pooled TCP).
        trust_foreign_runtime: See :func:`~routers.export.load_exported`.

    Raises:
        ConfigError: when client auth is on but no client key is configured.
        ExportError / TamperedExportError: for a folder that does not verify.
    """
    env = os.environ if environ is None else environ
    exported = (
        folder
        if isinstance(folder, ExportedRouter)
        else load_exported(folder, trust_foreign_runtime=trust_foreign_runtime)
    )
    config = exported.proxy_config(upstreams_path)
    client_keys = None
    if not no_auth:
        client_keys = [k.strip() for k in str(env.get(config.client_keys_env, "")).split(",") if k.strip()]
        if not client_keys:
            raise ConfigError(
                f"no client keys: set {config.client_keys_env} to a comma-separated list of keys clients "
                "must send "
                "as 'Authorization: Bearer <key>', or pass --no-auth to run without client authentication"
            )
    upstream_keys = {}
    for m, u in config.upstreams.items():
        upstream_keys[m] = str(env.get(u.api_key_env, "")) if u.api_key_env else ""
        if u.api_key_env and not upstream_keys[m]:
            log.warning(
                "environment variable %s (key of the %s upstream) is not set; sending no key",
                u.api_key_env,
                m,
            )
    state = ProxyState(
        exported, config, client_keys=client_keys, upstream_keys=upstream_keys, connector=connector
    )

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        await state.startup()
        try:
            yield
        finally:
            await state.shutdown()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/feedback", _feedback, methods=["POST"]),
            Route("/v1/feedback/state", _feedback_state, methods=["GET", "PUT"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.proxy = state
    return app


class ProxyServer(BackgroundServer):
    """Run an ASGI app (the proxy, or any other) with uvicorn in a background thread on loopback.

    For tests, benchmarks and notebooks: a :class:`evals.serving.BackgroundServer` with the app's lifespan
    handlers on (the proxy opens and closes its upstream clients there).

    Example:
        >>> with ProxyServer(build_proxy_app(folder, no_auth=True)) as srv:   # doctest: +SKIP
        ...     httpx.post(f"{srv.base_url}/chat/completions", json={...})
    """

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        super().__init__(app, host=host, port=port, log_level=log_level, lifespan="on", name="routelab-proxy")


#: Environment variables through which ``serve(workers=N)`` hands its settings to each worker process.
_WORKER_ENV = {
    "folder": "ROUTELAB_SERVE_FOLDER",
    "no_auth": "ROUTELAB_SERVE_NO_AUTH",
    "upstreams": "ROUTELAB_SERVE_UPSTREAMS",
    "trust": "ROUTELAB_SERVE_TRUST_RUNTIME",
}


def app_from_environment() -> Starlette:
    """The proxy app of one worker process of ``serve(workers=N)`` (an app factory for uvicorn).

    Reads the folder and flags from the ``ROUTELAB_SERVE_*`` variables ``serve`` sets; keys come from the
    environment as always.
    """
    folder = os.environ.get(_WORKER_ENV["folder"])
    if not folder:
        raise ConfigError(f"{_WORKER_ENV['folder']} is not set; start workers with `routelab serve --workers N`")
    return build_proxy_app(
        Path(folder),
        no_auth=os.environ.get(_WORKER_ENV["no_auth"]) == "1",
        upstreams_path=os.environ.get(_WORKER_ENV["upstreams"]) or None,
        trust_foreign_runtime=os.environ.get(_WORKER_ENV["trust"]) == "1",
    )


def serve(
    folder: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    no_auth: bool = False,
    upstreams_path: str | os.PathLike[str] | None = None,
    trust_foreign_runtime: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve an export folder in the foreground (``routelab serve``).

    Args:
        workers: Worker processes sharing the port (uvicorn's process manager). Each holds its own circuit
            breakers, metrics and adaptive counts (the proxy is otherwise stateless), like workers behind a
            load balancer. The folder and keys are checked once here, before any worker starts.
    """
    import uvicorn

    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    app = build_proxy_app(
        Path(folder),
        no_auth=no_auth,
        upstreams_path=upstreams_path,
        trust_foreign_runtime=trust_foreign_runtime,
    )
    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }
    if workers == 1:
        uvicorn.run(app, **common)
        return
    os.environ[_WORKER_ENV["folder"]] = str(Path(folder).resolve())
    os.environ[_WORKER_ENV["no_auth"]] = "1" if no_auth else "0"
    os.environ[_WORKER_ENV["upstreams"]] = str(Path(upstreams_path).resolve()) if upstreams_path else ""
    os.environ[_WORKER_ENV["trust"]] = "1" if trust_foreign_runtime else "0"
    uvicorn.run("routers.export.proxy:app_from_environment", factory=True, workers=workers, **common)
