"""Choosing the operating point on validation for a target, and replaying it on test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.workbench.calibration import Target, calibrate, choose_point
from routers.base import Queries, Router

COST = np.array([1.0, 2.0, 5.0, 8.0])
QUAL = np.array([0.60, 0.75, 0.79, 0.80])
SHARE = np.array([0.0, 0.2, 0.6, 1.0])


@pytest.mark.parametrize(
    ("target", "best", "expected"),
    [
        (Target("quality_floor", 0.76), None, (2, True)),  # cheapest reaching .76
        (Target("quality_floor", 0.95), None, (3, False)),  # unreachable: the best point
        (Target("parity", 0.01), 0.80, (2, True)),  # floor .79
        (Target("parity", 0.0), 0.80, (3, True)),
        (Target("budget", 4.0), None, (1, True)),  # best within $4/1k
        (Target("budget", 0.5), None, (0, False)),  # nothing affordable: the cheapest
        (Target("strong_share", 0.6), None, (2, True)),
        (Target("strong_share", 0.1), None, (0, True)),
    ],
)
def test_choose_point(target, best, expected):
    assert choose_point(COST, QUAL, SHARE, target, best_single_quality=best) == expected


def test_target_validation():
    assert Target.from_config(None) == Target("parity", 0.005)
    assert Target.from_config({"kind": "budget", "value": 2}).value == 2.0
    with pytest.raises(ConfigError, match="unknown calibration target 'cheap'"):
        Target("cheap", 1.0)
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        Target("strong_share", 1.5)
    with pytest.raises(ConfigError, match="needs a 'value'"):
        Target.from_config({"kind": "budget"})
    with pytest.raises(ConfigError, match="unknown key"):
        Target.from_config({"kind": "budget", "value": 1, "budget": 2})


class NoisyOracle(Router):
    """Predicts the recorded score plus noise: a good but imperfect router, deterministic per prompt."""

    def __init__(self, *, noise: float = 0.3):
        self.noise = noise

    def _fit(self, train: OutcomeTable) -> None:
        self.table_ = None

    def predict_quality(self, queries: Queries) -> np.ndarray:
        raise NotImplementedError  # replaced by policy below

    def policy(self, table: OutcomeTable, *, use_categories: bool = True):
        from routers.base import ScorePolicy

        t = self._align(table)
        seeds = np.array([int(p.split()[-1]) for p in t.prompts])
        noise = np.stack([np.random.default_rng(s).normal(0, self.noise, len(self.models_)) for s in seeds])
        return ScorePolicy(
            self.models_,
            t.quality + noise,
            np.broadcast_to(self.cost_per_model_, t.cost.shape),
            t.quality,
            t.cost,
        )


def _table(n: int, rng: np.random.Generator) -> OutcomeTable:
    rows = []
    for i in range(n):
        for name, cost, skill in [("small", 0.001, 0.5), ("large", 0.01, 0.85)]:
            rows.append(
                dict(
                    sample_id=f"s{i}",
                    prompt=f"q {i}",
                    model=name,
                    score=float(rng.random() < skill),
                    cost_usd=cost,
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


def test_calibrate_transfers_from_validation_to_test(rng):
    table = _table(1200, rng)
    split = table.split((0.2, 0.4, 0.4), random_state=0)
    router = NoisyOracle().fit(split.train)
    res = calibrate(router, split.validation, split.test, Target("budget", 5.0))
    assert res.met and res.validation.cost_per_1k <= 5.0 + 1e-9
    assert res.strong_model == "large"
    assert res.validation.n == split.validation.n_samples and res.test.n == split.test.n_samples
    # The same lam on test gives a similar cost (same router, same traffic mix).
    assert abs(res.test.cost_per_1k - res.validation.cost_per_1k) < 0.8
    share = calibrate(router, split.validation, split.test, Target("strong_share", 0.25, "large"))
    assert share.validation.strong_share <= 0.25 + 1e-9
    assert abs(share.test.strong_share - share.validation.strong_share) < 0.08
    parity = calibrate(router, split.validation, split.test, Target("parity", 0.01))
    assert parity.met and parity.validation.quality >= split.validation.quality[:, 1].mean() - 0.01 - 1e-9
    d = parity.to_dict()
    assert set(d) >= {"target", "lam", "validation", "test"} and d["target"]["kind"] == "parity"
    with pytest.raises(ConfigError, match="strong_model 'huge'"):
        calibrate(router, split.validation, split.test, Target("strong_share", 0.2, "huge"))


def test_a_risk_controlled_ratio_target_keeps_the_plain_choice_and_says_whether_it_held(rng):
    table = _table(1200, rng)
    split = table.split((0.2, 0.4, 0.4), random_state=0)
    router = NoisyOracle().fit(split.train)
    target = Target("quality_ratio", 0.99, risk_control="bootstrap", confidence=0.9)
    res = calibrate(router, split.validation, split.test, target, n_resamples=400, seed=0)
    best_val = split.validation.quality[:, 1].mean()
    plain = res.plain
    assert plain is not None and plain.target is target and plain.plain is None
    assert plain.met and plain.validation.quality >= 0.99 * best_val - 1e-9
    # The guarantee asks more than the validation mean: never a cheaper point than the plain choice.
    assert res.met and res.lower_bound >= 0
    assert res.validation.cost_per_1k >= plain.validation.cost_per_1k - 1e-9
    assert res.validation.quality >= 0.99 * best_val - 1e-9
    best_test = split.test.quality.mean(axis=0).max()
    assert res.held == (res.test.quality >= 0.99 * best_test - 1e-12)
    d = res.to_dict()
    assert d["held_on_test"] == res.held and d["plain"]["lam"] == plain.lam and d["lower_bound"] == res.lower_bound
    # Without risk control the same target is the plain choice itself.
    same = calibrate(router, split.validation, split.test, Target("quality_ratio", 0.99))
    assert same.lam == plain.lam and same.plain is None and "plain" not in same.to_dict()
