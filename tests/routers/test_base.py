"""The base decision rule and the fast sweep of ScorePolicy, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from evals.exceptions import ConfigError, NotFittedError, SchemaError
from evals.outcomes import OutcomeTable
from routers.base import Queries, Router, ScorePolicy, check_operating_point, decide
from routers.checks import check_table
from routers.params import InvalidParameterError, Param, boolean, integer, options, real


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


class _Flaky(Router):
    """Fails in ``_fit`` after setting some state when ``fail`` is True."""

    parameter_constraints = {"fail": boolean(), "k": integer(low=1)}

    def __init__(self, *, fail: bool = False, k: int = 1):
        self.fail = fail
        self.k = k

    def _fit(self, train: OutcomeTable) -> None:
        self.half_ = 1
        if self.fail:
            raise RuntimeError("boom")

    def predict_quality(self, queries: Queries) -> np.ndarray:
        self._check_fitted()
        return np.zeros((len(queries), len(self.models_)))


def test_a_failed_fit_leaves_no_fitted_state():
    table = check_table()
    router = _Flaky().fit(table)
    assert router.is_fitted and router.half_ == 1
    router.set_params(fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        router.fit(table)
    # Before the fix, models_ stayed set: is_fitted said True and route() failed with AttributeError.
    assert not router.is_fitted
    assert [a for a in vars(router) if a.endswith("_")] == []
    with pytest.raises(NotFittedError, match="_Flaky is not fitted"):
        router.route(["q"], 0.1)


def test_fit_validates_declared_parameters_first():
    table = check_table()
    router = _Flaky(k=0)
    with pytest.raises(InvalidParameterError, match=r"^router '_Flaky': parameter 'k' must be an int >= 1, got 0$"):
        router.fit(table)
    assert isinstance(InvalidParameterError("x"), ConfigError)  # the CLI prints it as a one-line error
    assert not router.is_fitted
    with pytest.raises(InvalidParameterError, match="'fail' must be a boolean, got int 1"):
        _Flaky(fail=1).fit(table)


@pytest.mark.parametrize(
    ("param", "good", "bad", "text"),
    [
        (integer(low=1), [1, 200, np.int64(3)], [0, -5, 1.5, True, "3", None], "an int >= 1"),
        (real(low=0, closed="neither"), [0.01, 1, np.float32(2.0)], [0, -1.0, float("inf"), float("nan"), "x"],
         "a float > 0"),
        (real(low=0, high=1, closed="right"), [1.0, 0.5], [0.0, 1.01], "a float in (0, 1]"),
        (real(low=0, high=1, closed="left"), [0.0, 0.99], [1.0], "a float in [0, 1)"),
        (real(low=0, nullable=True), [None, 0.0], [-0.1], "a float >= 0 or None"),
        (boolean(), [True, False, np.bool_(True)], [0, 1, "true", None], "a boolean"),
        (options("a", "b"), ["a", "b"], ["c", 1, None], "one of 'a', 'b'"),
    ],
)
def test_parameter_constraints_accept_and_refuse(param: Param, good, bad, text):
    assert param.text() == text
    for value in good:
        assert param.problem(value) is None, value
    for value in bad:
        assert param.problem(value) is not None, value
    described = param.to_dict()
    assert described["text"] == text and described["kind"] == param.kind


def test_check_operating_point():
    assert check_operating_point(0) == 0.0 and check_operating_point(0.5) == 0.5
    for lam in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            check_operating_point(lam)


def test_validate_params_refuses_bad_config_values_in_one_line():
    from evals.exceptions import UnknownComponentError
    from routers import make_router
    from routers.registry import validate_params

    assert validate_params("knn", {"k": 10, "encoder": "hash-bow-64"}).__name__ == "KNNRouter"
    cases = [
        ({"k": -5}, InvalidParameterError, r"^router 'knn': parameter 'k' must be an int >= 1, got -5$"),
        ({"k": "5"}, InvalidParameterError, r"^router 'knn': parameter 'k' must be an int >= 1, got str '5'$"),
        ({"encoder": "minilm_static"}, InvalidParameterError, r"parameter 'encoder' must be an encoder name"),
        ({"kk": 3}, ConfigError, r"^router 'knn' has no parameter\(s\) \['kk'\] \(did you mean 'k'\?\)"),
    ]
    for params, error, message in cases:
        with pytest.raises(error, match=message):
            validate_params("knn", params)
        with pytest.raises(error, match=message):
            make_router({"name": "knn", "params": params})  # configs and forms build through make_router
    with pytest.raises(UnknownComponentError, match="did you mean 'knn'"):
        validate_params("knnn", {})
    with pytest.raises(ConfigError, match="params must be a table"):
        make_router({"name": "knn", "params": "k=5"})
