"""Baselines every router is compared with: one model for everything, a random mix of two, and the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers import runtime
from routers.base import Policy, Queries, Router, ScorePolicy
from routers.params import model_name, seed
from routers.registry import register_router
from routers.strategies._common import FixedPolicy, RuntimeRouter, resolve_model

__all__ = ["OracleRouter", "RandomMixRouter", "SingleModelRouter", "best_model_index", "cheapest_model_index"]


def best_model_index(quality: np.ndarray, cost: np.ndarray) -> int:
    """Column with the highest mean quality; ties go to the cheaper one."""
    q, c = quality.mean(axis=0), cost.mean(axis=0)
    return int(np.lexsort((c, -q))[0])


def cheapest_model_index(quality: np.ndarray, cost: np.ndarray) -> int:
    """Column with the lowest mean cost; ties go to the better one."""
    q, c = quality.mean(axis=0), cost.mean(axis=0)
    return int(np.lexsort((-q, c))[0])


@register_router("single")
class SingleModelRouter(RuntimeRouter):
    """Send every request to one model (default: the best on the train part).

    Source: the baseline of every routing paper (RouterBench, RouteLLM).

    The operating point does not move it: its frontier is a single point.

    Args:
        model: Model name; None picks the model with the highest mean quality on the train table.
    """

    parameter_constraints = {"model": model_name()}

    def __init__(self, *, model: str | None = None):
        self.model = model

    def _fit(self, train: OutcomeTable) -> None:
        idx = resolve_model(self.model, self.models_, "model", best_model_index(train.quality, train.cost))
        meta = self._base_meta("single", model_index=idx, cost={"kind": "constant"})
        arrays = {"quality_prior": train.quality.mean(axis=0), "cost_per_model": self.cost_per_model_}
        self.state_ = (meta, arrays)

    @property
    def chosen_model_(self) -> str:
        """Name of the model this router sends everything to."""
        return self.models_[self.state_[0]["model_index"]]

    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> Policy:
        """Every sample goes to the chosen model."""
        self._check_fitted()
        table = self._align(table)
        choice = np.full(table.n_samples, self.state_[0]["model_index"])
        return FixedPolicy(self.models_, choice, table.quality, table.cost)


class _RandomMixPolicy(Policy):
    def __init__(
        self, models: tuple[str, ...], u: np.ndarray, meta: dict[str, Any], table: OutcomeTable
    ) -> None:
        self.models, self.u, self.meta = models, u, meta
        self.quality, self.cost = table.quality, table.cost

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.meta
        choice = runtime.random_mix_choice(self.u, lam, m["break_even"], m["weak"], m["strong"])
        rows = np.arange(len(choice))
        return choice, self.cost[rows, choice], self.quality[rows, choice]

    def grid(self, n_points: int = 200) -> np.ndarray:
        # Operating points that give evenly spaced strong shares (share = lam / (lam + break_even)).
        share = np.linspace(0.0, 1.0, max(n_points, 3))[:-1]
        lam = self.meta["break_even"] * share / (1.0 - share)
        return np.concatenate([lam, [self.meta["break_even"] * 1e9]])


@register_router("random-mix")
class RandomMixRouter(RuntimeRouter):
    """Send a random share of requests to a strong model, the rest to a weak one.

    Source: RouteLLM's random router baseline (Ong et al. 2024).

    The operating point sets the strong share: ``share = lam / (lam + break_even)``, where ``break_even`` is
    the willingness to pay at which the strong model's extra train quality is worth its extra train cost
    (share 0.5 there). Which requests go strong is a seeded hash of the prompt, so a request always gets the
    same model at the same operating point (also in an exported router), and raising ``lam`` only adds
    strong calls.

    Args:
        weak: Weak model; None = the cheapest on train.
        strong: Strong model; None = the best on train.
        random_state: Seed of the per-prompt draw.
    """

    parameter_constraints = {"weak": model_name(), "strong": model_name(), "random_state": seed()}

    def __init__(self, *, weak: str | None = None, strong: str | None = None, random_state: int = 0):
        self.weak = weak
        self.strong = strong
        self.random_state = random_state

    def _fit(self, train: OutcomeTable) -> None:
        q, c = train.quality, train.cost
        w = resolve_model(self.weak, self.models_, "weak", cheapest_model_index(q, c))
        s = resolve_model(self.strong, self.models_, "strong", best_model_index(q, c))
        dq = max(float(q[:, s].mean() - q[:, w].mean()), 1e-6)
        dc = max(float(c[:, s].mean() - c[:, w].mean()), 1e-12)
        meta = self._base_meta(
            "random-mix",
            weak=w,
            strong=s,
            seed=int(self.random_state or 0),
            break_even=dc / dq,
            cost={"kind": "constant"},
        )
        arrays = {"quality_prior": q.mean(axis=0), "cost_per_model": self.cost_per_model_}
        self.state_ = (meta, arrays)

    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> Policy:
        """Replay with the per-prompt draws of this router's seed."""
        self._check_fitted()
        table = self._align(table)
        u = runtime.unit_hash(table.prompts, self.state_[0]["seed"])
        return _RandomMixPolicy(self.models_, u, self.state_[0], table)


@register_router("oracle")
class OracleRouter(Router):
    """The cheapest model that answers well, read from the recorded outcomes.

    Source: the Oracle of RouterBench (Hu et al. 2024) and RouteLLM's "optimal" curve.

    A reference line, not a router: it looks at each sample's realised scores, so it cannot route a new
    request (``exportable = False``). At operating point ``lam`` it picks ``argmax lam * score - cost`` over
    the *realised* scores and costs: ``lam = 0`` is the cheapest model, a large ``lam`` the cheapest
    model with the best realised score (the upper bound of any router).
    """

    exportable = False
    not_exportable_because = "the oracle reads each answer's recorded score, which no live request has."
    uses_outcomes_at_route_time = True
    parameter_constraints = {}
    _expected_failed_checks = {
        "routes_new_prompts": "a reference line: it reads each sample's recorded scores, so a new prompt has none",
    }

    def __init__(self) -> None:
        pass

    def predict_quality(self, queries: Queries) -> np.ndarray:
        """Not available: the oracle needs recorded outcomes (use :meth:`policy` on a table)."""
        self._check_fitted()
        raise ConfigError(
            "the oracle decides from recorded outcomes; replay it with .policy(table), "
            "it cannot route new prompts"
        )

    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> Policy:
        """The sweep over the table's realised scores and costs."""
        self._check_fitted()
        table = self._align(table)
        return ScorePolicy(self.models_, table.quality, table.cost, table.quality, table.cost)
