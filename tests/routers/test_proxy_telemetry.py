"""Live provider telemetry: EWMAs of each upstream's latency and error rate, in /metrics and /healthz, and a
``provider`` export choosing the cheapest provider within its latency bound from the live numbers (the replay
server as upstreams, no network)."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from evals.outcomes import OutcomeTable
from evals.serving import ReplayServer
from routers.export import export_router
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.proxy.telemetry import MIN_ANSWERS, Telemetry
from routers.strategies.provider import ProviderRouter


def test_ewma_of_latency_and_error_rate():
    t = Telemetry(["a", "b"], alpha=0.5)
    t.observe("a", 1.0, None)
    t.observe("a", 3.0, None)
    t.observe("a", 9.0, "timeout")  # a failure: counts for the error rate, not the latency
    t.observe("a", 5.0, "deadline")  # the request's own deadline: says nothing about the upstream
    snap = t.snapshot()
    assert snap["a"] == {"latency_ewma_s": 2.0, "error_rate_ewma": 0.5, "attempts": 3, "answers": 2}
    assert snap["b"]["latency_ewma_s"] is None and snap["b"]["attempts"] == 0
    assert t.live() == ({}, [])  # fewer than MIN_ANSWERS answers: the price table still decides
    t.observe("a", 2.0, None)
    assert t.live() == ({"a": 2.0}, [])
    for _ in range(3):
        t.observe("b", 0.1, "http_503")
    assert t.live()[1] == ["b"]  # failing: down
    stale = Telemetry(["a"], stale_s=0.0)
    for _ in range(MIN_ANSWERS):
        stale.observe("a", 1.0, None)
    time.sleep(0.01)
    assert stale.live() == ({}, [])  # not observed lately: back to the listed figures
    text = t.metrics_text()
    assert 'routelab_upstream_latency_ewma_seconds{model="a"} 2' in text
    assert 'routelab_upstream_error_rate_ewma{model="b"} 1\n' in text  # the first value is the observation
    with pytest.raises(ValueError, match="alpha"):
        Telemetry([], alpha=0.0)


def test_a_batch_of_observations_gives_the_same_estimates_with_one_change_call():
    """How a replica applies the other replicas' attempts (published in batches): the same EWMAs as one by one."""
    obs = [("a", 1.0, None), ("b", 0.2, "timeout"), ("a", 3.0, None), ("a", 9.0, "deadline"), ("a", 2.0, "http_503")]
    calls = []
    one, many = Telemetry(["a", "b"], alpha=0.3), Telemetry(["a", "b"], alpha=0.3, on_change=calls.append)
    for o in obs:
        one.observe(*o)
    many.observe_many(obs)
    assert many.snapshot() == one.snapshot() and len(calls) == 1
    many.observe_many([("a", 1.0, "deadline")])  # nothing to apply: no change call
    assert len(calls) == 1 and many.snapshot() == one.snapshot()


# Two providers of one model: "cheapo" lists a fast enough latency and is cheaper; "fast" is dearer.
BOUND_S = 0.2
ARMS = {"llama@fast": (0.010, 0.05), "llama@cheapo": (0.003, 0.08)}


def _arms_table(n: int = 12) -> OutcomeTable:
    rows = []
    for i in range(n):
        for arm, (cost, lat) in ARMS.items():
            rows.append(dict(sample_id=f"s{i}", category="any", prompt=f"question {i}", model=arm,
                             provider=arm.split("@")[1], score=1.0, cost_usd=cost, latency_s=lat,
                             response=f"{arm} answers {i}", input_tokens=40.0, output_tokens=12.0))
    return OutcomeTable(pd.DataFrame(rows))


def test_provider_export_leaves_a_provider_that_is_slow_live(tmp_path):
    table = _arms_table()
    router = ProviderRouter(max_latency_s=BOUND_S).fit(table)
    prices = {arm: {"provider": arm.split("@")[1], "input_per_1m": c * 1e3, "output_per_1m": c * 1e3,
                    "request_fee": 0.0} for arm, (c, _) in ARMS.items()}
    folder = export_router(router, tmp_path / "export", lam=1.0, prices=prices)
    # cheapo's upstream really takes 0.3 s, over the bound; fast's answers at once.
    with ReplayServer(table) as quick, ReplayServer(table, latency_ms=300) as slow:
        cfg = tmp_path / "upstreams.toml"
        cfg.write_text(
            '[proxy]\nroute_names = ["router"]\n\n'
            + "".join(f'[upstreams."{arm}"]\nbase_url = "{url}"\ntimeout_s = 5.0\nretries = 0\n\n'
                      for arm, url in (("llama@fast", quick.base_url), ("llama@cheapo", slow.base_url)))
        )
        app = build_proxy_app(folder, no_auth=True, upstreams_path=cfg)
        with ProxyServer(app) as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
            chosen = []
            for i in range(MIN_ANSWERS + 3):
                r = c.post("/chat/completions",
                           json={"model": "router", "messages": [{"role": "user", "content": f"question {i}"}]})
                assert r.status_code == 200, r.text
                chosen.append(r.headers["x-routelab-choice"])
            metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
            health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
    # The price table's figures first (cheapo is within the bound and cheaper), then the live numbers.
    assert chosen[:MIN_ANSWERS] == ["llama@cheapo"] * MIN_ANSWERS
    assert chosen[MIN_ANSWERS:] == ["llama@fast"] * 3
    live = health["telemetry"]
    assert live["llama@cheapo"]["latency_ewma_s"] > BOUND_S and live["llama@cheapo"]["answers"] == MIN_ANSWERS
    assert live["llama@fast"]["latency_ewma_s"] < BOUND_S and live["llama@fast"]["error_rate_ewma"] == 0.0
    assert 'routelab_upstream_latency_ewma_seconds{model="llama@cheapo"}' in metrics
    assert 'routelab_upstream_error_rate_ewma{model="llama@fast"} 0' in metrics


def test_provider_export_leaves_a_failing_provider(tmp_path):
    table = _arms_table()
    router = ProviderRouter(max_latency_s=BOUND_S).fit(table)
    folder = export_router(router, tmp_path / "export", lam=1.0, prices={
        arm: {"provider": arm.split("@")[1], "input_per_1m": c * 1e3, "output_per_1m": c * 1e3, "request_fee": 0.0}
        for arm, (c, _) in ARMS.items()})
    with ReplayServer(table) as good, ReplayServer(table, fault_rate=1.0, faults=["500"]) as bad:
        cfg = tmp_path / "upstreams.toml"
        cfg.write_text(
            '[proxy]\nroute_names = ["router"]\ncooldown_s = 0.0\n\n'
            + "".join(f'[upstreams."{arm}"]\nbase_url = "{url}"\ntimeout_s = 5.0\nretries = 0\n\n'
                      for arm, url in (("llama@fast", good.base_url), ("llama@cheapo", bad.base_url)))
        )
        app = build_proxy_app(folder, no_auth=True, upstreams_path=cfg)
        with ProxyServer(app) as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
            got = []
            for i in range(MIN_ANSWERS + 2):
                r = c.post("/chat/completions",
                           json={"model": "router", "messages": [{"role": "user", "content": f"question {i}"}]})
                assert r.status_code == 200, r.text  # the failover answers meanwhile
                got.append((r.headers["x-routelab-choice"], r.headers["x-routelab-model"]))
    assert got[:MIN_ANSWERS] == [("llama@cheapo", "llama@fast")] * MIN_ANSWERS
    assert got[MIN_ANSWERS:] == [("llama@fast", "llama@fast")] * 2  # cheapo's error rate: down
