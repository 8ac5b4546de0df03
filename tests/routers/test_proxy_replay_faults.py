"""Every fault the real replay server injects, streamed and not: the proxy never answers a malformed 200.

Each answer through the proxy is either a valid completion (retried or failed over to a healthy upstream) or
an OpenAI-shaped error; a stream either ends with ``[DONE]`` or, when it broke after bytes reached the client,
with an OpenAI-style error event. Bad usage is never priced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evals.serving import FAULT_KINDS, build_replay_app
from routers.export import load_exported
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import ENV, client, make_folder, metrics_of, small_table  # noqa: E402

#: Faults that can only show after the first events reached the client (so the stream ends with an error event).
_AFTER_FIRST_EVENT = {"drop_mid_stream", "end_without_done"}
_BAD_USAGE = {"usage_negative", "usage_huge"}


@pytest.fixture(scope="module")
def table():
    return small_table()


@pytest.fixture(scope="module")
def healthy(table):
    with ProxyServer(build_replay_app(table)) as srv:
        yield srv


def _valid_completion(r) -> bool:
    body = json.loads(r.content)
    return isinstance(body, dict) and isinstance(body.get("choices"), list) and body["choices"]


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_no_replay_fault_reaches_the_client_as_a_malformed_answer(kind, table, healthy, tmp_path):
    folder = make_folder(table, healthy.base_url, tmp_path)
    choices = load_exported(folder).route(list(table.prompts))
    chosen = max(set(choices), key=choices.count)
    prompts = [p for p, m in zip(table.prompts, choices, strict=True) if m == chosen]
    with ProxyServer(build_replay_app(table, fault_rate=1.0, faults=(kind,), hang_s=0.6)) as faulty:
        point_upstreams(folder, {m: healthy.base_url for m in table.models} | {chosen: faulty.base_url},
                        timeout_s=0.4, retries=1, cooldown_s=0)  # no cooldown: every request meets the fault
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = c.post("/chat/completions",
                       json={"model": "router", "messages": [{"role": "user", "content": prompts[0]}]})
            assert r.status_code == 200, r.text
            assert _valid_completion(r), r.text
            if kind in _BAD_USAGE:
                assert "x-routelab-cost-usd" not in r.headers
            else:
                assert r.headers["x-routelab-reason"] == f"fallback from {chosen}" or kind == "slow_body"

            with c.stream("POST", "/chat/completions", json={
                "model": "router", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": prompts[1]}],
            }) as s:
                assert s.status_code == 200
                lines = [ln for ln in s.iter_lines() if ln]
            data = [ln[6:] for ln in lines if ln.startswith("data: ")]
            assert all(d == "[DONE]" or isinstance(json.loads(d), dict) for d in data), lines
            if kind in _AFTER_FIRST_EVENT:
                assert json.loads(data[-1])["error"]["code"] == "stream_interrupted"
            else:
                assert data[-1] == "[DONE]", lines
                assert not any("error" in json.loads(d) for d in data[:-1])
            assert faulty.app.stats()["requests"] >= 2  # both requests met the fault first
            if kind in _BAD_USAGE:
                assert not any(ln.startswith(": x-routelab-cost-usd") for ln in lines)
                assert f'routelab_invalid_usage_total{{model="{chosen}"}} 2' in metrics_of(c, proxy.base_url)
