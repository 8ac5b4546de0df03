"""Frontier replay: router sweep, oracle, single models, random mix; and the fast ScorePolicy sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.outcomes import OutcomeTable
from evals.workbench.frontier import compute_frontier, oracle_choice
from routers.base import Policy, Queries, Router, ScorePolicy, _hull_steps


class PerfectRouter(Router):
    """Predicts the recorded score (knows the answers): its frontier must reach the oracle."""

    def _fit(self, train: OutcomeTable) -> None:
        self.lookup_ = {}

    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> Policy:
        self._check_fitted()
        t = self._align(table)
        return ScorePolicy(self.models_, t.quality, t.cost, t.quality, t.cost)

    def predict_quality(self, queries: Queries) -> np.ndarray:  # pragma: no cover - policy is overridden
        raise NotImplementedError


class CategoryMeanRouter(Router):
    """Mean train quality per (category, model)."""

    def _fit(self, train: OutcomeTable) -> None:
        frame = pd.DataFrame(train.quality, columns=list(train.models))
        frame["category"] = train.categories
        self.means_ = frame.groupby("category").mean()

    def predict_quality(self, queries: Queries) -> np.ndarray:
        self._check_fitted()
        return self.means_.loc[list(queries.categories)].to_numpy()


def test_frontier_of_tiny_table(tiny_table):
    router = CategoryMeanRouter().fit(tiny_table)
    fr = compute_frontier(router, tiny_table, n_points=200, name="cat")
    # Category means are exact here, so the router reaches the oracle's quality (1.0) at the oracle's cost.
    assert fr.router.quality[0] == pytest.approx(2 / 6)  # lam = 0: all to "cheap"
    assert fr.router.quality[-1] == pytest.approx(1.0)
    # Oracle: e* -> cheap (.001), m* -> mid (.005), h* -> big (.02): cost per 1k = (2+10+40)/6
    assert fr.oracle.quality[-1] == pytest.approx(1.0)
    assert fr.oracle.cost_per_1k[-1] == pytest.approx((0.002 + 0.010 + 0.040) / 6 * 1000)
    assert fr.router.cost_per_1k[-1] == pytest.approx(fr.oracle.cost_per_1k[-1])
    # Singles in model order; best = big, cheapest = cheap; random mix joins them.
    np.testing.assert_allclose(fr.singles.quality, [2 / 6, 4 / 6, 1.0])
    np.testing.assert_allclose(fr.singles.cost_per_1k, [1.0, 5.0, 20.0])
    assert fr.models[fr.best_single] == "big" and fr.models[fr.cheapest_single] == "cheap"
    assert fr.random.cost_per_1k[0] == pytest.approx(1.0) and fr.random.cost_per_1k[-1] == pytest.approx(20.0)
    np.testing.assert_allclose(fr.random.quality, 2 / 6 + fr.random.lam * (4 / 6))
    # Traffic shares sum to one at every point.
    np.testing.assert_allclose(fr.router.share.sum(axis=1), 1.0)
    # Cost never decreases with the operating point.
    assert (np.diff(fr.router.cost) >= -1e-15).all()


def test_to_frame_has_every_line(tiny_table):
    fr = compute_frontier(CategoryMeanRouter().fit(tiny_table), tiny_table, name="cat")
    df = fr.to_frame()
    assert set(df["kind"]) == {"router", "oracle", "single", "random"}
    assert {"cost_per_1k", "quality", "lam", "share_cheap", "share_mid", "share_big"} <= set(df.columns)
    singles = df[df["kind"] == "single"].set_index("curve")
    assert singles.loc["mid", "cost_per_1k"] == pytest.approx(5.0)
    assert not df["cost_estimated"].any()


def test_per_sample_matches_curve(tiny_table):
    fr = compute_frontier(CategoryMeanRouter().fit(tiny_table), tiny_table, name="cat")
    choice, cost, score = fr.per_sample()
    np.testing.assert_allclose(cost.mean(axis=0), fr.router.cost)
    np.testing.assert_allclose(score.mean(axis=0), fr.router.quality)
    assert choice.shape == (6, len(fr.router))


def test_oracle_choice_is_cheapest_top_scorer():
    q = np.array([[1.0, 1.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    c = np.array([[3.0, 1.0, 0.5], [1.0, 2.0, 1.5], [2.0, 1.0, 3.0]])
    assert oracle_choice(q, c).tolist() == [1, 2, 1]


def test_perfect_router_reaches_the_oracle(rng):
    n, m = 300, 5
    rows = []
    costs = np.array([0.001, 0.002, 0.004, 0.008, 0.016])
    skill = np.array([0.3, 0.45, 0.6, 0.7, 0.8])
    for i in range(n):
        for j in range(m):
            rows.append(
                dict(
                    sample_id=f"s{i}",
                    model=f"m{j}",
                    score=float(rng.random() < skill[j]),
                    cost_usd=costs[j] * (1 + 0.1 * rng.random()),
                )
            )
    table = OutcomeTable(pd.DataFrame(rows))
    fr = compute_frontier(PerfectRouter().fit(table), table, name="perfect")
    assert len(fr.router) >= 100
    assert fr.router.quality.max() == pytest.approx(fr.oracle.quality[-1])
    np.testing.assert_allclose(fr.router.cost, fr.oracle.cost)


@pytest.mark.parametrize("seed", range(6))
def test_fast_sweep_equals_per_point_decisions(seed):
    """ScorePolicy's hull-step sweep gives exactly what deciding at every point gives (ties included)."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        q_hat = rng.integers(0, 4, (n, m)) / 3
        if seed % 2:
            c_hat = rng.integers(0, 4, (n, m)) / 100  # per-row costs, with ties
        else:
            c_hat = np.broadcast_to(rng.integers(0, 3, m) / 10, (n, m)).copy()  # shared costs
        policy = ScorePolicy(
            [f"m{j}" for j in range(m)],
            q_hat,
            c_hat,
            rng.integers(0, 2, (n, m)).astype(float),
            rng.random((n, m)),
        )
        lams = policy.grid(50)
        fast = policy.curve(lams)
        slow = Policy.curve(policy, lams)
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_hull_steps_are_the_decision_changes():
    q = np.array([[0.2, 0.5, 0.9, 0.6]])
    c = np.array([[0.0, 1.0, 4.0, 2.0]])
    row, lam, before, after = _hull_steps(q, c)
    # cheapest (0) at lam 0; to model 1 at 1/.3; model 3 (2, .6) is under the chord to model 2 -> skipped;
    # to model 2 at 3/.4.
    assert row.tolist() == [0, 0, 0]
    assert before.tolist() == [-1, 0, 1] and after.tolist() == [0, 1, 2]
    np.testing.assert_allclose(lam, [0.0, 1 / 0.3, 3 / 0.4])


def test_sweep_policies_in_threads_equals_one_at_a_time():
    from evals.workbench.frontier import sweep_policies
    from routers.base import ScorePolicy

    rng = np.random.default_rng(3)
    policies = [
        ScorePolicy([f"m{j}" for j in range(5)], rng.random((300, 5)), rng.random((300, 5)),
                    (rng.random((300, 5)) < 0.5).astype(float), rng.random((300, 5)))
        for _ in range(4)
    ]
    one = sweep_policies(policies, n_points=120, max_workers=1)
    two = sweep_policies(policies, n_points=120, max_workers=2)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    lams, cost, qual, share = one[0]
    assert len(lams) >= 100 and cost.shape == qual.shape == lams.shape and share.shape == (len(lams), 5)
