"""Provider choice: cheapest provider within a latency bound, failover order, the model on the knob."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError, SchemaError
from evals.outcomes import OutcomeTable
from evals.prices import PriceTable
from routers import runtime
from routers.base import Queries
from routers.checks import check_router
from routers.strategies.provider import ProviderRouter, choose_provider, expand_providers, split_arm

# Three providers of one model with known prices and latencies, plus a weaker, cheaper model.
OFFERS = {"fast": (0.010, 2.0), "mid": (0.006, 6.0), "slow": (0.003, 20.0)}


def test_choose_provider_orders_within_bound_by_price_then_the_rest_by_latency() -> None:
    offers = {p: {"price": c, "latency_s": t} for p, (c, t) in OFFERS.items()}
    assert choose_provider("llama", offers) == ["slow", "mid", "fast"]  # no bound: by price
    assert choose_provider("llama", offers, max_latency_s=10) == ["mid", "fast", "slow"]
    assert choose_provider("llama", offers, max_latency_s=3) == ["fast", "mid", "slow"]
    assert choose_provider("llama", offers, max_latency_s=1) == [
        "fast",
        "mid",
        "slow",
    ]  # none within: by latency
    assert choose_provider("llama", offers, max_latency_s=10, down={"mid"}) == ["fast", "slow"]
    assert choose_provider("llama", offers, down=set(OFFERS)) == []
    # Unknown latency counts as within the bound, after a known one at the same price.
    offers["anon"] = {"price": 0.006, "latency_s": None}
    assert choose_provider("llama", offers, max_latency_s=10) == ["mid", "anon", "fast", "slow"]
    with pytest.raises(ConfigError, match="price"):
        choose_provider("llama", {"x": {"price": -1.0, "latency_s": 1.0}})
    with pytest.raises(ConfigError, match="no providers"):
        choose_provider("llama", {})


def _arms_table(n: int = 40) -> OutcomeTable:
    rows = []
    for i in range(n):
        cat = "hard" if i % 2 else "easy"
        sid = f"s{i:03d}"
        for p, (cost, lat) in OFFERS.items():
            # Same model, same answers: quality does not depend on the provider.
            rows.append(
                dict(
                    sample_id=sid,
                    category=cat,
                    prompt=f"q {sid}",
                    model=f"llama@{p}",
                    provider=p,
                    score=1.0,
                    cost_usd=cost,
                    latency_s=lat,
                )
            )
        rows.append(
            dict(
                sample_id=sid,
                category=cat,
                prompt=f"q {sid}",
                model="tiny@cheapco",
                provider="cheapco",
                score=float(cat == "easy"),
                cost_usd=0.0005,
                latency_s=1.0,
            )
        )
    return OutcomeTable(pd.DataFrame(rows))


def test_router_picks_the_cheapest_provider_within_the_bound() -> None:
    table = _arms_table()
    hard = Queries.of(["q"], ["hard"])
    assert ProviderRouter().fit(table).route(hard, 1.0) == ["llama@slow"]
    assert ProviderRouter(max_latency_s=10).fit(table).route(hard, 1.0) == ["llama@mid"]
    assert ProviderRouter(max_latency_s=3).fit(table).route(hard, 1.0) == ["llama@fast"]
    # The knob chooses the model: lam = 0 takes the cheapest arm; at a modest lam the tiny model serves the
    # easy prompts (where it is right) and the hard ones go to the cheapest admissible provider of the strong
    # model.
    router = ProviderRouter(max_latency_s=10).fit(table)
    assert router.route(hard, 0.0) == ["tiny@cheapco"]
    both = Queries.of(["q", "q"], ["easy", "hard"])
    assert router.route(both, 0.02) == ["tiny@cheapco", "llama@mid"]
    # With the model pinned, only its providers compete, at every operating point.
    pinned = ProviderRouter(model="llama", max_latency_s=10).fit(table)
    assert pinned.route(hard, 0.0) == pinned.route(hard, 1.0) == ["llama@mid"]


def test_failover_order() -> None:
    router = ProviderRouter(max_latency_s=10).fit(_arms_table())
    assert router.failover_order("llama") == ["llama@mid", "llama@fast", "llama@slow"]
    assert router.failover_order("llama@mid", down={"mid"}) == ["llama@fast", "llama@slow"]
    no_failover = ProviderRouter(max_latency_s=10, failover=False).fit(_arms_table())
    assert no_failover.failover_order("llama") == ["llama@mid"]
    with pytest.raises(ConfigError, match="unknown model"):
        router.failover_order("gpt-9")


def test_latency_from_price_file_and_replay_costs(tmp_path) -> None:
    # Latencies come from the price table when it lists them (here it makes "slow" fast and "fast" slow).
    csv = tmp_path / "prices.csv"
    lines = ["model,provider,input_per_1m,output_per_1m,request_fee,default,p50_latency_s,source,date"]
    listed = {"fast": 30, "mid": 6, "slow": 1}
    lines += [f"llama,{p},1,1,0,{int(p == 'fast')},{listed[p]},test,2024-01" for p in OFFERS]
    csv.write_text("\n".join(lines) + "\n")
    router = ProviderRouter(max_latency_s=10, prices_path=str(csv)).fit(_arms_table())
    assert router.failover_order("llama") == ["llama@slow", "llama@mid", "llama@fast"]
    policy = router.policy(_arms_table())
    choice, cost, score = policy.outcomes(0.02)
    assert {router.models_[c] for c in choice} == {"llama@slow", "tiny@cheapco"}
    assert (score == 1.0).all()
    assert np.allclose(cost[np.array(router.models_)[choice] == "llama@slow"], OFFERS["slow"][0])


def test_export_state_decides_like_the_router() -> None:
    table = _arms_table()
    router = ProviderRouter(max_latency_s=10).fit(table)
    meta, arrays = router.export_state()
    loaded = runtime.load_state(meta, arrays)
    queries = Queries.from_table(table)
    for lam in (0.0, 0.01, 1.0):
        assert loaded.route(list(queries.prompts), lam, queries.categories) == router.route(queries, lam)
    assert meta["providers"]["llama"] == ["llama@fast", "llama@mid", "llama@slow"]


def test_expand_providers_prices_each_provider() -> None:
    prices = PriceTable.load()
    model = "Llama-3.1-70B-Instruct"
    rows = [
        dict(
            sample_id=f"s{i}",
            prompt="p",
            model=m,
            provider=p,
            score=1.0,
            cost_usd=0.001,
            input_tokens=1000.0,
            output_tokens=500.0,
        )
        for i in range(3)
        for m, p in ((model, "together"), ("unlisted", ""))
    ]
    out = expand_providers(OutcomeTable(pd.DataFrame(rows)), prices)
    arms = [a for a in out.models if split_arm(a)[0] == model]
    assert sorted(split_arm(a)[1] for a in arms) == sorted(prices.providers(model))
    assert "unlisted" in out.models
    for arm in arms:
        offer = prices.price(model, split_arm(arm)[1])
        j = out.models.index(arm)
        assert np.allclose(out.cost[:, j], offer.cost(1000, 500))
        if not math.isnan(offer.p50_latency_s):
            assert np.allclose(out.wide("latency_s")[:, j], offer.p50_latency_s)
    assert np.array_equal(
        out.quality[:, out.models.index(arms[0])], out.quality[:, out.models.index(arms[-1])]
    )
    with pytest.raises(SchemaError, match="already has"):
        expand_providers(out, prices)


def test_bad_params() -> None:
    with pytest.raises(ConfigError, match="max_latency_s"):
        ProviderRouter(max_latency_s=0).fit(_arms_table())
    with pytest.raises(ConfigError, match="not in the table"):
        ProviderRouter(model="gpt-9").fit(_arms_table())


@pytest.mark.slow
def test_conformance() -> None:
    check_router(ProviderRouter)
    check_router(ProviderRouter(max_latency_s=5.0), _arms_table())


def test_partly_unknown_latencies_count_as_within_the_bound() -> None:
    frame = _arms_table().frame
    frame.loc[frame["model"].eq("llama@slow"), "latency_s"] = np.nan  # nothing known about "slow"
    frame.loc[frame["model"].eq("llama@mid") & frame["sample_id"].eq("s000"), "latency_s"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        router = ProviderRouter(max_latency_s=10).fit(OutcomeTable(frame))
    assert np.isnan(router.arm_latency_s_[router.models_.index("llama@slow")])
    assert router.arm_latency_s_[router.models_.index("llama@mid")] == 6.0
    assert router.failover_order("llama") == ["llama@slow", "llama@mid", "llama@fast"]
