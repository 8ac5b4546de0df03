"""Learned routers (classifier, kNN, MF, cost-aware, ensemble) on a table whose prompts separate the classes.

``cheap`` answers the easy prompts, ``mid`` easy and medium, ``big`` everything; the prompts' words say
which is which, so on new prompts of each kind the right decision at a moderate operating point is known.
The encoder is the dependency-free hashing bag of words (fast, deterministic); the MiniLM path is the same
code with another encoder name.
"""

from __future__ import annotations

import numpy as np
import pytest
from _router_tables import COSTS, held_out_prompts, separable_table

from routers import Queries, make_router
from routers.strategies.cost_aware import fit_prices

E = "hash-bow-256"
SPECS = {
    "classifier": {"encoder": E, "use_category": False, "C": 100.0},
    "knn": {"encoder": E, "k": 3, "temperature": 0.02, "prior_weight": 0.2},
    "mf": {"encoder": E, "use_category": False, "dim": 8, "epochs": 200, "lr": 0.05},
    "cost-aware": {"encoder": E, "use_category": False, "C": 100.0},
    "ensemble": {
        "encoder": E,
        "members": [
            {"name": "classifier", "params": {"use_category": False, "C": 100.0}},
            {"name": "knn", "params": {"k": 3, "temperature": 0.02}},
        ],
    },
}


@pytest.fixture(scope="module")
def table():
    return separable_table()


@pytest.mark.parametrize("name", list(SPECS))
def test_learned_router_sends_each_kind_of_prompt_to_its_cheapest_right_model(name, table) -> None:
    router = make_router({"name": name, "params": SPECS[name]}).fit(table)
    prompts, levels = held_out_prompts()
    assert router.route(prompts, 0.0) == ["cheap"] * 3
    assert router.route(prompts, 0.05) == ["cheap", "mid", "big"], f"{name} on {levels}"
    q = router.predict_quality(Queries.of(prompts))
    assert q.shape == (3, 3) and ((q >= 0) & (q <= 1)).all()
    assert q[2, 2] - q[2, 0] > 0.5  # on a hard prompt, big is far more likely right than cheap


def test_classifier_uses_the_category_when_given_and_works_without(table) -> None:
    r = make_router({"name": "classifier", "params": {"encoder": E, "use_category": True, "C": 100.0}}).fit(
        table
    )
    prompts, levels = held_out_prompts()
    assert r.route(Queries.of(prompts, levels), 0.05) == ["cheap", "mid", "big"]
    assert r.route(prompts, 0.05) == ["cheap", "mid", "big"]  # no categories (live traffic)
    assert r.route(Queries.of(prompts, ["never-seen"] * 3), 0.05) == ["cheap", "mid", "big"]


def test_classifier_fits_fractional_scores_as_soft_labels(table) -> None:
    frame = table.frame
    frame["score"] = np.where(frame["model"] == "mid", 0.7, frame["score"])  # a judge-style grade
    from evals.outcomes import OutcomeTable

    soft = OutcomeTable(frame)
    r = make_router({"name": "classifier", "params": {"encoder": E, "use_category": False, "C": 100.0}}).fit(
        soft
    )
    q = r.predict_quality(Queries.of(held_out_prompts()[0]))
    assert q[:, 1] == pytest.approx([0.7] * 3, abs=0.05)


def test_cost_aware_recovers_prices_and_predicts_longer_answers_costing_more(table) -> None:
    prices, in_model, has = fit_prices(table)
    assert has.all()
    # cost = cost_m * (0.5 + tout / 100): price per output token = cost_m / 100, fee = cost_m / 2.
    for j, m in enumerate(table.models):
        assert prices[j] == pytest.approx([0.0, COSTS[m] / 100, COSTS[m] / 2], abs=1e-9)
    r = make_router({"name": "cost-aware", "params": SPECS["cost-aware"]}).fit(table)
    c = r.predict_cost(Queries.of(held_out_prompts()[0]))
    assert (np.diff(c, axis=0) > 0).all()  # easy < medium < hard for every model
    assert c[2, 2] == pytest.approx(COSTS["big"] * 2.5, rel=0.1)


def test_mf_is_seeded(table) -> None:
    spec = {"name": "mf", "params": {**SPECS["mf"], "epochs": 20}}
    a = make_router(spec).fit(table).predict_quality(Queries.of(["x y z"]))
    b = make_router(spec).fit(table).predict_quality(Queries.of(["x y z"]))
    c = (
        make_router({"name": "mf", "params": {**spec["params"], "random_state": 1}})
        .fit(table)
        .predict_quality(Queries.of(["x y z"]))
    )
    assert np.array_equal(a, b) and not np.array_equal(a, c)
