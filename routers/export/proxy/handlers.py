"""The proxy's endpoints: chat completions (route, forward, fail over), models, health, metrics, feedback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from evals.production.records import MAX_REQUEST_ID_CHARS, FeedbackRecord, RecordError, valid_request_id
from evals.serving.wire import answer_text, prompt_of  # the replay server reads requests the same way
from routers.export.proxy import policy
from routers.export.proxy.context import RequestContext
from routers.export.proxy.errors import ClientRequestError, UpstreamFailed, openai_error
from routers.export.proxy.state import ProxyState
from routers.export.proxy.stream_text import StreamText, text_cap_wanted
from routers.export.proxy.upstream import valid_usage
from routers.export.proxy.validation import check_chat_request, parse_json_body
from routers.runtime import check_feedback

__all__ = ["chat", "feedback", "feedback_state", "healthz", "metrics", "models"]

log = logging.getLogger("routelab.proxy")


async def _read_body(request: Request, st: ProxyState) -> bytes:
    """The request body, read within ``body_timeout_s`` and no further than ``max_request_bytes``.

    Raises:
        ClientRequestError: 413 when larger, 408 when the client is too slow (a slow-body client must not
            hold a connection and a task forever).
    """
    limit = st.config.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(st)
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(st.config.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(st)
                parts.append(chunk)
    except TimeoutError:
        st.count("client_errors", "request_timeout")
        raise ClientRequestError(
            f"request body not received within {st.config.body_timeout_s:g} s (body_timeout_s)",
            status=408,
            code="request_timeout",
        ) from None
    return b"".join(parts)


def _too_large(st: ProxyState) -> ClientRequestError:
    st.count("requests", "too_large")
    return ClientRequestError(
        f"request body is larger than this proxy accepts ({st.config.max_request_bytes:,} bytes; "
        "raise max_request_bytes in the [proxy] section of upstreams.toml to allow more)",
        status=413,
        code="request_too_large",
    )


def _unauthorised(st: ProxyState) -> JSONResponse:
    return openai_error(
        401,
        "missing or invalid bearer key: send 'Authorization: Bearer <key>' with a key from "
        f"{st.config.client_keys_env}",
        "authentication_error",
        "invalid_api_key",
        {"www-authenticate": "Bearer"},
    )


def _reply_headers(
    model: str, choice: str | None, reason: str, cost: float | None, ctx: RequestContext
) -> dict[str, str]:
    h = {
        "x-routelab-model": model,
        "x-routelab-reason": reason,
        "x-routelab-request-id": ctx.request_id,
        "x-routelab-attempts": str(ctx.attempts),
    }
    if ctx.arm != "none":
        h["x-routelab-arm"] = ctx.arm
    if choice is not None:
        h["x-routelab-choice"] = choice
    if cost is not None:
        h["x-routelab-cost-usd"] = f"{cost:.8f}"
    return h


async def chat(request: Request) -> Response:
    """``POST /v1/chat/completions``: route (or pass through), forward, fail over, answer."""
    st: ProxyState = request.app.state.proxy
    # The deadline counts from the request's arrival: reading its body and routing it spend the same budget.
    deadline = time.monotonic() + st.config.request_deadline_s
    ctx = RequestContext(route="", category=request.headers.get("x-routelab-category") or None)
    if not st.authorised(request):
        return _unauthorised(st)
    try:
        body = parse_json_body(await _read_body(request, st))
        name, stream = check_chat_request(body)
        ctx.route, ctx.stream = name, stream
        await _plan(request, st, body, ctx)
    except ClientRequestError as exc:
        if exc.status == 400:
            st.count("client_errors", exc.code or "invalid_request")
        return exc.response()
    except ClientDisconnect:
        return Response(status_code=499)  # nobody is listening; nothing is sent
    return await _forward(st, body, ctx, deadline)


async def _plan(request: Request, st: ProxyState, body: dict, ctx: RequestContext) -> None:
    """Fill in ``ctx``: the serving policy's choice and the models to try (routed names), or the one model of a
    direct or pass-through request."""
    name = ctx.route
    if name in st.config.route_names:
        prompt = prompt_of(body["messages"])
        if prompt is None:
            raise ClientRequestError("'messages' needs a user message (its text is what the router routes on)",
                                     "messages")
        user = body.get("user")
        ctx.prompt = prompt
        if st.wants_request_messages:  # shadow grading re-sends them to the reference model
            ctx.messages = body["messages"]
            ctx.expected = request.headers.get("x-routelab-expected") or None
        sticky = st.config.section("rollout").sticky_header  # x-routelab-session unless [rollout] names another
        ctx.session = request.headers.get(sticky) or (user if isinstance(user, str) and user else None)
        ctx.client_key_id = st.client_key_id(request)
        await policy.decide(st, ctx)
        return
    ctx.client_key_id = st.client_key_id(request)
    model = name if name in st.config.upstreams else st.by_upstream_name.get(name)
    if model is not None:
        ctx.candidates, ctx.decided_by = [model], "direct"
        return
    if st.config.passthrough_upstream is not None:  # an unknown name goes, unchanged, to the default upstream
        ctx.candidates, ctx.rename, ctx.decided_by = [st.config.passthrough_upstream], False, "passthrough"
        return
    raise ClientRequestError(
        f"model {name!r} is neither routed ({', '.join(st.config.route_names)}) nor one of "
        f"this proxy's models ({', '.join(st.config.upstreams)}); set passthrough_upstream in [proxy] of "
        "upstreams.toml to send other names to one upstream",
        "model",
        status=404,
        code="model_not_found",
    )


async def _forward(st: ProxyState, body: dict, ctx: RequestContext, deadline: float) -> Response:
    cfg = st.config
    choice, candidates = ctx.choice, ctx.candidates
    now = time.monotonic()
    live = [m for m in candidates if not st.is_open(m, now)]
    # When every candidate is cooling down, probe them in order with one attempt each rather than refuse.
    plan = [(m, 1 + cfg.upstreams[m].retries) for m in live] or [(m, 1) for m in candidates]
    failures: list[str] = []
    waited = 0.0
    out_of_time = False
    for model, attempts in plan:
        if time.monotonic() >= deadline:
            break
        t_call = time.perf_counter()
        try:
            resp, w = await st.upstreams.call(model, body, attempts, ctx.stream, deadline, rename=ctx.rename)
        except UpstreamFailed as exc:
            # The failed upstream's attempts and backoffs are upstream time, not time the proxy added.
            waited += time.perf_counter() - t_call
            ctx.attempts += exc.attempts
            failures.append(st.scrub(str(exc)))
            out_of_time |= exc.kind == "deadline"
            if exc.kind != "deadline":  # running out of this request's time says nothing about the upstream
                st.upstreams.trip(model)
            st.upstreams.warn_failed(model, st.scrub(exc.why),
                                     "trying the next model" if model != plan[-1][0] else "no model left")
            continue
        waited += w
        ctx.attempts += resp.attempts
        if choice is None:
            reason = "passthrough"
        elif model == choice:
            reason = "routed"
        else:
            reason = f"fallback from {choice}"
        ctx.answered_by, ctx.reason, ctx.status = model, reason, resp.status
        st.count("requests", reason.split(" ")[0])
        st.count("answered", model)
        if resp.status != 200:  # a client error from the upstream: forward it, scrubbed
            st.count("upstream_client_errors", model)
            st.metrics.observe_added(time.perf_counter() - ctx.t_start - waited)
            _finish(st, ctx)
            return _forwarded_error(
                st, model, resp.status, resp.content, _reply_headers(model, choice, reason, None, ctx)
            )
        if resp.stream is not None:
            st.metrics.observe_added(time.perf_counter() - ctx.t_start - waited)

            def on_usage(usage: object, model: str = model) -> bytes | None:
                cost = st.cost_of(model, usage)
                ctx.usage, ctx.cost_usd = valid_usage(usage), cost
                # Headers left before the usage arrived: the cost goes in an SSE comment after the last event
                # (SSE clients, the OpenAI SDK's included, skip comment lines).
                return None if cost is None else f": x-routelab-cost-usd {cost:.8f}\n\n".encode()

            ctx.latency_s = ctx.elapsed()
            return StreamingResponse(
                _relay_then_finish(st, ctx, st.upstreams.relay(model, resp, on_usage, deadline)),
                status_code=200,
                headers=_reply_headers(model, choice, reason, None, ctx),
                media_type=resp.content_type or "text/event-stream",
                background=BackgroundTask(resp.stream.release),
            )
        usage = resp.parsed.get("usage")
        cost = st.cost_of(model, usage)
        ctx.usage, ctx.cost_usd, ctx.answer_text = valid_usage(usage), cost, answer_text(resp.parsed)
        st.metrics.observe_added(time.perf_counter() - ctx.t_start - waited)
        log.info("%s -> %s (%s) %.1f ms", ctx.route, model, reason, 1000 * ctx.elapsed())
        _finish(st, ctx)
        return Response(
            st.scrubber.bytes(resp.content),
            status_code=200,
            media_type="application/json",
            headers=_reply_headers(model, choice, reason, cost, ctx),
        )
    tried = "; ".join(failures) or "no upstream was tried"
    headers = {"x-routelab-reason": "failed", "x-routelab-request-id": ctx.request_id,
               **({"x-routelab-choice": choice} if choice else {})}
    ctx.error = tried
    if out_of_time or time.monotonic() >= deadline:
        st.count("requests", "deadline")
        ctx.reason, ctx.status = "deadline", 504
        _finish(st, ctx)
        return openai_error(
            504,
            f"no answer within the request deadline of {cfg.request_deadline_s:g} s (request_deadline_s); "
            f"tried: {tried}",
            "upstream_error",
            "deadline_exceeded",
            headers,
        )
    st.count("requests", "failed")
    ctx.reason, ctx.status = "failed", 502
    _finish(st, ctx)
    return openai_error(502, "every upstream failed: " + tried, "upstream_error", "upstream_failed", headers)


def _finish(st: ProxyState, ctx: RequestContext) -> None:
    if ctx.latency_s is None:
        ctx.latency_s = ctx.elapsed()
    if st.finishers:
        st.finish(ctx)


async def _relay_then_finish(st: ProxyState, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Relay a stream; when it is over (done, broken, or the client left), finish the request once.

    When a feature keeps answer texts (the decision log's ``store_text``, shadow grading), the events'
    ``delta.content`` pieces are gathered as they pass, up to that feature's cap, and become ``ctx.answer_text``
    before the finishers run; otherwise nothing is parsed (:mod:`routers.export.proxy.stream_text`).
    """
    cap = text_cap_wanted(st)
    gather = StreamText(cap) if cap else None
    try:
        async for chunk in chunks:
            yield chunk
            if gather is not None and not gather.full:  # after the client has the bytes: no added latency
                gather.feed(chunk)
    finally:
        if gather is not None:
            ctx.answer_text = gather.text()
            # A whole answer (ended with [DONE], nothing cut) can be shadow-graded like a non-streamed one.
            ctx.extra["stream_text_complete"] = gather.complete_text() is not None
        _finish(st, ctx)



def _forwarded_error(st: ProxyState, model: str, status: int, content: bytes, headers: dict[str, str]) -> Response:
    """An upstream's 4xx, scrubbed: as it came when it is an OpenAI-shaped error, else wrapped in that shape."""
    content = st.scrubber.bytes(content)
    try:
        err = json.loads(content).get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return Response(content, status_code=status, media_type="application/json", headers=headers)
    except (ValueError, RecursionError, AttributeError):
        pass
    text = content[:200].decode("utf-8", "replace").strip()
    return openai_error(
        status, f"upstream {model} refused the request (HTTP {status}): {text!r}", "invalid_request_error",
        f"upstream_{status}", headers,
    )


async def models(request: Request) -> Response:
    """``GET /v1/models``: the routed names, then the folder's models."""
    st: ProxyState = request.app.state.proxy
    if not st.authorised(request):
        return _unauthorised(st)
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "routelab-router"} for n in st.config.route_names]
    data += [
        {"id": m, "object": "model", "created": 0, "owned_by": st.exported.provider(m)} for m in st.config.upstreams
    ]
    return JSONResponse({"object": "list", "data": data})


async def healthz(request: Request) -> Response:
    """``GET /healthz`` (no auth): ``ok``, ``degraded`` (some upstreams cooling down or missing their key, or a
    feature's section, e.g. ``state``, says ``degraded``) or ``down`` (none can answer), with each upstream's state
    and the features' sections. ``down`` answers 503 so load balancers see it."""
    st: ProxyState = request.app.state.proxy
    ups = st.upstream_states()
    able = sum(u["state"] == "up" for u in ups.values())
    status = "ok" if able == len(ups) else ("degraded" if able else "down")
    body = {"status": status, "router": st.exported.manifest["router"]["name"], "lam": st.exported.lam,
            "upstreams": ups}
    for name, section in st.health_sections.items():  # features: shared state, decision log, ...
        body[name] = section()
        if status == "ok" and isinstance(body[name], dict) and body[name].get("status") == "degraded":
            body["status"] = status = "degraded"
    return JSONResponse(body, status_code=503 if status == "down" else 200)


def _feedback_refusal(request: Request, *, logged: bool = False) -> Response | None:
    """The 401/404 answer to a feedback request that cannot be taken, or None. With ``logged``, a non-adaptive
    export with a decision log takes feedback too (to log it, for ``routelab logs to-outcomes``)."""
    st: ProxyState = request.app.state.proxy
    if not st.authorised(request):
        return _unauthorised(st)
    if not st.exported.adaptive and not (logged and getattr(st, "decision_log", None) is not None):
        return openai_error(
            404,
            f"this export ({st.exported.manifest['router']['name']!r}) is not adaptive: feedback is "
            "accepted only by an export of an adaptive router"
            + (", or by a proxy with a decision log ([log] in upstreams.toml), which logs it" if logged else ""),
            code="not_adaptive",
        )
    return None


async def feedback(request: Request) -> Response:
    """``POST /v1/feedback`` ``{"category", "model", "score", "request_id"}``: count one answer's quality.

    ``request_id`` (optional) is the answer's ``x-routelab-request-id`` header. With a decision log, each accepted
    feedback is also written to it as a :class:`~evals.production.records.FeedbackRecord` (queued, never waited
    for), which ``routelab logs to-outcomes`` joins to the request's decision through that id. An export that is
    not adaptive takes feedback only with a decision log: it is logged, not counted (``"counted": false``).
    """
    st: ProxyState = request.app.state.proxy
    refused = _feedback_refusal(request, logged=True)
    if refused is not None:
        return refused
    try:
        fb = parse_json_body(await _read_body(request, st), "feedback")
        category, model, score = fb.get("category"), fb["model"], fb["score"]
    except KeyError:
        return openai_error(400, 'feedback must be a JSON object {"category": str, "model": str, "score": number}')
    except ClientRequestError as exc:
        if exc.status != 400:
            return exc.response()
        return openai_error(
            400, f'feedback must be a JSON object {{"category": str, "model": str, "score": number}} ({exc.message})'
        )
    if not isinstance(model, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
        return openai_error(400, "feedback 'model' must be a string and 'score' a number", param="score")
    request_id = fb.get("request_id")
    if request_id is not None and not valid_request_id(request_id):  # refused before anything is counted
        return openai_error(
            400, "feedback 'request_id' must be the answer's x-routelab-request-id: a string of printable ASCII "
                 f"without spaces, 1 to {MAX_REQUEST_ID_CHARS} characters", param="request_id",
        )
    counted = st.exported.adaptive
    try:
        if not counted:  # a non-adaptive export with a log: checked as the adaptive state would, then only logged
            check_feedback(model, score, st.exported.models)
        elif st.feedback_sink is not None:  # shared state: counted on every replica
            await st.feedback_sink(None if category is None else str(category), model, score)
        else:
            st.exported.state.feedback(None if category is None else str(category), model, score)
    except ValueError as exc:  # names the problem: the unknown model (listing the models) or the bad score
        return openai_error(400, str(exc))
    st.count("feedback", model)
    writer = getattr(st, "decision_log", None)
    if writer is not None:
        try:
            writer.write(FeedbackRecord(time=time.time(), model=model, score=float(score), request_id=request_id,
                                        category=None if category is None else str(category)))
        except RecordError as exc:  # counted already; only its log line is lost
            log.warning("feedback not logged: %s", exc)
    return JSONResponse({"ok": True} if counted else {"ok": True, "counted": False})


async def feedback_state(request: Request) -> Response:
    """``GET``/``PUT /v1/feedback/state``: read or replace this worker's adaptive counts.

    So an operator can save the counts before a restart and restore them, or copy one worker's counts to the
    others (each worker learns only from the feedback it receives). With ``[state] url`` the counts are shared:
    a PUT replaces them on every replica.
    """
    st: ProxyState = request.app.state.proxy
    refused = _feedback_refusal(request)
    if refused is not None:
        return refused
    if request.method == "GET":
        return JSONResponse(st.exported.state.get_evidence())
    try:
        state = parse_json_body(await _read_body(request, st), "feedback state")  # depth checked first
    except ClientRequestError as exc:
        return exc.response()
    try:
        if st.evidence_sink is not None:  # shared state: replaced on every replica
            await st.evidence_sink(state)
        else:
            st.exported.state.set_evidence(state)
    except ValueError as exc:  # JSON errors included; nothing changed
        return openai_error(400, f"feedback state not accepted: {exc}")
    st.count("feedback_state_set", "all")
    return JSONResponse({"ok": True})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text."""
    st: ProxyState = request.app.state.proxy
    if not st.authorised(request):
        return _unauthorised(st)
    now = time.monotonic()
    text = st.metrics.render(st.config.upstreams, lambda m: not st.is_open(m, now))
    text += "".join(section() for section in st.metrics_sections)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
