"""The cascade: escalates exactly when the cheap answer looks unreliable, and pays for every call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError, NotFittedError, SchemaError
from evals.outcomes import OutcomeTable
from routers.base import Queries
from routers.checks import check_router
from routers.strategies.cascade import CascadeRouter, answer_features, extract_answer

COST = {"cheap": 0.001, "mid": 0.004, "big": 0.02}
CONFIDENT = "Step by step: the sum is 4. The answer is (B)."
HEDGING = "I am not sure, maybe it is B but perhaps C; it is unclear. However I cannot determine it."


def _table(n: int, prefix: str, seed: int) -> OutcomeTable:
    """cheap answers confidently when right and hedges (no answer) when wrong; big is always right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sid, cat = f"{prefix}{i:03d}", "math" if i % 2 else "law"
        cheap_right = rng.random() < 0.6
        mid_right = cheap_right or rng.random() < 0.3
        for model, right in (("cheap", cheap_right), ("mid", mid_right), ("big", True)):
            text = CONFIDENT if right or model == "big" else HEDGING
            rows.append(
                dict(
                    sample_id=sid,
                    category=cat,
                    prompt=f"question {sid}",
                    model=model,
                    score=float(right),
                    cost_usd=COST[model],
                    response=text,
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def train() -> OutcomeTable:
    return _table(120, "t", 0)


@pytest.fixture(scope="module")
def test_table() -> OutcomeTable:
    return _table(60, "s", 1)


def test_escalates_exactly_the_unreliable_answers_and_pays_every_call(
    train: OutcomeTable, test_table: OutcomeTable
) -> None:
    router = CascadeRouter(models=["cheap", "big"]).fit(train)
    assert router.chain_ == ("cheap", "big")
    policy = router.policy(test_table)
    cheap, big = router.models_.index("cheap"), router.models_.index("big")
    cheap_right = test_table.quality[:, cheap] == 1.0
    # lam = 0: never escalate.
    choice, cost, score = policy.outcomes(0.0)
    assert (choice == cheap).all() and np.allclose(cost, COST["cheap"])
    # A moderate willingness to pay escalates the hedged answers and only them, and reaches perfect accuracy.
    choice, cost, score = policy.outcomes(0.1)
    assert np.array_equal(choice == big, ~cheap_right)
    assert (score == 1.0).all()
    # An escalated request pays for both calls: the discarded cheap answer too.
    assert np.allclose(cost[~cheap_right], COST["cheap"] + COST["big"])
    assert np.allclose(cost[cheap_right], COST["cheap"])


def test_curve_is_monotone_and_agrees_with_outcomes(train: OutcomeTable, test_table: OutcomeTable) -> None:
    policy = CascadeRouter().fit(train).policy(test_table)
    grid = policy.grid(40)
    cost, qual, share = policy.curve(grid)
    assert (np.diff(cost) >= -1e-15).all()
    assert np.allclose(share.sum(axis=1), 1.0)
    for k in range(len(grid)):
        choice, c, q = policy.outcomes(float(grid[k]))
        assert c.mean() == pytest.approx(cost[k]) and q.mean() == pytest.approx(qual[k])
        assert np.allclose(np.bincount(choice, minlength=3) / len(choice), share[k])


def test_default_chain_ends_at_the_best_model_and_starts_cheap(train: OutcomeTable) -> None:
    router = CascadeRouter().fit(train)
    assert router.chain_[0] == "cheap" and router.chain_[-1] == "big"
    assert CascadeRouter(max_stages=1).fit(train).chain_ == ("big",)


def test_route_with_answers_calls_stages_in_order(train: OutcomeTable) -> None:
    router = CascadeRouter(models=["cheap", "mid", "big"]).fit(train)
    calls: list[str] = []

    def answers(kind: str):
        def get(model: str) -> str:
            calls.append(model)
            return CONFIDENT if (model == "big" or kind == "sure") else HEDGING

        return get

    trace = router.route_with_answers("question x", answers("sure"), lam=0.1, category="math")
    assert calls == ["cheap"] and trace.model == "cheap" and trace.answer == CONFIDENT
    calls.clear()
    trace = router.route_with_answers("question x", answers("unsure"), lam=0.1, category="math")
    assert calls == ["cheap", "mid", "big"] and trace.model == "big"
    assert [m for m, _ in trace.calls] == calls and trace.calls[0][1] < 0.5
    calls.clear()
    assert router.route_with_answers("question x", answers("unsure"), lam=0.0).model == "cheap"


def test_live_and_replayed_decisions_agree(train: OutcomeTable, test_table: OutcomeTable) -> None:
    router = CascadeRouter(models=["cheap", "mid", "big"]).fit(train)
    texts = test_table.wide_text("response")
    for lam in (0.0, 0.02, 0.1, 1.0):
        choice, _, _ = router.policy(test_table).outcomes(lam)
        for i, (prompt, cat) in enumerate(zip(test_table.prompts, test_table.categories, strict=True)):
            trace = router.route_with_answers(
                prompt, lambda m, i=i: texts[i, router.models_.index(m)], lam, category=cat
            )
            assert trace.model == router.models_[choice[i]]


def test_errors(train: OutcomeTable) -> None:
    with pytest.raises(ConfigError, match="not in the table"):
        CascadeRouter(models=["cheap", "nope"]).fit(train)
    with pytest.raises(ConfigError, match="max_stages"):
        CascadeRouter(max_stages=0).fit(train)
    router = CascadeRouter().fit(train)
    with pytest.raises(TypeError, match="route_with_answers"):
        router.route(Queries.of(["q"]), 0.1)
    with pytest.raises(SchemaError, match="lacks cascade model"):
        router.policy(train.select(models=["cheap", "mid"]))
    with pytest.raises(NotFittedError):
        CascadeRouter().route_with_answers("q", lambda m: "", 0.1)


def test_answer_text_features() -> None:
    assert extract_answer("so the answer is (C).") == "C"
    assert extract_answer("Answer: D") == "D"
    assert extract_answer("#### 1,234") == "1234"
    assert extract_answer("no idea") == ""
    sure, unsure = answer_features(CONFIDENT), answer_features(HEDGING)
    assert sure[0] == 1.0 and unsure[0] == 0.0  # an answer was stated
    assert unsure[3] > sure[3]  # more hedging words
    assert answer_features("The answer is (A). Wait, the answer is (B).")[1] == 1.0  # changed its mind


@pytest.mark.slow
def test_conformance() -> None:
    check_router(CascadeRouter)


def test_the_cascade_scorers_use_the_shared_logistic_fit() -> None:
    from routers.strategies._common import fit_logistic

    # Newton (the cascade's few features) and scikit-learn's lbfgs minimise the same penalised loss.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = np.stack([(x @ [1.0, -2.0, 0.5] + rng.normal(size=400) > 0), rng.random(400) < 0.3], axis=1).astype(float)
    w_n, b_n = fit_logistic(x, y, 1.0, solver="newton")
    w_l, b_l = fit_logistic(x, y, 1.0, solver="lbfgs")
    np.testing.assert_allclose(w_n, w_l, atol=2e-3)
    np.testing.assert_allclose(b_n, b_l, atol=2e-3)
    with pytest.raises(ValueError, match="solver"):
        fit_logistic(x, y, 1.0, solver="sgd")
