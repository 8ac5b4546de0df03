"""The LiteLLM adapter (issue 16, item 5): a LiteLLM Router picks deployments with an exported RouteLab router.

A ``category`` router fitted on MMLU-Pro's train split is exported; a ``litellm.Router`` has one deployment per
model of the export, each an OpenAI-compatible deployment whose ``api_base`` is the replay server (MMLU-Pro's
recorded answers). On 200 test prompts with their categories, the adapter's picks equal the export's ``route()``
(and the workbench's measured decisions) for every prompt, and completions through the LiteLLM Router come back
with the replayed answer of the chosen model, one upstream request each.

Needs the optional ``litellm`` extra (``pip install -e ".[litellm]"``; CI installs it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

# LiteLLM fetches its model price map from the network at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm", reason='the LiteLLM adapter is an optional extra: pip install -e ".[litellm]"')

from evals.serving import ReplayServer  # noqa: E402
from routers.export import ExportError, load_exported  # noqa: E402
from routers.integrations.litellm import (  # noqa: E402
    RouteLabRoutingStrategy,
    category_of,
    use_exported_router,
)

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import mmlu_category_export, mmlu_split  # noqa: E402

pytestmark = pytest.mark.slow
N_PROMPTS = 200
GROUP = "routelab"


@pytest.fixture(scope="module")
def mmlu(shared_data):
    """MMLU-Pro split as the workbench splits it (seed 0): (train, test)."""
    return mmlu_split()


@pytest.fixture(scope="module")
def category_export(mmlu, tmp_path_factory):
    """A ``category`` export at the median of its decision grid: (folder, test rows, workbench choices there)."""
    folder = tmp_path_factory.mktemp("litellm") / "category"
    router, lam, rows = mmlu_category_export(folder, N_PROMPTS, seed=0)
    measured = router.policy(mmlu[1]).outcomes(lam)[0]
    return folder, rows, [router.models_[measured[i]] for i in rows]


@pytest.fixture(scope="module")
def replay(mmlu):
    with ReplayServer(mmlu[1]) as srv:
        yield srv


def _litellm_router(models, base_url: str):
    """One deployment per model in the ``routelab`` group (``openai/<model>`` at the replay server)."""
    return litellm.Router(
        model_list=[
            {
                "model_name": GROUP,
                "litellm_params": {"model": f"openai/{m}", "api_base": base_url, "api_key": "sk-replay"},
            }
            for m in models
        ],
        num_retries=0,
    )


def _requests(test, rows):
    return [
        ([{"role": "user", "content": test.prompts[i]}], {"metadata": {"routelab_category": str(test.categories[i])}})
        for i in rows
    ]


def test_picks_equal_the_exports_decisions_on_200_prompts(mmlu, category_export, replay):
    _, test = mmlu
    folder, rows, workbench = category_export
    exported = load_exported(folder)
    expected = exported.route([test.prompts[i] for i in rows], categories=[str(test.categories[i]) for i in rows])
    assert expected == workbench  # the export decides as the workbench measured
    assert len(set(expected)) >= 2, "pick an operating point where the router uses more than one model"

    router = _litellm_router(exported.models, replay.base_url)
    strategy = use_exported_router(router, folder)
    sync = [
        strategy.get_available_deployment(GROUP, messages=m, request_kwargs=kw)["litellm_params"]["model"]
        for m, kw in _requests(test, rows)
    ]

    async def picks():
        return [
            (await strategy.async_get_available_deployment(GROUP, messages=m, request_kwargs=kw))["litellm_params"][
                "model"
            ]
            for m, kw in _requests(test, rows)
        ]

    want = [f"openai/{m}" for m in expected]
    assert sync == want, f"{sum(a != b for a, b in zip(sync, want, strict=True))} of {N_PROMPTS} sync picks differ"
    assert asyncio.run(picks()) == want
    # An export that routes slowly (a transformer encoder) decides in a worker thread: the same picks.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(exported), "routes_slowly", property(lambda self: True))
        assert strategy.exported.routes_slowly and asyncio.run(picks()) == want


def test_completions_through_the_litellm_router_return_the_replayed_answers(mmlu, category_export, replay):
    _, test = mmlu
    folder, rows, expected = category_export
    exported = load_exported(folder)
    router = _litellm_router(exported.models, replay.base_url)
    use_exported_router(router, exported)
    replay.reset_stats()

    async def ask_all():
        sem = asyncio.Semaphore(8)

        async def one(messages, kwargs):
            async with sem:
                return await router.acompletion(model=GROUP, messages=messages, **kwargs)

        return await asyncio.gather(*(one(m, kw) for m, kw in _requests(test, rows)))

    responses = asyncio.run(ask_all())
    records = replay.app.records  # {model: {prompt: recorded answer}}
    got = [r.choices[0].message.content or "" for r in responses]
    want = [records[m][test.prompts[i]].response for m, i in zip(expected, rows, strict=True)]
    wrong = sum(g != w for g, w in zip(got, want, strict=True))
    assert wrong == 0, f"{wrong} of {N_PROMPTS} answers are not the chosen model's recorded answer"
    assert replay.stats()["requests"] == N_PROMPTS  # one upstream call per request, to the chosen model
    for m, i in zip(expected, rows, strict=True):
        assert replay.requests(m, records[m][test.prompts[i]].sample_id) >= 1

    # the sync path of the Router too
    messages, kwargs = _requests(test, rows[:1])[0]
    answer = router.completion(model=GROUP, messages=messages, **kwargs)
    assert answer.choices[0].message.content == want[0]


def test_a_model_without_deployment_is_named(mmlu, category_export, replay):
    folder, _, _ = category_export
    exported = load_exported(folder)
    missing = exported.models[-1]
    router = _litellm_router(exported.models[:-1], replay.base_url)
    with pytest.raises(ExportError, match=f"no deployment for 1 model\\(s\\) of the export: {missing}"):
        use_exported_router(router, exported)


def test_deployments_matched_by_model_info_and_other_groups_passed_through(mmlu, category_export, replay):
    _, test = mmlu
    folder, rows, expected = category_export
    exported = load_exported(folder)
    # deployments whose litellm model name differs from the export's, tied by model_info.routelab_model
    model_list = [
        {
            "model_name": GROUP,
            "litellm_params": {"model": f"openai/alias-{k}", "api_base": replay.base_url, "api_key": "k"},
            "model_info": {"routelab_model": m},
        }
        for k, m in enumerate(exported.models)
    ]
    model_list.append({"model_name": "direct", "litellm_params": {"model": "openai/gpt-4o-2024-05-13"}})
    router = litellm.Router(model_list=model_list)
    strategy = RouteLabRoutingStrategy(router, exported)
    messages, kwargs = _requests(test, rows[:1])[0]
    picked = strategy.get_available_deployment(GROUP, messages=messages, request_kwargs=kwargs)
    assert picked["model_info"]["routelab_model"] == expected[0]
    assert strategy.get_available_deployment("direct", messages=messages)["model_name"] == "direct"
    with pytest.raises(ValueError, match="no LiteLLM deployment has model_name 'nope'"):
        strategy.get_available_deployment("nope", messages=messages)
    with pytest.raises(ValueError, match="without a user message"):
        strategy.get_available_deployment(GROUP, messages=[{"role": "system", "content": "hi"}])


def test_category_sources():
    assert category_of(None) is None
    assert category_of({"metadata": {"routelab_category": "math"}}) == "math"
    assert category_of({"litellm_metadata": {"headers": {"X-RouteLab-Category": "law"}}}) == "law"
    assert category_of({"proxy_server_request": {"headers": {"x-routelab-category": "history"}}}) == "history"
    assert category_of({"metadata": {"routelab_category": ""}}) is None
