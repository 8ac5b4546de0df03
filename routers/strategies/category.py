"""Route on the request's category alone: the strong, cheap baseline on task sets that carry a subject."""

from __future__ import annotations

import numpy as np

from evals.outcomes import OutcomeTable
from routers.params import boolean, real
from routers.registry import register_router
from routers.strategies._common import RuntimeRouter, category_vocabulary, per_category_mean

__all__ = ["CategoryRouter"]


@register_router("category")
class CategoryRouter(RuntimeRouter):
    """Per category, each model's mean train quality (smoothed); unknown category -> global means.

    Source: the per-task "best model per category" baseline of RouterBench (Hu et al. 2024).

    Quality of model ``m`` in category ``c`` = ``(correct_mc + smoothing * q_m) / (n_c + smoothing)``, where
    ``q_m`` is the model's global train mean (additive, Laplace-style smoothing towards it); a request whose
    category is unknown, or that carries none (live traffic), gets the global means. With
    ``per_category_cost`` the cost of each model is its mean train cost in the category (prompt lengths differ
    by subject), smoothed the same way.

    Args:
        smoothing: Pseudo-count of the global mean in each category's estimate.
        per_category_cost: Predict cost per category rather than one mean per model.
    """

    parameter_constraints = {"smoothing": real(low=0), "per_category_cost": boolean()}

    def __init__(self, *, smoothing: float = 2.0, per_category_cost: bool = True):
        self.smoothing = smoothing
        self.per_category_cost = per_category_cost

    def _fit(self, train: OutcomeTable) -> None:
        vocab = category_vocabulary(train)
        cats = np.asarray([str(c) for c in train.categories], dtype=object)
        s = float(self.smoothing)
        arrays = {
            "quality_table": per_category_mean(train.quality, cats, vocab, s),
            "cost_per_model": self.cost_per_model_,
        }
        cost = {"kind": "constant"}
        if self.per_category_cost:
            arrays["cost_table"] = per_category_mean(train.cost, cats, vocab, s)
            cost = {"kind": "constant", "per_category": True, "categories": vocab}
        self.state_ = (self._base_meta("category", categories=vocab, cost=cost), arrays)
