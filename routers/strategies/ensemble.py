"""An ensemble: the averaged predicted quality of several exportable routers (e.g. MF + kNN + category)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers.params import encoder_name, json_list, seed
from routers.registry import make_router, register_router
from routers.strategies._common import RuntimeRouter, category_vocabulary, per_category_mean

__all__ = ["EnsembleRouter"]

DEFAULT_MEMBERS: list[dict[str, Any]] = [
    {"name": "mf", "params": {"use_category": True}, "weight": 1.0},
    {"name": "knn", "params": {"use_category": True}, "weight": 1.0},
    {"name": "category", "params": {}, "weight": 1.0},
]


@register_router("ensemble")
class EnsembleRouter(RuntimeRouter):
    """Weighted mean of several routers' predicted quality per (prompt, model).

    Source: model averaging (Breiman's bagging spirit) over the learned routers of RouterBench and RouteLLM,
    which make different errors.

    Members are router specs with a ``weight``; each is fitted on the same train table, and ``encoder`` is
    passed to every member that takes one (unless the member sets its own). Averaging the probability of a
    good answer from a similarity view (kNN), a shared low-rank model (MF) and the subject prior (category)
    is better calibrated than any one of them. Cost: each model's mean train cost per category when
    categories are known (the global mean otherwise). Every member must be exportable (have a runtime
    state), so the ensemble exports as one ``blend`` state.

    Args:
        members: ``[{"name": ..., "params": {...}, "weight": w}, ...]``; None = mf + knn + category.
        encoder: Sentence encoder given to members that take one.
        random_state: Passed to members that take one.
    """

    parameter_constraints = {"members": json_list(), "encoder": encoder_name(), "random_state": seed()}
    _test_params = {
        "encoder": "hash-bow-256",
        "members": [
            {"name": "classifier", "params": {}, "weight": 1.0},
            {"name": "knn", "params": {"k": 3}, "weight": 1.0},
            {"name": "category", "params": {}, "weight": 0.5},
        ],
    }

    def __init__(
        self, *, members: list[dict[str, Any]] | None = None, encoder: str = "minilm", random_state: int = 0
    ):
        self.members = members
        self.encoder = encoder
        self.random_state = random_state

    def _fit(self, train: OutcomeTable) -> None:
        specs = copy.deepcopy(self.members if self.members is not None else DEFAULT_MEMBERS)
        if not specs:
            raise ConfigError("an ensemble needs at least one member")
        parts, weights = [], []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"ensemble member {i + 1} must be a dict with a 'name', got {spec!r}")
            weight = float(spec.get("weight", 1.0))
            if weight < 0:
                raise ConfigError(f"ensemble member {i + 1} ({spec['name']}) has a negative weight {weight}")
            router = make_router({"name": spec["name"], "params": spec.get("params") or {}})
            names = router._get_param_names()
            extra = {
                k: v
                for k, v in (("encoder", self.encoder), ("random_state", self.random_state))
                if k in names and k not in (spec.get("params") or {})
            }
            router.set_params(**extra)
            if not hasattr(router, "export_state"):
                raise ConfigError(f"ensemble member {spec['name']!r} is not exportable (no runtime state)")
            router.fit(train)
            parts.append(router.export_state())
            weights.append(weight)
        if sum(weights) <= 0:
            raise ConfigError("ensemble weights must not all be zero")
        vocab = category_vocabulary(train)
        cats = np.asarray([str(c) for c in train.categories], dtype=object)
        arrays: dict[str, np.ndarray] = {
            "cost_per_model": self.cost_per_model_,
            "cost_table": per_category_mean(train.cost, cats, vocab, 2.0),
        }
        for i, (_, part_arrays) in enumerate(parts):
            arrays.update({f"p{i}.{k}": v for k, v in part_arrays.items()})
        meta = self._base_meta(
            "blend",
            weights=weights,
            parts=[m for m, _ in parts],
            cost={"kind": "constant", "per_category": True, "categories": vocab},
        )
        self.state_ = (meta, arrays)
