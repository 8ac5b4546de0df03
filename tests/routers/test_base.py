"""The base decision rule and the fast sweep of ScorePolicy, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from evals.exceptions import SchemaError
from routers.base import Queries, ScorePolicy, decide


def test_decide_extremes_pick_cheapest_and_best():
    q = np.array([[0.2, 0.9, 0.5]])
    c = np.array([[1.0, 10.0, 3.0]])
    assert decide(q, c, 0.0).tolist() == [0]  # free quality is worthless: the cheapest
    assert decide(q, c, 1e6).tolist() == [1]  # quality is everything: the best
    # lam = 10: utilities 2-1=1, 9-10=-1, 5-3=2 -> the middle model
    assert decide(q, c, 10.0).tolist() == [2]


def test_decide_ties_go_to_cheaper_then_better():
    q = np.array([[0.5, 0.5, 0.7]])
    c = np.array([[2.0, 1.0, 1.0]])
    # lam = 0: models 1 and 2 cost the same; the better one (2) wins.
    assert decide(q, c, 0.0).tolist() == [2]
    # Exactly on a tie of utility: lam*0.5-1 == lam*0.7-1 only at lam=0, so use a constructed tie.
    q2, c2 = np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])
    assert decide(q2, c2, 1.0).tolist() == [0]


@pytest.mark.parametrize("lam", [-1.0, float("nan"), float("inf")])
def test_decide_rejects_bad_operating_points(lam):
    with pytest.raises(ValueError, match="operating point"):
        decide(np.zeros((1, 2)), np.zeros((1, 2)), lam)


def _random_policy(rng, n=400, m=7, ties=False):
    qh = rng.random((n, m))
    ch = rng.random((n, m)) * 0.01
    if ties:  # coarse values create exact ties in predictions
        qh, ch = np.round(qh, 1), np.round(ch, 3)
    q = (rng.random((n, m)) < 0.5).astype(float)
    c = rng.random((n, m)) * 0.01
    return ScorePolicy([f"m{j}" for j in range(m)], qh, ch, q, c)


@pytest.mark.parametrize("ties", [False, True])
def test_curve_equals_brute_force_at_every_grid_point(rng, ties):
    pol = _random_policy(rng, ties=ties)
    grid = pol.grid(150)
    # Coarse predictions have fewer distinct decision changes than points asked for; the grid then has one
    # point per gap (there is nothing else to show), otherwise at least 100.
    assert len(grid) >= (40 if ties else 100) and np.all(np.diff(grid) > 0)
    cost, qual, share = pol.curve(grid)
    for k, lam in enumerate(grid):
        choice, c, q = pol.outcomes(float(lam))
        assert c.mean() == pytest.approx(cost[k], abs=1e-12)
        assert q.mean() == pytest.approx(qual[k], abs=1e-12)
        np.testing.assert_allclose(np.bincount(choice, minlength=7) / len(choice), share[k], atol=1e-12)


def test_predicted_cost_never_decreases_with_lam(rng):
    pol = _random_policy(rng)
    rows = np.arange(pol.cost_hat.shape[0])
    prev = None
    for lam in pol.grid(100):
        choice = decide(pol.quality_hat, pol.cost_hat, float(lam))
        now = pol.cost_hat[rows, choice]
        if prev is not None:
            assert np.all(now >= prev - 1e-15)
        prev = now


def test_grid_spans_cheapest_to_best(rng):
    pol = _random_policy(rng)
    grid = pol.grid(200)
    first, _, _ = pol.outcomes(float(grid[0]))
    last, _, _ = pol.outcomes(float(grid[-1]))
    assert np.array_equal(first, pol.cost_hat.argmin(axis=1))
    assert np.array_equal(last, pol.quality_hat.argmax(axis=1))


def test_queries_validate_lengths():
    assert len(Queries.of("one prompt")) == 1
    assert Queries.of(["a", "b"], ["x", None]).categories == ("x", "")
    with pytest.raises(SchemaError, match="2 prompts but 1 categories"):
        Queries.of(["a", "b"], ["x"])
