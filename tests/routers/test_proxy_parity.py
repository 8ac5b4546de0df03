"""PARITY through the proxy: on MMLU-Pro test prompts, the proxy routes exactly as the workbench measured.

For every exportable router at three operating points: export, serve the folder with the proxy, the replay
server (recorded MMLU-Pro answers) as every model's upstream, and send a few hundred test prompts with their
category header; the ``x-routelab-choice`` header (and, with no failures, ``x-routelab-model`` and the
answering model in the body) must equal the workbench's decision for every prompt.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from evals.serving import build_replay_app
from routers.export import export_router
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import mmlu_parity_setup, point_upstreams, stateless_exportable  # noqa: E402

pytestmark = pytest.mark.slow
EXPORTABLE = stateless_exportable()  # adaptive: tests/routers/test_export_adaptive.py
N_PROMPTS = 200
ENV = {"ROUTELAB_PROXY_KEYS": "parity-key", "TEST_UPSTREAM_KEY": "sk-replay"}


@pytest.fixture(scope="module")
def replay():
    test, _ = mmlu_parity_setup()
    with ProxyServer(build_replay_app(test)) as srv:
        yield srv


async def _ask_all(base_url: str, prompts: list[str], cats: list[str]) -> list[httpx.Response]:
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=60, headers={"authorization": "Bearer parity-key"}
    ) as client:

        async def one(prompt: str, cat: str) -> httpx.Response:
            async with sem:
                return await client.post(
                    "/chat/completions",
                    headers={"x-routelab-category": cat},
                    json={"model": "router", "messages": [{"role": "user", "content": prompt}]},
                )

        return await asyncio.gather(*(one(p, c) for p, c in zip(prompts, cats, strict=True)))


@pytest.mark.parametrize("name", EXPORTABLE)
def test_proxy_routes_like_the_workbench(name, shared_data, replay, tmp_path):
    test, routers = mmlu_parity_setup()
    router, lams, measured = routers[name]
    rows = np.random.default_rng(0).choice(test.n_samples, size=N_PROMPTS, replace=False)
    prompts = [test.prompts[i] for i in rows]
    cats = [str(test.categories[i]) for i in rows]
    for lam in lams:
        folder = export_router(router, tmp_path / f"{lam:.3e}", lam=lam)
        point_upstreams(folder, {m: replay.base_url for m in router.models_})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy:
            responses = asyncio.run(_ask_all(proxy.base_url, prompts, cats))
        expected = [router.models_[measured[lam][i]] for i in rows]
        assert all(r.status_code == 200 for r in responses), [
            r.text for r in responses if r.status_code != 200
        ][:2]
        got = [r.headers["x-routelab-choice"] for r in responses]
        wrong = [i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
        assert not wrong, f"{name} at lam={lam:g}: {len(wrong)} of {len(prompts)} proxy decisions differ"
        assert [r.headers["x-routelab-model"] for r in responses] == expected
        assert [
            r.json()["model"] for r in responses
        ] == expected  # the upstream really answered as that model
        assert all(r.headers["x-routelab-reason"] == "routed" for r in responses)


def test_adaptive_proxy_routes_like_the_workbench_before_and_after_the_same_feedback(shared_data, replay, tmp_path):
    """An adaptive export served by the proxy: fresh decisions, then decisions after the same 100 failures."""
    import copy

    from routers import Queries

    test, routers = mmlu_parity_setup()
    router, lams, _ = routers["adaptive"]
    rows = np.random.default_rng(1).choice(test.n_samples, size=N_PROMPTS, replace=False)
    prompts = [test.prompts[i] for i in rows]
    cats = [str(test.categories[i]) for i in rows]
    changed = 0
    for lam in lams:
        twin = copy.deepcopy(router)  # the workbench side; learns from the same feedback as the proxy
        folder = export_router(twin, tmp_path / f"adaptive-{lam:.3e}", lam=lam)
        point_upstreams(folder, {m: replay.base_url for m in twin.models_})
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy:
            before = [r.headers["x-routelab-choice"] for r in asyncio.run(_ask_all(proxy.base_url, prompts, cats))]
            expected = twin.route(Queries.of(prompts, cats), lam)
            assert before == list(expected), f"adaptive at lam={lam:g}: fresh proxy decisions differ"
            with httpx.Client(
                base_url=proxy.base_url, headers={"authorization": "Bearer parity-key"}, timeout=30
            ) as c:
                for i in range(100):  # the models chosen fail (a degraded provider): the router must back off
                    score = 0.0
                    r = c.post("/feedback", json={"category": cats[i], "model": before[i], "score": score})
                    assert r.status_code == 200, r.text
                    twin.update(cats[i], before[i], score)
            after = [r.headers["x-routelab-choice"] for r in asyncio.run(_ask_all(proxy.base_url, prompts, cats))]
        assert after == list(twin.route(Queries.of(prompts, cats), lam)), f"adaptive at lam={lam:g}: after feedback"
        changed += sum(a != b for a, b in zip(after, before, strict=True))
    assert changed > 0, "the feedback changed no decision: the test would not see a proxy that ignores it"
