"""Every registered router passes the shared conformance check (registering is enough to be checked).

One test per (router, check) pair, like scikit-learn's ``parametrize_with_checks`` (ids ``knn-cost_monotone``):
a check a router declares it fails (``_expected_failed_checks``) is a strict xfail with the declared reason,
and a check that does not apply is a skip with its reason, never a silent pass.
"""

from __future__ import annotations

import numpy as np
import pytest

import routers
from evals.exceptions import NotFittedError
from evals.outcomes import OutcomeTable
from routers import Queries, Router, register_router, router_registry
from routers.checks import CHECKS, check_router, check_table, expected_failures, not_applicable
from routers.params import InvalidParameterError, integer, seed


def _router_check_pairs() -> list:
    pairs = []
    for name in router_registry.names():
        cls = router_registry.get(name)
        expected = expected_failures(cls)
        for check in CHECKS:
            marks = []
            reason = not_applicable(cls, check)
            if reason is not None:
                marks.append(pytest.mark.skip(reason=f"not applicable: {reason}"))
            elif check in expected:
                marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=expected[check]))
            pairs.append(pytest.param(name, check, marks=marks, id=f"{name}-{check}"))
    return pairs


@pytest.fixture(scope="module")
def table() -> OutcomeTable:
    return check_table()


@pytest.mark.parametrize(("name", "check"), _router_check_pairs())
def test_registered_router_passes_check(name: str, check: str, table: OutcomeTable) -> None:
    assert check_router(router_registry.get(name), table, checks=[check], allow_expected_failures=False) == [check]


def test_every_registered_router_declares_its_parameter_constraints() -> None:
    for name in router_registry.names():
        cls = router_registry.get(name)
        assert set(cls.parameter_constraints) == set(cls._get_param_names()), name


def test_expected_failures_are_declared_with_reasons() -> None:
    # The reference lines cannot route a prompt they have no recorded answers for; everything else can.
    declared = {n: expected_failures(router_registry.get(n)) for n in router_registry.names()}
    assert {n for n, d in declared.items() if d} == {"oracle", "cascade", "cascade-stacked"}
    assert all(reason for d in declared.values() for reason in d.values())
    # check_router tolerates a declared failure, but reports the checks that passed without it.
    passed = check_router(router_registry.get("oracle"), checks=["routes_new_prompts", "valid_decisions"])
    assert passed == ["valid_decisions"]


def test_registry_holds_the_core_strategies() -> None:
    expected = {
        "single",
        "random-mix",
        "oracle",
        "rules",
        "category",
        "classifier",
        "knn",
        "mf",
        "cost-aware",
        "ensemble",
    }
    assert expected <= set(router_registry.names())


def test_check_table_has_one_right_model_per_level() -> None:
    t = check_table()
    assert t.models == ("cheap", "mid", "big")
    assert t.quality.mean(axis=0).tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])


# ------------------------------------------------------------------------------------- broken routers
class _Mean(Router):
    def predict_quality(self, queries: Queries) -> np.ndarray:
        self._check_fitted()
        return np.broadcast_to(
            np.linspace(0.1, 0.9, len(self.models_)), (len(queries), len(self.models_))
        ).copy()


class _SetsStateInInit(_Mean):
    def __init__(self, *, alpha: float = 1.0):
        self.alpha = alpha
        self.cache_ = {}


class _ChangesParam(_Mean):
    def __init__(self, *, alpha: float | None = None):
        self.alpha = 1.0 if alpha is None else alpha


class _NotJson(_Mean):
    def __init__(self, *, alpha: object = None):
        self.alpha = alpha

    _test_params = {"alpha": {1, 2}}


class _CostFalls(_Mean):
    """Picks the dearest model at lam = 0 and the cheapest above: cost falls as the knob rises."""

    def route_indices(self, queries: Queries, lam: float) -> np.ndarray:
        self._check_fitted()
        return np.full(len(queries), len(self.models_) - 1 if lam == 0 else 0)

    def policy(self, table: OutcomeTable, *, use_categories: bool = True):
        from routers.base import ScorePolicy

        self._check_fitted()
        q = table.quality.copy()
        return ScorePolicy(self.models_, -np.asarray(table.cost), -np.asarray(table.cost), q, table.cost)


class _Unseeded(_Mean):
    parameter_constraints = {"random_state": seed()}

    def __init__(self, *, random_state: int = 0):
        self.random_state = random_state

    def _fit(self, train: OutcomeTable) -> None:
        # Ignores random_state: every fit draws its own seed. The noise is per (prompt, model), so that two
        # fits agreeing on every decision by chance is practically impossible (a per-model vector was flaky).
        self.seed_ = int(np.random.default_rng().integers(2**32))

    def predict_quality(self, queries: Queries) -> np.ndarray:
        self._check_fitted()
        return np.random.default_rng(self.seed_).random((len(queries), len(self.models_)))


class _NoFitCheck(_Mean):
    def predict_quality(self, queries: Queries) -> np.ndarray:
        return np.zeros((len(queries), 3))

    def route_indices(self, queries: Queries, lam: float) -> np.ndarray:
        return np.zeros(len(queries), dtype=int)

    def policy(self, table, *, use_categories=True):
        return super(_Mean, self).policy(table) if hasattr(self, "models_") else _FakePolicy()


class _FakePolicy:
    pass


class _Declared(_Mean):
    """A well-behaved router with one declared parameter."""

    parameter_constraints = {"alpha": integer(low=1)}

    def __init__(self, *, alpha: int = 1):
        self.alpha = alpha


class _Undeclared(_Declared):
    parameter_constraints = {}


class _WrongDefault(_Declared):
    def __init__(self, *, alpha: int = 0):
        self.alpha = alpha


class _FitSetsStateFirst(_Declared):
    """The old contract bug: state set before the work that can fail, and never removed."""

    def fit(self, train: OutcomeTable) -> Router:
        self._forget_fit()
        self._validate_params()
        self.models_ = train.models
        self.cost_per_model_ = np.asarray(train.cost.mean(axis=0), dtype=float)
        self._fit(train)
        return self


class _SkipsValidation(_Declared):
    def _validate_params(self) -> None:
        pass


class _ClaimsToPass(_Declared):
    _expected_failed_checks = {"cost_monotone": "claimed, but it does not fail"}


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (_SetsStateInInit, "no_attributes_set_in_init"),
        (_ChangesParam, "no_attributes_set_in_init"),
        (_NotJson, "params_json"),
        (_CostFalls, "cost_monotone"),
        (_Unseeded, "same_seed_same_decisions"),
        (_NoFitCheck, "unfitted"),
        (_Undeclared, "parameter_constraints"),
        (_WrongDefault, "parameter_constraints"),
        (_SkipsValidation, "params_validated_in_fit"),
        (_FitSetsStateFirst, "failed_fit_leaves_unfitted"),
    ],
)
def test_a_broken_router_fails_the_named_check(cls: type, check: str) -> None:
    with pytest.raises(AssertionError, match=rf"^{check} failed for {cls.__name__} \({cls.__name__}\)"):
        check_router(cls)


def test_a_well_behaved_unregistered_router_passes() -> None:
    assert "cost_monotone" in check_router(_Mean)


def test_registering_is_enough_to_be_checked() -> None:
    try:
        register_router("test-conformance-mean")(_Mean)
        assert "test-conformance-mean" in routers.router_registry.names()
        check_router(router_registry.get("test-conformance-mean"))
    finally:
        router_registry._remove("test-conformance-mean")


def test_check_router_rejects_non_routers_and_unknown_checks() -> None:
    with pytest.raises(TypeError, match="Router subclass"):
        check_router(dict)
    with pytest.raises(ValueError, match="unknown check"):
        check_router(_Mean, checks=["no-such-check"])


def test_a_declared_failure_that_passes_is_an_error() -> None:
    with pytest.raises(AssertionError, match="cost_monotone passed for .* declared an expected failure"):
        check_router(_ClaimsToPass)


def test_declared_router_passes_and_reports_not_applicable_checks_as_not_run() -> None:
    passed = check_router(_Declared)
    assert "failed_fit_leaves_unfitted" in passed and "params_validated_in_fit" in passed
    assert not_applicable(_Declared, "spec_round_trip") == "not registered: there is no spec to rebuild it from"
    assert "spec_round_trip" not in passed and "export_parity" not in passed


def test_a_failed_fit_leaves_the_router_unfitted(table: OutcomeTable) -> None:
    router = router_registry.get("knn")(encoder="hash-bow-64", k=3).fit(table)
    router.set_params(k=-5)
    with pytest.raises(InvalidParameterError, match=r"^router 'knn': parameter 'k' must be an int >= 1, got -5$"):
        router.fit(table)
    assert not router.is_fitted and not [a for a in vars(router) if a.endswith("_")]
    with pytest.raises(NotFittedError, match="KNNRouter is not fitted"):
        router.route(["a prompt"], 0.1)
