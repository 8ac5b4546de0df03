"""Frontier metrics on hand-computed cases (RouterBench hull/AIQ, RouteLLM PGR/APGR/CPT, parity)."""

from __future__ import annotations

import numpy as np
import pytest

from evals import metrics


def test_hull_drops_points_below_and_after_the_best():
    # (0, .2) start; (1, .5) is above the chord (0,.2)-(2,.6)? chord at 1 = .4 < .5 -> kept;
    # (2, .6): chord (1,.5)-(4,.9) at 2 = .6333 > .6 -> dropped; (3, .4) lower than kept -> dropped;
    # (4, .9) top; (5, .8) after the top -> dropped (hull is flat there).
    cost = [0, 1, 2, 3, 4, 5]
    qual = [0.2, 0.5, 0.6, 0.4, 0.9, 0.8]
    hc, hq = metrics.nondecreasing_hull(cost, qual)
    assert hc.tolist() == [0, 1, 4]
    assert hq.tolist() == [0.2, 0.5, 0.9]


def test_hull_collinear_and_equal_cost_points():
    hc, hq = metrics.nondecreasing_hull([0, 1, 2, 2], [0.0, 0.5, 1.0, 0.7])
    assert hc.tolist() == [0, 2]  # (1, .5) is on the segment: not a vertex; (2, .7) is below (2, 1)
    assert hq.tolist() == [0.0, 1.0]
    hc, hq = metrics.nondecreasing_hull([1, 1, 1], [0.3, 0.6, 0.5])
    assert hc.tolist() == [1] and hq.tolist() == [0.6]


def test_aiq_hand_computed():
    # Hull (0,.2)-(1,.5)-(4,.9), flat to 5. Area over [0,5]: .35 + 3*.7 + .9 = 3.35 -> AIQ .67
    cost = [0, 1, 2, 3, 4, 5]
    qual = [0.2, 0.5, 0.6, 0.4, 0.9, 0.8]
    assert metrics.aiq(cost, qual) == pytest.approx(3.35 / 5)
    # Over [1, 4]: 3 * .7 / 3 = .7; over [0, 10]: (3.35 + 5 * .9) / 10
    assert metrics.aiq(cost, qual, cost_range=(1, 4)) == pytest.approx(0.7)
    assert metrics.aiq(cost, qual, cost_range=(0, 10)) == pytest.approx((3.35 + 4.5) / 10)
    # One point: its quality.
    assert metrics.aiq([2.0], [0.4]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="below the cheapest"):
        metrics.aiq(cost, qual, cost_range=(-1, 4))


def test_pgr_apgr_cpt_hand_computed():
    # weak .5, strong .9 -> PGR = (q - .5) / .4
    share = np.array([0.0, 0.2, 0.5, 1.0])
    qual = np.array([0.5, 0.7, 0.82, 0.9])
    np.testing.assert_allclose(metrics.pgr(qual, 0.5, 0.9), [0, 0.5, 0.8, 1.0])
    # Trapezoids: .2*(0+.5)/2 + .3*(.5+.8)/2 + .5*(.8+1)/2 = .05 + .195 + .45 = .695
    assert metrics.apgr(share, qual, 0.5, 0.9) == pytest.approx(0.695)
    assert metrics.cpt(share, qual, 0.5, 0.9, 0.5) == pytest.approx(0.2)
    assert metrics.cpt(share, qual, 0.5, 0.9, 0.8) == pytest.approx(0.5)
    assert metrics.cpt(share, qual, 0.5, 0.9, 1.01) is None


def test_apgr_closes_the_curve_and_random_mix_is_one_half():
    # A router that only has a middle point (share .5, PGR .5) is closed with (0,0) and (1,1): APGR .5,
    # exactly the random mix's.
    assert metrics.apgr([0.5], [0.7], 0.5, 0.9) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="strong model to beat"):
        metrics.pgr([0.5], 0.6, 0.6)


def test_savings_at_parity_and_fractions():
    cost = np.array([1.0, 2.0, 5.0, 8.0, 10.0])
    qual = np.array([0.60, 0.75, 0.796, 0.80, 0.81])
    # Best single: quality .80 at cost 10. Margin .005 -> threshold .795: cheapest point is cost 5.
    p = metrics.savings_at_parity(cost, qual, ref_cost=10.0, ref_quality=0.80, margin=0.005)
    assert (p.index, p.cost, p.savings) == (2, 5.0, pytest.approx(0.5))
    # 95% of .80 = .76 -> cost 5 too; 90% = .72 -> cost 2 (80% saved).
    assert metrics.savings_at_parity(cost, qual, ref_cost=10.0, ref_quality=0.80, fraction=0.95).cost == 5.0
    at90 = metrics.savings_at_parity(cost, qual, ref_cost=10.0, ref_quality=0.80, fraction=0.90)
    assert at90.savings == pytest.approx(0.8)
    # Never at parity -> None.
    assert metrics.savings_at_parity(cost, qual, ref_cost=10.0, ref_quality=0.90) is None
    # The reference arguments are keyword-only: swapping cost and quality by position is impossible.
    with pytest.raises(TypeError):
        metrics.savings_at_parity(cost, qual, 0.80, 10.0)  # type: ignore[misc]
    # Dearer than the reference -> negative savings, not hidden.
    assert metrics.savings_at(np.array([12.0]), np.array([0.9]), 0.8, ref_cost=10.0).savings == pytest.approx(-0.2)


def test_per_category_breakdown():
    cats = np.array(["a", "a", "b"], dtype=object)
    out = metrics.per_category(
        cats,
        np.array([0.001, 0.003, 0.002]),
        np.array([1.0, 0.0, 1.0]),
        ref_cost=np.array([0.004, 0.004, 0.004]),
        ref_score=np.array([1.0, 1.0, 0.0]),
        oracle_score=np.array([1.0, 1.0, 1.0]),
    )
    a = out.set_index("category").loc["a"]
    assert a["n"] == 2 and a["quality"] == 0.5 and a["cost_per_1k"] == pytest.approx(2.0)
    assert a["quality_diff"] == pytest.approx(-0.5) and a["savings"] == pytest.approx(0.5)
    everything = out.set_index("category").loc["(all)"]
    assert everything["n"] == 3 and everything["quality"] == pytest.approx(2 / 3)
