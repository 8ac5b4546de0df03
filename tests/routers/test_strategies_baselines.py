"""Baselines on hand-made tables: single model, random mix, oracle."""

from __future__ import annotations

import numpy as np
import pytest

from evals.exceptions import ConfigError, NotFittedError
from routers import Queries, make_router
from routers.strategies.baselines import OracleRouter, RandomMixRouter, SingleModelRouter


def test_single_defaults_to_the_best_train_model_at_every_operating_point(tiny_table) -> None:
    r = SingleModelRouter().fit(tiny_table)
    assert r.chosen_model_ == "big"
    for lam in (0.0, 0.01, 100.0):
        assert r.route(["anything", "else"], lam) == ["big", "big"]
    cost, qual, share = r.policy(tiny_table).curve(np.array([0.0, 1.0]))
    assert cost.tolist() == pytest.approx([0.02, 0.02]) and qual.tolist() == [1.0, 1.0]
    assert share[:, 2].tolist() == [1.0, 1.0]


def test_single_with_a_named_model_and_an_unknown_one(tiny_table) -> None:
    assert SingleModelRouter(model="cheap").fit(tiny_table).route("x", 5.0) == ["cheap"]
    with pytest.raises(ConfigError, match="model='gpt-9'.*cheap, mid, big"):
        SingleModelRouter(model="gpt-9").fit(tiny_table)


def test_random_mix_share_rises_with_the_knob_and_is_seeded(tiny_table) -> None:
    r = RandomMixRouter().fit(tiny_table)  # weak = cheap, strong = big
    prompts = [f"prompt {i}" for i in range(2000)]
    be = r.export_state()[0]["break_even"]
    assert be == pytest.approx((0.02 - 0.001) / (1.0 - 1 / 3))
    shares = [np.mean(np.array(r.route(prompts, lam)) == "big") for lam in (0.0, be / 3, be, 3 * be)]
    assert shares[0] == 0.0
    assert shares == sorted(shares)
    assert shares[2] == pytest.approx(0.5, abs=0.04)  # share = lam / (lam + break_even)
    assert shares[3] == pytest.approx(0.75, abs=0.04)
    assert set(r.route(prompts, be)) == {"cheap", "big"}
    # Same seed, same draws; another seed, other draws; a prompt never flips back to weak as lam rises.
    assert r.route(prompts, be) == RandomMixRouter().fit(tiny_table).route(prompts, be)
    assert r.route(prompts, be) != RandomMixRouter(random_state=1).fit(tiny_table).route(prompts, be)
    low, high = np.array(r.route(prompts, be / 2)), np.array(r.route(prompts, be))
    assert not ((low == "big") & (high == "cheap")).any()


def test_oracle_picks_the_cheapest_right_model(tiny_table) -> None:
    r = OracleRouter().fit(tiny_table)
    assert r.exportable is False and r.uses_outcomes_at_route_time is True
    choice, cost, qual = r.policy(tiny_table).outcomes(1.0)
    names = [r.models_[i] for i in choice]
    assert names == ["cheap", "cheap", "mid", "mid", "big", "big"]
    assert qual.tolist() == [1.0] * 6
    assert r.policy(tiny_table).outcomes(0.0)[0].tolist() == [0] * 6  # lam = 0: cheapest everywhere
    with pytest.raises(ConfigError, match="recorded outcomes"):
        r.route(["a new prompt"], 1.0)


def test_unfitted_baselines_raise_not_fitted(tiny_table) -> None:
    for name in ("single", "random-mix"):
        with pytest.raises(NotFittedError, match="not fitted"):
            make_router(name).route(["x"], 1.0)
    with pytest.raises(NotFittedError):
        OracleRouter().predict_quality(Queries.of(["x"]))
