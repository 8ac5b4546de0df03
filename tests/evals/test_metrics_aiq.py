"""AIQ on a common cost range (RouterBench's definition) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from evals import metrics


def test_single_model_no_longer_outranks_a_router_that_reaches_it_cheaper():
    router = ([1.0, 2.0, 3.0], [0.6, 0.85, 0.92])
    single = ([2.0], [0.9])
    # The per-frontier AIQ: the single model scores its own quality (.9), above the router's .805.
    assert metrics.aiq(*single) == pytest.approx(0.9)
    assert metrics.aiq(*router) == pytest.approx((0.725 + 0.885) / 2)
    assert metrics.aiq(*single) > metrics.aiq(*router)
    # Over the shared range [1, 3]: the router's area is unchanged (.805); the single model cannot operate
    # below cost 2 (quality 0 there) and is flat at .9 from 2 to 3: .9 * 1 / 2 = .45.
    common = metrics.aiq_common({"router": router, "single": single})
    assert common == pytest.approx({"router": 0.805, "single": 0.45})
    assert max(common, key=common.get) == "router"


def test_hulls_are_extended_flat_to_the_dearest_cost_of_all_frontiers():
    # a: hull (0, .2)-(1, .5)-(4, .9) ends at 4 (its point (5, .8) is below the top); b reaches cost 10.
    a = ([0, 1, 2, 3, 4, 5], [0.2, 0.5, 0.6, 0.4, 0.9, 0.8])
    b = ([0.0, 10.0], [0.1, 0.95])
    out = metrics.aiq_common({"a": a, "b": b})
    # a over [0, 10]: .35 + 3 * .7 + 6 * .9 = 7.85 -> .785 (RouterBench: append (max_x, last y), trapz / width)
    assert out["a"] == pytest.approx(7.85 / 10)
    # b: a straight line from .1 to .95 over [0, 10]: mean .525.
    assert out["b"] == pytest.approx(0.525)
    # Same as the per-frontier AIQ when it is given the same range (it also extends flat to the right).
    assert out["a"] == pytest.approx(metrics.aiq(*a, cost_range=(0, 10)))


def test_the_stretch_left_of_a_frontiers_cheapest_point_counts_as_zero():
    cheap = ([1.0], [0.5])
    dear = ([3.0, 5.0], [0.7, 0.9])
    out = metrics.aiq_common({"cheap": cheap, "dear": dear})
    # Range [1, 5]. cheap: .5 flat over 4 -> .5. dear: 0 over [1, 3], then (.7 + .9) / 2 * 2 = 1.6 -> 1.6 / 4.
    assert out == pytest.approx({"cheap": 0.5, "dear": 0.4})


def test_an_explicit_range_and_a_zero_width_one():
    f = {"r": ([1.0, 3.0], [0.4, 0.8]), "s": ([2.0], [0.7])}
    out = metrics.aiq_common(f, cost_range=(2.0, 4.0))
    # r over [2, 4]: from .6 at 2 to .8 at 3 (area .7), flat .8 to 4 (.8) -> 1.5 / 2; s: .7 flat.
    assert out == pytest.approx({"r": 0.75, "s": 0.7})
    # A range starting below every point: zero there for both.
    out = metrics.aiq_common(f, cost_range=(0.0, 4.0))
    assert out["r"] == pytest.approx((0.6 * 2 + 0.8) / 4)
    assert out["s"] == pytest.approx(0.7 * 2 / 4)
    # Zero width: the hull's value at that cost, 0 where a frontier cannot operate.
    assert metrics.aiq_common(f, cost_range=(1.5, 1.5)) == pytest.approx({"r": 0.5, "s": 0.0})
    # A range that ends before a frontier starts: 0.
    assert metrics.aiq_common(f, cost_range=(1.0, 1.5))["s"] == 0.0


def test_order_is_kept_and_bad_input_is_refused():
    f = {"z": (np.array([1.0, 2.0]), np.array([0.1, 0.2])), "a": ([1.5], [0.3])}
    assert list(metrics.aiq_common(f)) == ["z", "a"]
    with pytest.raises(ValueError, match="at least one frontier"):
        metrics.aiq_common({})
    with pytest.raises(ValueError, match="finite and increasing"):
        metrics.aiq_common(f, cost_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="as many costs as qualities"):
        metrics.aiq_common({"bad": ([1.0, 2.0], [0.5])})


def test_agrees_with_routerbench_calc_aiq_on_a_range_from_zero():
    # calc_AIQ: each hull gets (max_x, last y) appended, np.trapz from its first point, divided by max_x = 3.
    # a: (1, .5)-(3, .9): area 1.4 -> .4667; b: (2, .8)-(3, .8): area .8 -> .2667.
    out = metrics.aiq_common({"a": ([1.0, 3.0], [0.5, 0.9]), "b": ([2.0], [0.8])}, cost_range=(0.0, 3.0))
    assert out == pytest.approx({"a": 1.4 / 3, "b": 0.8 / 3})
