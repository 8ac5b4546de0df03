"""Shared pieces of the proxy tests: an export folder, clients, and a scripted misbehaving upstream.

The scripted upstream is a real HTTP server on loopback (Starlette under uvicorn) that answers each request
with the next behaviour of its script (the last one repeats), for faults the replay server does not make
precisely: huge bodies, redirects, broken usage, echoed keys, streams that break at a chosen point.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from evals.serving import build_replay_app
from routers import make_router
from routers.export import export_router
from routers.export.proxy import ProxyServer

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, point_upstreams, small_table  # noqa: E402

__all__ = [
    "CLIENT_KEY",
    "ENV",
    "LAM",
    "UPSTREAM_KEY",
    "ScriptedUpstream",
    "chat",
    "client",
    "completion",
    "make_folder",
    "metrics_of",
    "small_table",
]

CLIENT_KEY = "client-key-123456"
UPSTREAM_KEY = "sk-upstream-SECRET-9f8e7d6c5b4a"
ENV = {"ROUTELAB_PROXY_KEYS": CLIENT_KEY, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
LAM = 0.05


def client(base_url: str, key: str | None = CLIENT_KEY, timeout: float = 30) -> httpx.Client:
    """An httpx client for the proxy (bearer key set)."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, transport=transport, timeout=timeout)


def chat(c: httpx.Client, prompt: str, model: str = "router", **extra) -> httpx.Response:
    """One chat request with a single user message."""
    return c.post(
        "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    )


def metrics_of(c: httpx.Client, proxy_base_url: str) -> str:
    """The proxy's /metrics text."""
    return c.get(proxy_base_url.replace("/v1", "/metrics")).text


def make_folder(table, replay_url: str, tmp_path: Path, **point) -> Path:
    """A knn export of ``table`` whose upstreams all point at ``replay_url``."""
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)
    folder = export_router(router, tmp_path / "export", lam=LAM, prices=PRICES)
    point_upstreams(folder, {m: replay_url for m in table.models}, **point)
    return folder


def set_proxy_options(folder: Path, **options) -> None:
    """Set keys of the ``[proxy]`` section of a folder's upstreams.toml (what an owner does)."""
    path = folder / "upstreams.toml"
    lines = path.read_text().splitlines()
    out, in_proxy, done = [], False, set()
    for line in lines:
        if line.startswith("["):
            if in_proxy:
                out += [f"{k} = {json.dumps(v)}" for k, v in options.items() if k not in done]
            in_proxy = line.strip() == "[proxy]"
        key = line.split("=")[0].strip()
        if in_proxy and key in options:
            out.append(f"{key} = {json.dumps(options[key])}")
            done.add(key)
            continue
        out.append(line)
    path.write_text("\n".join(out) + "\n")


def completion(model: str, text: str, usage: str = '{"prompt_tokens": 10, "completion_tokens": 5}') -> bytes:
    """A chat completion's JSON text (usage given as raw JSON, so it can be broken on purpose)."""
    return (
        '{"id": "chatcmpl-x", "object": "chat.completion", "model": %s, "choices": [{"index": 0, "message": '
        '{"role": "assistant", "content": %s}, "finish_reason": "stop"}], "usage": %s}'
        % (json.dumps(model), json.dumps(text), usage)
    ).encode()


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chunk(model: str, text: str) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


class ScriptedUpstream:
    """An OpenAI-compatible upstream on loopback whose n-th answer follows ``script[n]`` (the last repeats).

    Behaviours: ``ok``, ``malformed`` (200, not JSON), ``truncated`` (200, JSON cut off), ``not_completion``
    (200, a JSON object without ``choices``), ``huge`` (200 with a declared length over any cap),
    ``huge_chunked`` (a 4 MiB chunked body, no declared length), ``redirect`` (307 to ``redirect_to``),
    ``usage_negative``, ``usage_inf`` (usage of 1e400 tokens), ``echo_key`` (a 200 quoting the Authorization
    header it got),
    ``stream_ok``, ``stream_empty`` (a 200 stream that ends at once), ``stream_break`` (two events, then
    the connection breaks), ``stream_no_done`` (events, then a clean end without ``[DONE]``), ``stream_slow``
    (events, then a pause of ``slow_s`` before the end), ``slow`` (answers ``ok`` after ``slow_s`` seconds),
    ``status_<code>`` (an OpenAI-shaped error with that status), ``html_404`` (a 404 page in HTML).
    """

    def __init__(self, script: list[str], *, redirect_to: str = "", slow_s: float = 5.0) -> None:
        self.script, self.redirect_to, self.slow_s = list(script), redirect_to, slow_s
        self.requests: list[dict] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._answer, methods=["POST"])])
        self.server = None

    def __enter__(self) -> ScriptedUpstream:
        from routers.export.proxy import ProxyServer

        self.server = ProxyServer(self.app).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return self.server.base_url

    async def _answer(self, request: Request) -> Response:
        body = json.loads(await request.body())
        n = len(self.requests)
        self.requests.append({"body": body, "authorization": request.headers.get("authorization", "")})
        kind = self.script[min(n, len(self.script) - 1)]
        model = body.get("model", "?")
        js = "application/json"
        if kind == "ok":
            return Response(completion(model, f"{model} answers"), media_type=js)
        if kind == "slow":
            await asyncio.sleep(self.slow_s)
            return Response(completion(model, f"{model} answers slowly"), media_type=js)
        if kind == "malformed":
            return Response(b"<html>502 Bad Gateway</html>", media_type=js)
        if kind == "truncated":
            return Response(completion(model, "cut")[:40], media_type=js)
        if kind == "not_completion":
            return Response(b'{"object": "chat.completion", "message": "no choices here"}', media_type=js)
        if kind == "huge":
            return Response(b"x" * (2 * 1024 * 1024), media_type=js)
        if kind == "huge_chunked":
            async def chunked():  # 4 MiB without a declared length; yields to the loop so a hang-up stops it
                for _ in range(64):
                    await asyncio.sleep(0)
                    yield b"x" * 65536

            return StreamingResponse(chunked(), media_type=js)
        if kind == "redirect":
            return RedirectResponse(self.redirect_to, status_code=307)
        if kind == "usage_negative":
            return Response(completion(model, "neg", '{"prompt_tokens": -200000, "completion_tokens": 5}'),
                            media_type=js)
        if kind == "usage_inf":
            return Response(completion(model, "inf", '{"prompt_tokens": 1e400, "completion_tokens": 5}'),
                            media_type=js)
        if kind == "echo_key":
            text = f"you sent {request.headers.get('authorization', '')}"
            return Response(completion(model, text), media_type=js)
        if kind.startswith("status_"):
            return Response(b'{"error": {"message": "scripted"}}', status_code=int(kind[7:]), media_type=js)
        if kind == "html_404":
            return Response(b"<html><body>404 Not Found</body></html>", status_code=404, media_type="text/html")
        if kind.startswith("stream"):
            return StreamingResponse(self._stream(kind, model), media_type="text/event-stream")
        raise AssertionError(f"unknown behaviour {kind}")

    async def _stream(self, kind: str, model: str):
        if kind == "stream_empty":
            return
        yield _event(_chunk(model, f"{model} "))
        yield _event(_chunk(model, "streams"))
        if kind == "stream_break":
            await asyncio.sleep(0.05)
            raise ConnectionResetError("scripted upstream: the stream breaks here")
        if kind == "stream_no_done":
            return
        if kind == "stream_slow":
            await asyncio.sleep(self.slow_s)
        yield b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def table():
    """The small three-model table the proxy tests route on (import this fixture into a test module)."""
    return small_table()


@pytest.fixture(scope="module")
def replay(table):
    """The replay server on loopback, serving ``table``'s recorded answers (one per test module)."""
    with ProxyServer(build_replay_app(table)) as srv:
        yield srv
