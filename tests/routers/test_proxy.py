"""The OpenAI-compatible proxy: routing headers, passthrough, streaming, auth, keys, fallback, cooldown."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from evals.exceptions import ConfigError
from evals.serving import build_replay_app
from routers import Queries, make_router
from routers.export import export_router, load_exported
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, point_upstreams, small_table  # noqa: E402

CLIENT_KEY = "client-key-123"
UPSTREAM_KEY = "sk-upstream-SECRET-9f8e7d6c5b4a"
ENV = {"ROUTELAB_PROXY_KEYS": f"other-key, {CLIENT_KEY}", "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
LAM = 0.05


def client(base_url: str, key: str | None = CLIENT_KEY) -> httpx.Client:
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, transport=transport, timeout=30)


def chat(c: httpx.Client, prompt: str, model: str = "router", **extra) -> httpx.Response:
    return c.post(
        "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    )


@pytest.fixture(scope="module")
def table():
    return small_table()


@pytest.fixture(scope="module")
def router(table):
    return make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)


@pytest.fixture(scope="module")
def replay(table):
    with ProxyServer(build_replay_app(table)) as srv:
        yield srv


@pytest.fixture()
def folder(router, replay, table, tmp_path):
    f = export_router(router, tmp_path / "export", lam=LAM, prices=PRICES)
    point_upstreams(f, {m: replay.base_url for m in table.models})
    return f


@pytest.fixture()
def proxy(folder):
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as srv:
        yield srv


def test_routed_requests_carry_the_decision_and_cost(proxy, router, table):
    with client(proxy.base_url) as c:
        for prompt in table.prompts[::7]:
            r = chat(c, prompt)
            assert r.status_code == 200, r.text
            expected = router.route([prompt], LAM)[0]
            assert r.headers["x-routelab-model"] == expected == r.headers["x-routelab-choice"]
            assert r.headers["x-routelab-reason"] == "routed"
            body = r.json()
            assert body["model"] == expected and expected in body["choices"][0]["message"]["content"]
            usage, price = body["usage"], PRICES[expected]
            cost = (
                usage["prompt_tokens"] * price["input_per_1m"]
                + usage["completion_tokens"] * price["output_per_1m"]
            ) / 1e6
            assert float(r.headers["x-routelab-cost-usd"]) == pytest.approx(cost, rel=1e-6)


def test_category_header_reaches_the_router(folder, replay, table):
    router = make_router("category").fit(table)
    f = export_router(router, folder.parent / "cat", lam=LAM, prices=PRICES)
    point_upstreams(f, {m: replay.base_url for m in table.models})
    with ProxyServer(build_proxy_app(f, environ=ENV)) as srv, client(srv.base_url) as c:
        for prompt, cat in zip(table.prompts[::10], table.categories[::10], strict=True):
            r = c.post(
                "/chat/completions",
                headers={"x-routelab-category": str(cat)},
                json={"model": "router", "messages": [{"role": "user", "content": prompt}]},
            )
            assert r.headers["x-routelab-choice"] == router.route(Queries.of([prompt], [str(cat)]), LAM)[0]
            # Without the header the category router cannot tell the subject: it answers for "unknown".
            r = chat(c, prompt)
            assert r.headers["x-routelab-choice"] == router.route([prompt], LAM)[0]


def test_other_model_names_pass_through_and_unknown_ones_are_404(proxy, table):
    with client(proxy.base_url) as c:
        r = chat(c, table.prompts[0], model="big")
        assert r.status_code == 200 and r.headers["x-routelab-reason"] == "passthrough"
        assert r.headers["x-routelab-model"] == "big" and "x-routelab-choice" not in r.headers
        assert r.json()["model"] == "big"
        r = chat(c, table.prompts[0], model="gpt-9")
        assert r.status_code == 404 and "neither routed" in r.json()["error"]["message"]
        r = c.post("/chat/completions", content=b"{not json")
        assert r.status_code == 400
        r = c.post(
            "/chat/completions", json={"model": "router", "messages": [{"role": "system", "content": "x"}]}
        )
        assert r.status_code == 400 and "user message" in r.json()["error"]["message"]


def test_streaming_passes_through(proxy, router, table):
    prompt = table.prompts[3]
    with client(proxy.base_url) as c:
        with c.stream(
            "POST",
            "/chat/completions",
            json={
                "model": "router",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": prompt}],
            },
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-routelab-model"] == router.route([prompt], LAM)[0]
            every = [ln for ln in r.iter_lines() if ln]
        measured = chat(c, prompt).headers["x-routelab-cost-usd"]  # the same answer, not streamed
    lines = [ln for ln in every if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    # The usage came after the headers, so its cost follows the last event as an SSE comment.
    assert every[-1] == f": x-routelab-cost-usd {measured}" and float(measured) > 0
    text = "".join(
        json.loads(ln[6:])["choices"][0]["delta"].get("content", "")
        for ln in lines[:-1]
        if json.loads(ln[6:])["choices"]
    )
    assert text.startswith(router.route([prompt], LAM)[0] + " says")


def test_auth_is_required_unless_explicitly_disabled(folder, table):
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as srv:
        with client(srv.base_url, key=None) as c:
            r = chat(c, table.prompts[0])
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert c.get("/models").status_code == 401
            assert c.get(srv.base_url.replace("/v1", "/metrics")).status_code == 401
            assert c.get(srv.base_url.replace("/v1", "/healthz")).status_code == 200
        with client(srv.base_url, key="wrong-key") as c:
            assert chat(c, table.prompts[0]).status_code == 401
        with client(srv.base_url, key="other-key") as c:
            assert chat(c, table.prompts[0]).status_code == 200
    with pytest.raises(ConfigError, match="--no-auth"):
        build_proxy_app(folder, environ={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    with (
        ProxyServer(build_proxy_app(folder, environ={}, no_auth=True)) as srv,
        client(srv.base_url, key=None) as c,
    ):
        assert chat(c, table.prompts[0]).status_code == 200


def _echo_upstream(status: int):
    """An upstream that echoes the Authorization header it got in its error body (as some providers do)."""

    async def handler(request):
        auth = request.headers.get("authorization", "")
        return JSONResponse(
            {"error": {"message": f"Incorrect API key provided: {auth}", "type": "x"}}, status_code=status
        )

    return Starlette(routes=[Route("/v1/chat/completions", handler, methods=["POST"])])


def test_upstream_keys_never_appear_in_responses_or_logs(folder, table, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with ProxyServer(_echo_upstream(401)) as bad_auth, ProxyServer(_echo_upstream(400)) as bad_req:
        point_upstreams(
            folder, {"cheap": bad_auth.base_url, "mid": bad_auth.base_url, "big": bad_req.base_url}
        )
        with (
            ProxyServer(build_proxy_app(folder, environ=ENV), log_level="debug") as srv,
            client(srv.base_url) as c,
        ):
            seen = []
            for prompt in table.prompts[:4]:
                r = chat(c, prompt, model="cheap")  # upstream 401 quoting the key -> not forwarded
                assert r.status_code == 502 and "rejected its key" in r.text
                seen.append(r.text + str(r.headers))
            r = chat(c, table.prompts[0], model="big")  # upstream 400 quoting the key -> forwarded, scrubbed
            assert r.status_code == 400 and "Incorrect API key provided: Bearer ***" in r.text
            seen.append(r.text + str(r.headers))
            r = chat(c, table.prompts[0])  # routed: every upstream fails or refuses
            seen.append(r.text + str(r.headers))
            seen.append(c.get(srv.base_url.replace("/v1", "/metrics")).text)
            seen.append(c.get(srv.base_url.replace("/v1", "/healthz")).text)
            seen.append(c.get("/models").text)
    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    assert "rejected its key" in logs  # the failures were logged ...
    for text in seen + [logs]:
        assert UPSTREAM_KEY not in text  # ... but never the key
        assert UPSTREAM_KEY[10:22] not in text


def _failing_upstream(kind: str, table):
    if kind == "closed-port":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there: connection refused
        return None, f"http://127.0.0.1:{port}/v1"
    app = build_replay_app(table, fault_rate=1.0, faults=(kind,), hang_s=5.0)
    srv = ProxyServer(app).start()
    return srv, srv.base_url


@pytest.mark.parametrize("kind", ["timeout", "500", "closed-port"])
def test_fallback_answers_everything_and_cooldown_skips_the_dead_upstream(kind, folder, replay, table):
    exported = load_exported(folder)
    choices = exported.route(list(table.prompts))
    dead = max(set(choices), key=choices.count)  # the model the router picks most often goes down
    prompts = [p for p, m in zip(table.prompts, choices, strict=True) if m == dead][:12]
    srv, url = _failing_upstream(kind, table)
    try:
        urls = {m: replay.base_url for m in table.models} | {dead: url}
        point_upstreams(folder, urls, timeout_s=0.4, retries=2, cooldown_s=60)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            times, direct = [], []
            for p in prompts:
                t0 = time.perf_counter()
                r = chat(c, p)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                assert r.headers["x-routelab-choice"] == dead
                assert r.headers["x-routelab-reason"] == f"fallback from {dead}"
                fallback = r.headers["x-routelab-model"]
                assert fallback != dead and r.json()["model"] == fallback
                # Baseline measured alongside: the same prompt sent straight to the fallback model.
                t0 = time.perf_counter()
                assert chat(c, p, model=fallback).status_code == 200
                direct.append(time.perf_counter() - t0)
            first = times[0]
            later, base = float(np.median(times[1:])), float(np.median(direct[1:]))
            # The first request pays the retry budget (3 attempts: 0.4 s timeouts, or backoff >= 0.075 s) ...
            assert first >= (1.2 if kind == "timeout" else 0.07)
            # ... later ones go straight to the fallback: no more time than asking the fallback directly.
            assert later < base + 0.03, f"later {later:.3f} s, direct {base:.3f} s, first {first:.3f} s"
            if srv is not None:
                assert (
                    srv.app.stats()["requests"] == 3
                )  # the dead upstream saw only the first request's attempts
            metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
            assert f'routelab_requests_total{{reason="fallback"}} {len(prompts)}' in metrics
            assert f'routelab_upstream_up{{model="{dead}"}} 0' in metrics
            assert f'routelab_router_choice_total{{model="{dead}"}} {len(prompts)}' in metrics
    finally:
        if srv is not None:
            srv.stop()


def test_cooldown_expires_and_the_upstream_is_probed_once(folder, replay, table):
    exported = load_exported(folder)
    choices = exported.route(list(table.prompts))
    dead = max(set(choices), key=choices.count)
    prompts = [p for p, m in zip(table.prompts, choices, strict=True) if m == dead]
    srv, url = _failing_upstream("500", table)
    try:
        point_upstreams(
            folder, {m: replay.base_url for m in table.models} | {dead: url}, retries=2, cooldown_s=0.3
        )
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            assert chat(c, prompts[0]).status_code == 200
            assert srv.app.stats()["requests"] == 3
            assert chat(c, prompts[1]).status_code == 200
            assert srv.app.stats()["requests"] == 3  # cooling down: skipped
            time.sleep(0.35)
            r = chat(c, prompts[2])
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {dead}"
            assert srv.app.stats()["requests"] == 6  # after the cooldown: tried again with its retries
    finally:
        srv.stop()


def test_every_upstream_down_gives_a_clear_502(folder, table):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    point_upstreams(folder, {m: url for m in table.models}, retries=0)
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
        r = chat(c, table.prompts[0])
        assert r.status_code == 502 and r.headers["x-routelab-reason"] == "failed"
        msg = r.json()["error"]["message"]
        assert all(m in msg for m in table.models) and "connection failed" in msg
        r = chat(c, table.prompts[0])  # all cooling down: probed once each, still a clear error
        assert r.status_code == 502


def test_models_healthz_metrics_and_feedback(proxy, table):
    with client(proxy.base_url) as c:
        ids = [m["id"] for m in c.get("/models").json()["data"]]
        assert ids == ["router", *table.models]
        health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
        assert (
            health["status"] == "ok"
            and health["router"] == "knn"
            and set(health["upstreams"]) == set(table.models)
        )
        for p in table.prompts[:5]:
            chat(c, p)
        chat(c, table.prompts[0], model="mid")
        metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
        assert 'routelab_requests_total{reason="routed"} 5' in metrics
        assert 'routelab_requests_total{reason="passthrough"} 1' in metrics
        assert "routelab_added_latency_seconds_count 6" in metrics
        assert 'routelab_cost_usd_total{model="mid"}' in metrics
        r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 1.0})
        assert r.status_code == 404 and "not adaptive" in r.json()["error"]["message"]


def test_oversized_request_bodies_are_refused_before_routing(proxy):
    big = json.dumps({"model": "router", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]})
    with client(proxy.base_url) as c:
        r = c.post("/chat/completions", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert "8,388,608 bytes" in r.json()["error"]["message"] and "max_request_bytes" in r.json()["error"]["message"]

        def chunks():  # no content-length: the proxy stops reading at the limit
            for _ in range(10):
                yield b"x" * (1024 * 1024)

        r = c.post("/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
    assert 'routelab_requests_total{reason="too_large"} 2' in metrics


@pytest.mark.slow
def test_serve_with_two_workers_starts_both_and_answers(folder, table, tmp_path):
    """`routelab serve --workers 2`: uvicorn's process manager starts two workers on one port."""
    import subprocess

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ROUTELAB_SERVE_")}
    env.update(ENV)
    cmd = [sys.executable, "-m", "evals.cli", "serve", str(folder), "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd + ["--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(base.replace("/v1", "/healthz"), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "workers did not come up"
            time.sleep(0.3)
        workers = [
            int(c) for t in Path(f"/proc/{proc.pid}/task").iterdir() for c in (t / "children").read_text().split()
        ]
        # uvicorn's supervisor may also keep a resource-tracker child; at least two are serving workers.
        assert len(workers) >= 2
        with client(base) as c:
            answers = [chat(c, table.prompts[i]) for i in range(12)]
        assert all(r.status_code == 200 and r.headers["x-routelab-reason"] == "routed" for r in answers)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
