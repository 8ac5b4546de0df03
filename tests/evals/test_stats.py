"""Paired bootstrap intervals and the non-inferiority test."""

from __future__ import annotations

import numpy as np
import pytest

from evals import stats


def test_resample_counts_are_seeded_multinomial_draws():
    W = stats.resample_counts(50, 300, seed=1)
    assert W.shape == (300, 50)
    assert (W.sum(axis=1) == 50).all()
    np.testing.assert_array_equal(W, stats.resample_counts(50, 300, seed=1))
    assert not np.array_equal(W, stats.resample_counts(50, 300, seed=2))
    with pytest.raises(ValueError):
        stats.resample_counts(0, 10)


def test_mean_interval_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = (rng.random(2000) < 0.7).astype(float)
    iv = stats.mean_interval(x, stats.resample_counts(len(x), 2000, seed=0))
    se = np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert iv.n == 2000 and iv.value == pytest.approx(x.mean())
    assert iv.low < iv.value < iv.high
    assert iv.high - iv.low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_paired_difference_is_tighter_than_unpaired():
    rng = np.random.default_rng(1)
    ref = (rng.random(1000) < 0.8).astype(float)
    score = ref.copy()
    score[:20] = 1 - score[:20]  # the router differs from the reference on 20 samples only
    W = stats.resample_counts(1000, 1000, seed=0)
    out = stats.point_intervals(np.full(1000, 0.001), score, W, ref_cost=np.full(1000, 0.004), ref_score=ref)
    diff = out["quality_diff"]
    assert diff.high - diff.low < 0.5 * (out["quality"].high - out["quality"].low)
    assert out["savings"].value == pytest.approx(0.75)
    assert out["cost_per_1k"].value == pytest.approx(1.0)
    assert out["cost_per_1k"].low == pytest.approx(1.0) and out["cost_per_1k"].high == pytest.approx(1.0)


def test_parity_interval_rechooses_the_point_per_resample():
    n = 400
    rng = np.random.default_rng(3)
    ref_q = (rng.random(n) < 0.8).astype(float)
    ref_c = np.full(n, 0.01)
    # Two operating points: cheap (cost .002) and identical to the reference on all but 40 samples where it
    # fails, and the reference itself (cost .01).
    cheap_q = ref_q.copy()
    cheap_q[np.flatnonzero(ref_q == 1)[:40]] = 0
    cost = np.stack([np.full(n, 0.002), ref_c], axis=1)
    score = np.stack([cheap_q, ref_q], axis=1)
    W = stats.resample_counts(n, 1000, seed=0)
    iv, reach = stats.parity_interval(cost, score, W, ref_cost=ref_c, ref_score=ref_q, margin=0.005)
    # Full sample: cheap loses 0.1 -> not at parity; the reference point is (savings 0).
    assert iv.value == pytest.approx(0.0)
    assert reach == 1.0 and iv.low == pytest.approx(0.0) and iv.high == pytest.approx(0.0)
    iv, reach = stats.parity_interval(cost, score, W, ref_cost=ref_c, ref_score=ref_q, margin=0.2)
    assert iv.value == pytest.approx(0.8) and iv.low == pytest.approx(0.8)
    # A router with only the cheap point never reaches parity: no value, no lower bound.
    iv, reach = stats.parity_interval(cost[:, :1], score[:, :1], W, ref_cost=ref_c, ref_score=ref_q, margin=0.005)
    assert iv.value is None and iv.low is None and reach == 0.0


def test_reference_arguments_are_keyword_only():
    W = stats.resample_counts(4, 10, seed=0)
    x = np.ones(4)
    with pytest.raises(TypeError):
        stats.point_intervals(x, x, x, x, W)  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.parity_interval(x[:, None], x[:, None], x, x, W)  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.non_inferiority(x, x, W)  # type: ignore[misc]


def test_non_inferiority_decision_and_p_value():
    rng = np.random.default_rng(4)
    ref = (rng.random(3000) < 0.7).astype(float)
    W = stats.resample_counts(3000, 1000, seed=0)
    same = stats.non_inferiority(ref.copy(), W, ref_score=ref, margin=0.01)
    assert same.non_inferior and same.diff == 0.0 and same.p_value == 0.0
    worse = ref.copy()
    worse[np.flatnonzero(ref == 1)[:150]] = 0  # 5 points worse
    res = stats.non_inferiority(worse, W, ref_score=ref, margin=0.01)
    assert not res.non_inferior and res.p_value > 0.5
    assert res.diff == pytest.approx(-0.05) and res.high < -0.01
    slightly = ref.copy()
    slightly[np.flatnonzero(ref == 1)[:3]] = 0  # 0.1 point worse, well inside a 2-point margin
    ok = stats.non_inferiority(slightly, W, ref_score=ref, margin=0.02)
    assert ok.non_inferior and ok.p_value < 0.001 and ok.n == 3000


def test_wilson_interval_hand_computed_cases():
    # n = 0: no data, no interval.
    lo, hi = stats.wilson_interval(0, 0)
    assert np.isnan(lo) and np.isnan(hi)
    # All wrong: (0, z^2 / (n + z^2)); all right: the mirror image.
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 1.96**2 / (10 + 1.96**2)))
    assert stats.wilson_interval(10, 10) == pytest.approx((10 / (10 + 1.96**2), 1.0))
    # 5 of 10: centre 0.5, half-width 1.96 * sqrt(0.025 + 1.96^2 / 400) / (1 + 1.96^2 / 10).
    half = 1.96 * np.sqrt(0.025 + 1.96**2 / 400) / (1 + 1.96**2 / 10)
    assert stats.wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half))
    # A wider z gives a wider interval.
    lo99, hi99 = stats.wilson_interval(5, 10, z=2.576)
    assert lo99 < 0.5 - half and hi99 > 0.5 + half
    with pytest.raises(ValueError, match="successes <= n"):
        stats.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="successes <= n"):
        stats.wilson_interval(0, -1)


def test_mean_with_ci_uses_wilson_for_binary_scores_and_normal_otherwise():
    assert all(np.isnan(v) for v in stats.mean_with_ci(np.array([])))
    assert stats.mean_with_ci(np.zeros(10)) == pytest.approx((0.0, *stats.wilson_interval(0, 10)))
    assert stats.mean_with_ci(np.ones(10)) == pytest.approx((1.0, *stats.wilson_interval(10, 10)))
    # A single 0/1 score still has a Wilson interval; a single graded score has no spread to estimate.
    assert stats.mean_with_ci([1.0]) == pytest.approx((1.0, *stats.wilson_interval(1, 1)))
    mean, lo, hi = stats.mean_with_ci([0.3])
    assert mean == pytest.approx(0.3) and np.isnan(lo) and np.isnan(hi)
    # Graded scores: mean +- 1.96 sd / sqrt(n), clipped to [0, 1]; non-finite scores are dropped.
    x = np.array([0.2, 0.4, 0.6, 0.8, np.nan])
    half = 1.96 * np.std([0.2, 0.4, 0.6, 0.8], ddof=1) / 2
    assert stats.mean_with_ci(x) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    assert stats.mean_with_ci([0.0, 0.0, 1.0, 0.5])[1] == 0.0  # clipped at 0
