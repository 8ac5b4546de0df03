"""PARITY of text selection on templated MMLU-Pro: workbench decisions == exported decisions == proxy choice.

MMLU-Pro prompts are wrapped as production prompts are (a long fixed system prompt, a fixed 5-shot block of
other MMLU-Pro questions, an answer cue). Each embedding router, fitted with ``text = "auto"`` and with
``text = "last_user"`` on ``minilm-static`` (bundled in the export), is exported at three operating points; the
folder (its own ``runtime.py``, the rule read from ``router.json``) must decide every test prompt as the
evaluator measured (``router.policy(test).outcomes(lam)``). Then the proxy serves the middle point with the
replay server as every upstream: ``x-routelab-choice`` must equal the workbench's decision for prompts sent as
one user message and as a chat with a system message (the proxy routes on the last user message,
``evals.serving.wire.prompt_of``, and the runtime strips the learned template from it).
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
from routers import Queries, make_router
from routers.export import export_router, load_exported
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import fast_encoder, point_upstreams  # noqa: E402

pytestmark = pytest.mark.slow
ENV = {"ROUTELAB_PROXY_KEYS": "parity-key", "TEST_UPSTREAM_KEY": "sk-replay"}
N_TRAIN, N_TEST, N_PROXY = 1200, 600, 120
SYSTEM = (
    "You are an expert assistant. Answer the multiple-choice question at the end.\n"
    "Reason step by step, then finish with a line 'The answer is (X)'.\n"
    "Here are examples of questions and answers.\n"
)
CUE = "\nAnswer: Let's think step by step."
CASES = [(name, text) for name in ("classifier", "cost-aware", "irt-blend", "knn", "mf")
         for text in ("auto", "last_user")]

_SETUP: dict = {}


def templated_split():
    """(train, test) of MMLU-Pro (seed 0) with every prompt templated; the 5 shots are 5 other train prompts."""
    if _SETUP:
        return _SETUP["train"], _SETUP["test"]
    from evals import sources
    from evals.outcomes import OutcomeTable

    split = sources.load("mmlu-pro").split(random_state=0)
    shot_ids = list(split.train.sample_ids[:5])
    shots = "".join(f"Question: {p}\nAnswer: ... The answer is (A).\n\n" for p in split.train.select(
        sample_ids=shot_ids).prompts)

    def wrap(table, ids):
        frame = table.select(sample_ids=ids).frame.copy()
        frame["prompt"] = [SYSTEM + shots + "Question: " + p + CUE for p in frame["prompt"]]
        return OutcomeTable(frame)

    rng = np.random.default_rng(0)
    train = wrap(split.train, list(split.train.sample_ids[5 : 5 + N_TRAIN]))
    test = wrap(split.test, list(rng.choice(split.test.sample_ids, size=N_TEST, replace=False)))
    _SETUP.update(train=train, test=test, shots=shots)
    return train, test


@pytest.fixture(scope="module")
def replay(shared_data):
    _, test = templated_split()
    with ProxyServer(build_replay_app(test)) as srv:
        yield srv


async def _ask_all(base_url: str, requests: list[tuple[list[dict], str]]) -> list[httpx.Response]:
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=60, headers={"authorization": "Bearer parity-key"}
    ) as client:

        async def one(messages: list[dict], cat: str) -> httpx.Response:
            async with sem:
                return await client.post(
                    "/chat/completions",
                    headers={"x-routelab-category": cat},
                    json={"model": "router", "messages": messages},
                )

        return await asyncio.gather(*(one(m, c) for m, c in requests))


@pytest.mark.parametrize(("name", "text"), CASES)
def test_templated_prompts_route_alike_in_the_workbench_the_export_and_the_proxy(name, text, replay, tmp_path):
    train, test = templated_split()
    router = make_router({"name": name, "params": {"encoder": fast_encoder(), "text": text}}).fit(train)
    rule = router.text_selection_state()
    assert rule["mode"] == text
    if text == "auto":  # the learned template is the system prompt and the shots, and the cue
        assert rule["prefix"] == SYSTEM + _SETUP["shots"] and rule["suffix"] == CUE

    prompts, cats = list(test.prompts), [str(c) for c in test.categories]
    policy = router.policy(test)
    grid = np.asarray(policy.grid(60))
    lams = sorted({float(np.quantile(grid, q)) for q in (0.25, 0.5, 0.75)})
    measured = {lam: policy.outcomes(lam)[0] for lam in lams}
    shares = []
    for lam in lams:
        exported = load_exported(export_router(router, tmp_path / f"{lam:.3e}", lam=lam, table_card=train.card))
        got = exported.route_indices(prompts, categories=cats)
        wrong = np.flatnonzero(got != measured[lam])
        assert len(wrong) == 0, f"{name} text={text} at lam={lam:g}: {len(wrong)} of {len(prompts)} differ"
        assert exported.route(prompts) == list(router.route(Queries.of(prompts), lam))  # no categories
        shares.append(np.bincount(got, minlength=len(exported.models)))
    assert not all((s == shares[0]).all() for s in shares[1:]), "the three points decide alike: a weak check"

    lam = lams[1]
    folder = export_router(router, tmp_path / "served", lam=lam)
    point_upstreams(folder, {m: replay.base_url for m in router.models_})
    rows = np.random.default_rng(1).choice(len(prompts), size=N_PROXY, replace=False)
    requests = []
    for k, i in enumerate(rows):  # half one user message, half a chat with a system message before it
        user = {"role": "user", "content": prompts[i]}
        messages = [user] if k % 2 else [{"role": "system", "content": "Be concise."}, user]
        requests.append((messages, cats[i]))
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy:
        responses = asyncio.run(_ask_all(proxy.base_url, requests))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:2]
    expected = [router.models_[measured[lam][i]] for i in rows]
    got_choice = [r.headers["x-routelab-choice"] for r in responses]
    wrong = [k for k, (g, e) in enumerate(zip(got_choice, expected, strict=True)) if g != e]
    assert not wrong, f"{name} text={text}: {len(wrong)} of {N_PROXY} proxy decisions differ"
    assert [r.json()["model"] for r in responses] == expected  # the upstream answered as that model
