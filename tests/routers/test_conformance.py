"""Every registered router passes the shared conformance check (registering is enough to be checked)."""

from __future__ import annotations

import numpy as np
import pytest

import routers
from evals.outcomes import OutcomeTable
from routers import Queries, Router, register_router, router_registry
from routers.checks import CHECKS, check_router, check_table


@pytest.mark.parametrize("name", router_registry.names())
def test_registered_router_conforms(name: str) -> None:
    assert check_router(router_registry.get(name)) == list(CHECKS)


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


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (_SetsStateInInit, "no_attributes_set_in_init"),
        (_ChangesParam, "no_attributes_set_in_init"),
        (_NotJson, "params_json"),
        (_CostFalls, "cost_monotone"),
        (_Unseeded, "same_seed_same_decisions"),
        (_NoFitCheck, "unfitted"),
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
