"""Rules (from TOML or inline) and the category router on hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest

from evals.exceptions import ConfigError, DataNotFoundError
from routers import Queries
from routers.strategies.category import CategoryRouter
from routers.strategies.rules import RulesRouter

TOML = """
[[rules]]
name = "easy words"
keywords = ["EASY"]
model = "cheap"

[[rules]]
name = "hard by regex"
regex = "^hard\\\\b"
segment = "tough"

[[rules]]
categories = ["medium"]
max_chars = 40
segment = "middle"
"""


def test_rules_from_a_toml_file_pin_and_trade_within_segments(tiny_table, tmp_path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(TOML)
    r = RulesRouter(config=str(path), smoothing=0.5).fit(tiny_table)
    # The pinned rule ignores the knob; segments move from the cheapest to their best model.
    assert r.route(Queries.of(["easy question e1"], ["easy"]), 100.0) == ["cheap"]
    assert r.route(Queries.of(["hard question h1"], ["hard"]), 0.0) == ["cheap"]
    assert r.route(Queries.of(["hard question h1"], ["hard"]), 0.05) == ["big"]
    assert r.route(Queries.of(["medium question m1"], ["medium"]), 0.05) == ["mid"]
    # First match wins: a hard prompt with the keyword "easy" is pinned to cheap.
    assert r.route(Queries.of(["hard but easy"], ["hard"]), 1.0) == ["cheap"]
    # Policy replay agrees with routing, pinned samples included.
    choice, _, qual = r.policy(tiny_table).outcomes(0.05)
    assert [r.models_[i] for i in choice] == ["cheap", "cheap", "mid", "mid", "big", "big"]
    assert qual.tolist() == [1.0] * 6


def test_rules_inline_with_a_default_model_and_no_category(tiny_table) -> None:
    r = RulesRouter(rules=[{"max_chars": 5, "model": "cheap"}], default_model="mid").fit(tiny_table)
    assert r.route(["hi", "a much longer prompt"], 10.0) == ["cheap", "mid"]
    # A category condition never matches traffic without categories.
    r = RulesRouter(rules=[{"categories": ["hard"], "model": "big"}], default_model="cheap").fit(tiny_table)
    assert r.route(["hard question"], 1.0) == ["cheap"]
    assert r.route(Queries.of(["hard question"], ["hard"]), 1.0) == ["big"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rules": [{"model": "cheap", "segment": "x"}]}, "exactly one action"),
        ({"rules": [{"keyword": ["a"], "model": "cheap"}]}, r"unknown key\(s\) \['keyword'\]"),
        ({"rules": [{"regex": "(", "model": "cheap"}]}, "bad regex"),
        ({"rules": [{"max_chars": "10", "model": "cheap"}]}, "'max_chars' must be int"),
        ({"rules": [{"model": "gpt-9"}]}, "pins model 'gpt-9'"),
        ({"rules": [], "default_model": "gpt-9"}, "default_model 'gpt-9'"),
        ({"rules": [], "config": "x.toml"}, "not both"),
    ],
)
def test_bad_rules_are_named(tiny_table, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RulesRouter(**kwargs).fit(tiny_table)


def test_rules_config_errors(tiny_table, tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        RulesRouter(config=str(tmp_path / "missing.toml")).fit(tiny_table)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RulesRouter(config=str(bad)).fit(tiny_table)


def test_category_router_routes_each_category_to_its_cheapest_good_model(tiny_table) -> None:
    r = CategoryRouter(smoothing=0.5).fit(tiny_table)
    q = Queries.of(["x", "y", "z", "w"], ["easy", "medium", "hard", "unseen"])
    assert r.route(q, 0.05) == ["cheap", "mid", "big", "big"]
    assert r.route(q, 0.0) == ["cheap"] * 4
    qual = r.predict_quality(q)
    # Smoothed towards the global mean: (2 * 1 + 0.5 * 1/3) / (2 + 0.5) for cheap on easy.
    assert qual[0, 0] == pytest.approx((2 + 0.5 / 3) / 2.5)
    assert qual[3].tolist() == pytest.approx(tiny_table.quality.mean(axis=0).tolist())  # unknown -> global
    assert np.array_equal(r.predict_quality(Queries.of(["x"])), qual[3:4])  # no category -> global
