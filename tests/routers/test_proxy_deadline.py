"""One deadline per request, shared by its attempts and fallbacks, and a cap on fallback hops (issue 13, item 2)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from routers.export import load_exported
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import (  # noqa: E402
    ENV,
    ScriptedUpstream,
    chat,
    client,
    make_folder,
    metrics_of,
    set_proxy_options,  # noqa: E402
)


def test_slow_upstreams_get_a_504_at_the_deadline_naming_what_was_tried(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    set_proxy_options(folder, request_deadline_s=1.0)
    with ScriptedUpstream(["slow"], slow_s=30) as slow:
        # 60 s per attempt, 2 retries, 3 models: without a deadline this request could take 9 minutes.
        point_upstreams(folder, {m: slow.base_url for m in table.models}, timeout_s=60, retries=2)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            t0 = time.perf_counter()
            r = chat(c, table.prompts[0])
            took = time.perf_counter() - t0
            assert r.status_code == 504, r.text
            assert 1.0 <= took < 1.8, took
            err = r.json()["error"]
            assert err["code"] == "deadline_exceeded" and "1 s" in err["message"]
            chosen = r.headers["x-routelab-choice"]
            assert chosen in err["message"]  # names what was tried
            assert 'routelab_requests_total{reason="deadline"} 1' in metrics_of(c, proxy.base_url)
            # Running out of this request's time does not put the upstream in the penalty box.
            health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
            assert health["upstreams"][chosen]["state"] == "up"


def test_attempts_and_fallbacks_share_the_deadline(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    set_proxy_options(folder, request_deadline_s=1.5)
    with ScriptedUpstream(["slow"], slow_s=30) as slow:
        # Each upstream on its own would wait 0.6 s x 3 attempts: the deadline, not the sum, bounds the wait.
        point_upstreams(folder, {m: slow.base_url for m in table.models}, timeout_s=0.6, retries=2)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            t0 = time.perf_counter()
            r = chat(c, table.prompts[1])
            assert r.status_code == 504 and time.perf_counter() - t0 < 2.2
            assert 2 <= len(slow.requests) <= 4  # 0.6 s attempts until 1.5 s were spent, not 9 of them


def test_fallback_hops_are_capped(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    choices = load_exported(folder).route(list(table.prompts))
    prompt, chosen = next((p, m) for p, m in zip(table.prompts, choices, strict=True) if m != "big")
    with ScriptedUpstream(["status_503"]) as down:
        point_upstreams(folder, {m: down.base_url for m in table.models if m != "big"}, retries=0)
        set_proxy_options(folder, max_fallback_hops=0)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 502 and len(down.requests) == 1  # only the chosen model was tried
            assert r.json()["error"]["message"] == f"every upstream failed: {chosen}: HTTP 503"
        set_proxy_options(folder, max_fallback_hops=2)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 200 and r.headers["x-routelab-model"] == "big"


def test_a_stream_still_running_at_the_deadline_ends_with_an_error_event(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    set_proxy_options(folder, request_deadline_s=1.0)
    with ScriptedUpstream(["stream_slow"], slow_s=30) as slow:
        point_upstreams(folder, {"big": slow.base_url}, timeout_s=60)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            t0 = time.perf_counter()
            body = {"model": "big", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            with c.stream("POST", "/chat/completions", json=body) as r:
                assert r.status_code == 200
                lines = [ln for ln in r.iter_lines() if ln]
            assert time.perf_counter() - t0 < 1.8
            assert "streams" in lines[1]  # what arrived in time was relayed
            assert json.loads(lines[-1][len("data: "):])["error"]["code"] == "deadline_exceeded"
