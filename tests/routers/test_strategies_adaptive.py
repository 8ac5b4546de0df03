"""The adaptive router: backs off when a cheap model starts failing, recovers when it does well again."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError, NotFittedError, SchemaError
from evals.outcomes import OutcomeTable
from routers.base import Queries
from routers.checks import check_router
from routers.strategies.adaptive import AdaptiveRouter

COST = {"cheap": 0.001, "big": 0.01}
LAM = 0.05  # cheap is worth it while its success stays above 1 - 0.009 / 0.05 = 0.82


def _table(cheap_right: list[bool], categories: list[str], prefix: str) -> OutcomeTable:
    rows = []
    for i, (ok, cat) in enumerate(zip(cheap_right, categories, strict=True)):
        sid = f"{prefix}{i:04d}"
        rows.append(
            dict(
                sample_id=sid,
                category=cat,
                prompt=f"q {sid}",
                model="cheap",
                score=float(ok),
                cost_usd=COST["cheap"],
            )
        )
        rows.append(
            dict(sample_id=sid, category=cat, prompt=f"q {sid}", model="big", score=1.0, cost_usd=COST["big"])
        )
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture()
def train() -> OutcomeTable:
    # Category "a": cheap is right 38 times in 40; category "b": cheap is right 10 times in 40.
    right = [i % 20 != 0 for i in range(40)] + [i % 4 == 0 for i in range(40)]
    return _table(right, ["a"] * 40 + ["b"] * 40, "t")


@pytest.fixture()
def drift() -> OutcomeTable:
    # 300 requests of category "a": cheap right, then (from request 100) always wrong, then (from 200) right
    # again.
    right = [True] * 100 + [False] * 100 + [True] * 100
    return _table(right, ["a"] * 300, "s")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backs_off_within_a_few_requests_and_recovers(
    train: OutcomeTable, drift: OutcomeTable, seed: int
) -> None:
    router = AdaptiveRouter(prior_strength=10, forgetting=0.97, explore=0.1, random_state=seed).fit(train)
    choice, cost, score = router.policy(drift).outcomes(LAM)
    cheap, big = router.models_.index("cheap"), router.models_.index("big")
    # Before the drift the prior (and the feedback) keep it on the cheap model (but for exploration).
    assert (choice[:100] == cheap).mean() >= 0.9
    # It backs off: from the 10th failing request on it calls the big model, bar occasional re-tries.
    first_big = 100 + int(np.argmax(choice[100:] == big))
    assert first_big <= 110
    assert (choice[110:200] == cheap).mean() <= 0.25
    # It recovers: re-tries succeed, and within 70 requests the cheap model has all the traffic back.
    recovered = next(t for t in range(200, 301) if (choice[t:] == cheap).all())
    assert recovered <= 270
    # Realised cost and score are those of the model chosen for each request.
    rows = np.arange(300)
    assert np.allclose(cost, np.where(choice == cheap, COST["cheap"], COST["big"]))
    assert np.array_equal(score, drift.quality[rows, choice])


def test_other_categories_are_untouched_by_feedback(train: OutcomeTable) -> None:
    router = AdaptiveRouter(prior_strength=10, forgetting=0.97, explore=0.0).fit(train)
    q_b = Queries.of(["x"], ["b"])
    before = router.predict_quality(q_b)
    for _ in range(20):
        router.update("a", "cheap", 0.0)
    assert np.array_equal(router.predict_quality(q_b), before)
    assert router.route(Queries.of(["x"], ["a"]), LAM) == ["big"]
    assert router.route(Queries.of(["x"], ["a"]), 0.0) == [
        "cheap"
    ]  # lam = 0: the cheapest, whatever the feedback


def test_live_update_state_round_trip_and_errors(train: OutcomeTable) -> None:
    router = AdaptiveRouter(explore=0.0).fit(train)
    q_a = Queries.of(["x"], ["a"])
    assert router.route(q_a, LAM) == ["cheap"]
    for _ in range(15):
        router.update("a", "cheap", 0.0)
    assert router.route(q_a, LAM) == ["big"]
    state = json.loads(json.dumps(router.get_state()))  # small and JSON-able: shareable between workers
    assert state["a"]["cheap"][1] > 5 and state["a"]["big"] == [0.0, 0.0]
    twin = AdaptiveRouter(explore=0.0).fit(train)
    twin.set_state(json.dumps(state))
    assert twin.route(q_a, LAM) == ["big"]
    twin.reset_state()
    assert twin.route(q_a, LAM) == ["cheap"]
    with pytest.raises(SchemaError, match="unknown model"):
        router.update("a", "nope", 1.0)
    with pytest.raises(SchemaError, match=r"\[0, 1\]"):
        router.update("a", "cheap", 1.5)
    with pytest.raises(SchemaError, match="unknown category"):
        router.set_state({"zzz": {}})
    with pytest.raises(NotFittedError):
        AdaptiveRouter().update("a", "cheap", 1.0)
    with pytest.raises(ConfigError, match="forgetting"):
        AdaptiveRouter(forgetting=1.5).fit(train)


def test_replay_is_fresh_deterministic_and_curve_matches_outcomes(
    train: OutcomeTable, drift: OutcomeTable
) -> None:
    router = AdaptiveRouter(random_state=3).fit(train)
    for _ in range(30):
        router.update("a", "cheap", 0.0)  # live feedback must not leak into the replay
    policy = router.policy(drift)
    fresh = AdaptiveRouter(random_state=3).fit(train).policy(drift)
    a, b = policy.outcomes(LAM), fresh.outcomes(LAM)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    grid = policy.grid(20)
    cost, qual, share = policy.curve(grid)
    for k in (0, len(grid) // 2, len(grid) - 1):
        _, c, q = policy.outcomes(float(grid[k]))
        assert c.mean() == pytest.approx(cost[k]) and q.mean() == pytest.approx(qual[k])
    assert np.allclose(share.sum(axis=1), 1.0)
    assert cost[0] == pytest.approx(COST["cheap"])  # lam = 0 never pays for the big model


@pytest.mark.slow
def test_sweep_of_200_points_over_2400_samples_is_fast() -> None:
    rng = np.random.default_rng(0)
    n, m = 3000, 14
    models = [f"m{j:02d}" for j in range(m)]
    skill = np.linspace(0.3, 0.8, m)
    cats = rng.choice([f"c{k}" for k in range(14)], n)
    rows = [
        dict(
            sample_id=f"s{i}",
            category=cats[i],
            prompt=f"p{i}",
            model=models[j],
            score=float(rng.random() < skill[j]),
            cost_usd=1e-4 * (j + 1),
        )
        for i in range(n)
        for j in range(m)
    ]
    table = OutcomeTable(pd.DataFrame(rows))
    train, _, test = table.split((0.1, 0.1, 0.8), random_state=0)
    policy = AdaptiveRouter().fit(train).policy(test)
    grid = policy.grid(200)
    start = time.perf_counter()
    cost, qual, _ = policy.curve(grid)
    elapsed = time.perf_counter() - start
    assert len(grid) == 200 and test.n_samples == 2400
    assert elapsed < 10.0, f"200-point replay took {elapsed:.1f}s"
    assert cost[-1] > cost[0] and qual[-1] > qual[0]


def test_conformance() -> None:
    check_router(AdaptiveRouter)


def test_export_state_math_matches_the_router(train: OutcomeTable, drift: OutcomeTable) -> None:
    from routers.runtime import unit_hash
    from routers.strategies.adaptive import apply_feedback, explore_choice, posterior_head

    router = AdaptiveRouter(explore=0.3, random_state=1).fit(train)
    meta, arrays = router.export_state()
    meta = json.loads(json.dumps(meta))
    assert meta["kind"] == "adaptive" and meta["adaptive"] is True and meta["categories"] == ["a", "b"]
    evidence = arrays["evidence"].copy()
    prompts, cats = list(drift.prompts[:50]), ["a", "b"] * 25
    rows = np.array([meta["categories"].index(c) for c in cats])
    for step in range(20):  # the same feedback through the router and through the exported math
        router.update("a", "cheap", float(step % 3 == 0))
        apply_feedback(evidence, 0, meta["models"].index("cheap"), float(step % 3 == 0), meta["forgetting"])
    for lam in (0.0, 0.02, LAM, 1.0):
        q = posterior_head(rows, arrays["prior_rate"], evidence, meta["prior_strength"])
        u = unit_hash(prompts, meta["seed"])
        theirs = explore_choice(
            q, arrays["prior_rate"][rows], arrays["cost_per_model"], lam, u, meta["explore"]
        )
        assert np.array_equal(router.route_indices(Queries.of(prompts, cats), lam), theirs)
