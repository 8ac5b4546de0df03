"""The stacked router: out-of-fold base predictions recalibrated per category by a logistic stack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers import Queries, make_router
from routers.strategies.stacked import StackedRouter


def _category_table(n: int = 160, seed: int = 0) -> OutcomeTable:
    """``cheap`` is right on 90% of "easy" and 10% of "hard" prompts; the prompt text carries no signal."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    rows = []
    for i in range(n):
        cat = "easy" if i % 2 else "hard"
        text = " ".join(rng.choice(words, size=6))
        cheap_right = rng.random() < (0.9 if cat == "easy" else 0.1)
        for model, right, cost in (("cheap", cheap_right, 0.001), ("big", True, 0.01)):
            rows.append(
                dict(sample_id=f"s{i}", category=cat, prompt=text, model=model, score=float(right), cost_usd=cost)
            )
    return OutcomeTable(pd.DataFrame(rows))


def test_the_stack_learns_the_category_prior_a_category_blind_base_lacks():
    table = _category_table()
    base = make_router({"name": "knn", "params": {"encoder": "hash-bow-64", "k": 20}}).fit(table)
    stacked = StackedRouter(base="knn", encoder="hash-bow-64", folds=4).fit(table)
    cheap = table.models.index("cheap")
    q = Queries.of(["alpha beta gamma delta omega sigma"] * 2, ["easy", "hard"])
    p_base = base.predict_quality(q)[:, cheap]
    p_stack = stacked.predict_quality(q)[:, cheap]
    # The base (knn without the category) cannot tell the two apart; the stack recovers ~.9 vs ~.1.
    assert abs(p_base[0] - p_base[1]) < 0.2
    assert p_stack[0] > 0.75 and p_stack[1] < 0.25
    # Without a category (live traffic) it falls back to a calibrated middle, from the category-hidden rows.
    p_none = stacked.predict_quality(Queries.of(["alpha beta gamma delta omega sigma"]))[0, cheap]
    assert 0.3 < p_none < 0.7
    # Routing follows: at a middling operating point the easy prompt stays cheap, the hard one goes big.
    assert stacked.route(q, 0.02) == ["cheap", "big"]


def test_base_gets_the_encoder_and_text_and_the_stack_is_not_exportable():
    table = _category_table(60)
    r = StackedRouter(base="classifier", encoder="hash-bow-64", text="auto", folds=3).fit(table)
    assert r.base_.get_params()["encoder"] == "hash-bow-64" and r.base_.text == "auto"
    assert not StackedRouter.exportable and not hasattr(r, "export_state")
    assert r.coef_.shape == (2, 2 + 2)  # per model: the logits of both models, then the two categories


def test_too_few_samples_for_the_folds_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"^stacked: 6 train samples are too few for 5 folds \(need 10\)$"):
        StackedRouter(encoder="hash-bow-64").fit(_category_table(6))
