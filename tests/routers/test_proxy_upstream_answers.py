"""Upstream answers are validated before they count (issue 13, item 1).

A 200 that is not a chat completion, a body over the cap, a redirect, a stream that ends before its first
event: each is a failed attempt (retried, then failed over) counted in /metrics by kind. A stream that breaks
after bytes reached the client ends with an OpenAI-style error event. Usage is priced only when it is
non-negative integer token counts; secrets echoed by an upstream are scrubbed from 200s too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evals.serving import build_replay_app
from routers.export import load_exported
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import (  # noqa: E402
    CLIENT_KEY,
    ENV,
    UPSTREAM_KEY,
    ScriptedUpstream,
    chat,
    client,
    make_folder,
    metrics_of,
    set_proxy_options,
)


@pytest.fixture()
def folder(table, replay, tmp_path):
    return make_folder(table, replay.base_url, tmp_path)


def _prompt_routed_to(folder, table, model: str | None = None) -> tuple[str, str]:
    """(a prompt, the model the router picks for it), for ``model`` if given, else the most picked model."""
    choices = load_exported(folder).route(list(table.prompts))
    target = model or max(set(choices), key=choices.count)
    return next(p for p, m in zip(table.prompts, choices, strict=True) if m == target), target


def _point(folder, table, replay, overrides: dict[str, str], **kw) -> None:
    point_upstreams(folder, {m: replay.base_url for m in table.models} | overrides, **kw)


@pytest.mark.parametrize("behaviour", ["malformed", "truncated", "not_completion"])
def test_invalid_upstream_200_is_retried_then_failed_over(behaviour, folder, table, replay):
    prompt, chosen = _prompt_routed_to(folder, table)
    with ScriptedUpstream([behaviour]) as bad:
        _point(folder, table, replay, {chosen: bad.base_url}, retries=2)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 200, r.text
            assert r.headers["x-routelab-reason"] == f"fallback from {chosen}"
            assert r.json()["choices"][0]["message"]["content"]  # a real completion, from the fallback
            assert len(bad.requests) == 3  # the first attempt and both retries
            assert r.headers["x-routelab-attempts"] == "4"  # three on the chosen model, one on the fallback
            kind = "malformed" if behaviour == "not_completion" else behaviour
            assert f'routelab_upstream_failures_total{{model="{chosen}",kind="{kind}"}} 3' in metrics_of(
                c, proxy.base_url
            )


def test_malformed_upstream_200_is_retried_and_the_retry_answers(folder, table, replay):
    prompt, chosen = _prompt_routed_to(folder, table)
    with ScriptedUpstream(["malformed", "ok"]) as flaky:
        _point(folder, table, replay, {chosen: flaky.base_url}, retries=1)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == "routed"
            assert r.json()["choices"][0]["message"]["content"] == f"{chosen} answers"
            assert len(flaky.requests) == 2
            assert r.headers["x-routelab-attempts"] == "2"


@pytest.mark.parametrize("fault", ["malformed", "drop"])
def test_replay_server_faults_never_reach_the_client_as_a_200(fault, folder, table, replay):
    """The real replay server's truncated-JSON 200s and mid-body drops are failures, failed over."""
    prompt, chosen = _prompt_routed_to(folder, table)
    with ProxyServer(build_replay_app(table, fault_rate=1.0, faults=(fault,))) as faulty:
        _point(folder, table, replay, {chosen: faulty.base_url}, retries=1)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {chosen}"
            assert json.loads(r.content)["choices"]
            kind = "truncated"  # both cut the JSON short: the replay's malformed body ends mid-object
            assert f'routelab_upstream_failures_total{{model="{chosen}",kind="{kind}"}} 2' in metrics_of(
                c, proxy.base_url
            )


@pytest.mark.slow
def test_oversized_upstream_bodies_are_refused_not_buffered(folder, table, replay):
    prompt, chosen = _prompt_routed_to(folder, table)
    set_proxy_options(folder, max_response_bytes=1024 * 1024)
    with ScriptedUpstream(["huge", "huge_chunked"]) as big:
        _point(folder, table, replay, {chosen: big.base_url}, retries=1)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)  # a 2 MiB declared body, then an endless chunked one: both over the 1 MiB cap
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {chosen}"
            assert len(r.content) < 10_000
            assert 'kind="too_large"} 2' in metrics_of(c, proxy.base_url)


def test_upstream_redirects_are_not_followed(folder, table, replay):
    prompt, chosen = _prompt_routed_to(folder, table)
    with ScriptedUpstream(["ok"]) as elsewhere, ScriptedUpstream(["redirect"]) as redirecting:
        redirecting.redirect_to = elsewhere.base_url + "/chat/completions"
        _point(folder, table, replay, {chosen: redirecting.base_url}, retries=2)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {chosen}"
            assert elsewhere.requests == []  # the prompt and the key never went where the redirect pointed
            assert len(redirecting.requests) == 1  # a redirect is not retried: it would redirect again
            assert f'model="{chosen}",kind="redirect"}} 1' in metrics_of(c, proxy.base_url)


@pytest.mark.parametrize("behaviour", ["usage_negative", "usage_inf"])
def test_invalid_usage_is_not_priced_and_is_counted(behaviour, folder, table, replay):
    with ScriptedUpstream([behaviour]) as odd:
        _point(folder, table, replay, {"big": odd.base_url})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, table.prompts[0], model="big")
            assert r.status_code == 200  # the answer itself is fine ...
            assert "x-routelab-cost-usd" not in r.headers  # ... but its usage is no bill
            metrics = metrics_of(c, proxy.base_url)
            assert 'routelab_invalid_usage_total{model="big"} 1' in metrics
            assert 'routelab_cost_usd_total{model="big"}' not in metrics
            assert "inf" not in metrics.split("routelab_cost_usd_total")[-1].split("# HELP")[0]


def test_keys_echoed_in_a_200_body_are_scrubbed(folder, table, replay):
    with ScriptedUpstream(["echo_key"]) as echo:
        _point(folder, table, replay, {"big": echo.base_url})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, table.prompts[0], model="big")
            assert r.status_code == 200
            assert echo.requests[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"  # it did receive the key
            assert r.json()["choices"][0]["message"]["content"] == "you sent Bearer ***"
            assert UPSTREAM_KEY not in r.text and CLIENT_KEY not in r.text


def _stream(c, prompt: str, model: str = "router"):
    with c.stream(
        "POST",
        "/chat/completions",
        json={"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]},
    ) as r:
        return r.status_code, dict(r.headers), [ln for ln in r.iter_lines() if ln]


def test_stream_that_ends_before_its_first_event_is_retried_then_failed_over(folder, table, replay):
    prompt, chosen = _prompt_routed_to(folder, table)
    with ScriptedUpstream(["stream_empty"]) as empty:
        _point(folder, table, replay, {chosen: empty.base_url}, retries=1)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            status, headers, lines = _stream(c, prompt)
            assert status == 200 and headers["x-routelab-reason"] == f"fallback from {chosen}"
            assert lines[-1] == "data: [DONE]" and not any('"error"' in ln for ln in lines)
            assert len(empty.requests) == 2
            assert f'model="{chosen}",kind="dropped_stream"}} 2' in metrics_of(c, proxy.base_url)


@pytest.mark.parametrize("behaviour", ["stream_break", "stream_no_done"])
def test_stream_broken_after_bytes_were_sent_ends_with_an_error_event(behaviour, folder, table, replay):
    with ScriptedUpstream([behaviour]) as breaking:
        _point(folder, table, replay, {"big": breaking.base_url})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            status, _, lines = _stream(c, table.prompts[0], model="big")
            assert status == 200
            assert lines[0].startswith("data: {") and "streams" in lines[1]  # what arrived was relayed ...
            assert "data: [DONE]" not in lines  # ... the stream is not passed off as complete ...
            error = json.loads(lines[-1][len("data: "):])["error"]  # ... it ends with an OpenAI error event
            assert error["code"] == "stream_interrupted" and error["type"] == "upstream_error"
            assert "big" in error["message"]
            assert 'model="big",kind="dropped_stream"} 1' in metrics_of(c, proxy.base_url)
            assert len(breaking.requests) == 1  # not retried: the client already had part of an answer


def test_a_valid_stream_still_passes_through_whole(folder, table, replay):
    with ScriptedUpstream(["stream_ok"]) as fine:
        _point(folder, table, replay, {"big": fine.base_url})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            status, _, lines = _stream(c, table.prompts[0], model="big")
            assert status == 200 and lines[-1] == "data: [DONE]"
            text = "".join(json.loads(ln[6:])["choices"][0]["delta"]["content"] for ln in lines[:-1])
            assert text == "big streams"


def test_upstream_client_errors_reach_the_client_openai_shaped(folder, table, replay):
    with ScriptedUpstream(["html_404", "status_422"]) as refusing:
        _point(folder, table, replay, {"big": refusing.base_url})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, table.prompts[0], model="big")  # an HTML page is wrapped in OpenAI's error shape
            assert r.status_code == 404 and r.headers["content-type"] == "application/json"
            err = r.json()["error"]
            assert err["code"] == "upstream_404" and "404 Not Found" in err["message"]
            r = chat(c, table.prompts[0], model="big")  # an OpenAI-shaped error passes as it came
            assert r.status_code == 422 and r.json() == {"error": {"message": "scripted"}}
            assert len(refusing.requests) == 2  # client errors are not retried


@pytest.mark.parametrize("status", [501, 505, 204])
def test_other_non_answers_are_retried_then_failed_over(status, folder, table, replay):
    prompt, chosen = _prompt_routed_to(folder, table)
    with ScriptedUpstream([f"status_{status}"]) as odd:
        _point(folder, table, replay, {chosen: odd.base_url}, retries=1)
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, prompt)
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {chosen}"
            assert len(odd.requests) == 2
            assert f'model="{chosen}",kind="http_{status}"}} 2' in metrics_of(c, proxy.base_url)


def test_a_failing_upstream_is_warned_about_once_per_interval_with_the_count_it_stands_for(folder, caplog,
                                                                                            monkeypatch):
    """An upstream failing every request must not write a log line per request (a flood, and event-loop time when
    the proxy is busiest): one warning per WARN_EVERY_S per upstream, the next one saying how many it stood for."""
    import logging

    from routers.export.proxy import upstream as upstream_mod
    from routers.export.proxy.metrics import Metrics
    from routers.export.proxy.upstream import WARN_EVERY_S, Scrubber, UpstreamClient

    client_ = UpstreamClient(load_exported(folder).proxy_config(), {}, Metrics(), Scrubber([]))
    now = [1000.0]
    monkeypatch.setattr(upstream_mod.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="routelab.proxy")
    models = list(client_.config.upstreams)
    for _ in range(50):  # 50 failures of one upstream within a second, 1 of another
        client_.warn_failed(models[0], "HTTP 503", "trying the next model")
        now[0] += 0.02
    client_.warn_failed(models[1], "timed out", "no model left")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith(f"upstream {models[0]} failed (HTTP 503)")
    assert "not logged" not in lines[0] and lines[1].startswith(f"upstream {models[1]} failed (timed out)")
    now[0] += WARN_EVERY_S
    client_.warn_failed(models[0], "HTTP 503", "trying the next model")
    assert len(caplog.records) == 3
    assert "(49 more failure(s) of this upstream in the last 11 s not logged)" in caplog.records[-1].getMessage()
