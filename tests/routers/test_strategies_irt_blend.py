"""The irt-blend router on hand-made tables where the right decision is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers import Queries, make_router
from routers.runtime import load_state, mf_head
from routers.strategies.irt_blend import fit_factor_model, ridge_fit

E = "hash-bow-256"
COSTS = {"cheap": 0.001, "mid": 0.005, "big": 0.02}
WORDS = {
    "easy": "add two small numbers like one plus two",
    "medium": "explain the historical causes of the industrial revolution in europe",
    "hard": "prove the spectral theorem for compact self adjoint operators rigorously",
}


def _right(model: str, level: str) -> bool:
    return model == "big" or (model == "mid" and level != "hard") or (model == "cheap" and level == "easy")


def _table(n: int = 16, *, same_text: bool = False) -> OutcomeTable:
    """cheap answers easy prompts, mid easy and medium, big everything; the level is the category."""
    rows = []
    for level, words in WORDS.items():
        for i in range(n):
            text = f"question number {i} {level[0]}" if same_text else f"{words} case {i}"
            for model, cost in COSTS.items():
                rows.append(
                    dict(
                        sample_id=f"{level}-{i}",
                        category=level,
                        prompt=text,
                        model=model,
                        score=float(_right(model, level)),
                        cost_usd=cost,
                    )
                )
    return OutcomeTable(pd.DataFrame(rows))


# Small table, so less shrinkage than the defaults tuned for 6k MMLU-Pro prompts.
PARAMS = {"encoder": E, "C": 10.0, "factor_alpha": 0.1, "folds": 3}
HELD_OUT = [f"{WORDS[lv]} case {100 + k}" for k, lv in enumerate(WORDS)]


def test_sends_each_kind_of_prompt_to_its_cheapest_right_model_without_categories() -> None:
    router = make_router(
        {"name": "irt-blend", "params": {**PARAMS, "use_category": False, "weight_category": 0.0}}
    ).fit(_table())
    assert router.route(HELD_OUT, 0.0) == ["cheap"] * 3
    # lam = 0.05: paying 0.004 more for mid is worth it when it lifts quality by > 0.08, and so on.
    assert router.route(HELD_OUT, 0.05) == ["cheap", "mid", "big"]
    q = router.predict_quality(Queries.of(HELD_OUT))
    assert q.shape == (3, 3) and ((q > 0) & (q < 1)).all()
    assert q[2, 2] - q[2, 0] > 0.5


def test_uses_the_category_when_the_text_says_nothing() -> None:
    router = make_router({"name": "irt-blend", "params": PARAMS}).fit(_table(same_text=True))
    prompts = ["question number 999"] * 3
    assert router.route(Queries.of(prompts, list(WORDS)), 0.05) == ["cheap", "mid", "big"]
    # Without a category (live traffic) it still decides, from each model's overall record.
    q = router.predict_quality(Queries.of(prompts))
    assert np.allclose(q, q[0]) and q[0].argmax() == 2


def test_export_state_rebuilds_the_same_predictions() -> None:
    router = make_router({"name": "irt-blend", "params": PARAMS}).fit(_table())
    meta, arrays = router.export_state()
    assert meta["kind"] == "blend" and [p["kind"] for p in meta["parts"]] == ["linear", "mf", "category"]
    rt = load_state(meta, arrays)
    cats = ["easy", "", "hard"]
    np.testing.assert_allclose(
        rt.predict_quality(HELD_OUT, cats), router.predict_quality(Queries.of(HELD_OUT, cats))
    )
    assert rt.route(HELD_OUT, 0.05, cats) == router.route(Queries.of(HELD_OUT, cats), 0.05)


def test_factor_head_equals_the_two_stage_model() -> None:
    rng = np.random.default_rng(0)
    n, d, m, n_cat = 120, 6, 4, 2
    x = np.hstack([rng.normal(size=(n, d - n_cat)), np.eye(n_cat)[rng.integers(0, n_cat, n)]])
    y = (rng.random((n, m)) < 1 / (1 + np.exp(-x[:, :1] * np.array([1.0, 2.0, -1.0, 0.5])))).astype(float)
    proj, vecs, bias = fit_factor_model(x, y, n_cat=n_cat, factors=2, alpha=1.0, c=1.0, folds=4, seed=0)
    assert proj.shape == (2 + n_cat, d) and vecs.shape == (m, 2 + n_cat)
    # Stage by stage: ridge scores, standardised as in fitting, then the per-model logistic regression.
    yc = y - y.mean(0)
    scores = yc @ np.linalg.svd(yc, full_matrices=False)[2][:2].T
    coef, icpt = ridge_fit(x, scores, 1.0)
    z = x @ coef.T + icpt
    lin = (
        x @ proj[:2].T
    )  # the head's factor scores: the ridge scores, standardised (an increasing affine map)
    for k in range(2):
        assert np.corrcoef(lin[:, k], z[:, k])[0, 1] > 1 - 1e-9
    np.testing.assert_allclose(x @ proj[2:].T, x[:, d - n_cat :])  # category rows pass the one-hot through
    q = mf_head(x, proj, vecs, bias)
    assert q.shape == (n, m) and np.corrcoef(q[:, 1], x[:, 0])[0, 1] > 0.5  # model 1 tracks feature 0
    assert np.corrcoef(q[:, 2], x[:, 0])[0, 1] < -0.5


def test_ridge_fit_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    w = np.array([[1.0, -2.0, 0.5]])
    coef, icpt = ridge_fit(x, x @ w.T + 3.0, 1e-9)
    np.testing.assert_allclose(coef, w, atol=1e-6)
    np.testing.assert_allclose(icpt, [3.0], atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"weight_linear": 0.0, "weight_factors": 0.0, "weight_category": 0.0},
        {"weight_factors": -1.0},
        {"C": 0.0},
        {"folds": 1},
        {"factors": -1},
    ],
)
def test_bad_parameters_raise_a_clear_error(bad) -> None:
    with pytest.raises(ConfigError, match="irt-blend"):
        make_router({"name": "irt-blend", "params": {**PARAMS, **bad}}).fit(_table(4))
