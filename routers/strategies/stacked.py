"""Stacking: a calibrated logistic on [an embedding router's predicted quality, the category]."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers.base import Queries, Router
from routers.params import encoder_name, integer, options, real, seed
from routers.registry import make_router, register_router
from routers.runtime import sigmoid
from routers.strategies._common import category_vocabulary, fit_logistic
from routers.text_selection import TEXT_MODES

__all__ = ["StackedRouter", "configured_router", "out_of_fold_quality"]

#: The routers a stack can be built on: those that predict quality from the prompt's embedding.
STACK_BASES = ("classifier", "knn", "mf", "irt-blend", "cost-aware")
_CLIP = 1e-4


@register_router("stacked")
class StackedRouter(Router):
    """Calibrated stack of an embedding router and the category prior (per-task calibration included).

    Source: stacked generalisation (Wolpert 1992) with out-of-fold base predictions, applied to routing as
    RouterBench's per-task prior plus an embedding router; the per-category intercepts recalibrate the base
    router per task (Platt scaling per category).

    Fitting: the train samples are split into ``folds`` (seeded); for each fold a fresh ``base`` router is
    fitted on the other folds and predicts the fold, so every train sample gets an out-of-fold predicted
    quality per model (predictions on its own train samples would be over-confident). Then one logistic
    regression per model ``m``::

        P(good_m | prompt) = sigmoid(sum_k a_mk * logit(p_base_k) + b_m . onehot(category) + c_m)

    on the out-of-fold logits of *all* models (a cheap model's predicted failure says something about the
    others) and the category one-hot; every row also appears with its category hidden, so traffic without a
    category gets its own calibration. Finally ``base`` is refitted on the whole train part and used at routing
    time. Not exportable: the export runtime has no stacking head yet.

    Args:
        base: The embedding router stacked on (one of :data:`STACK_BASES`), with its defaults.
        encoder: Sentence encoder given to the base router.
        text: Text selection given to the base router (:mod:`routers.text_selection`).
        folds: Folds of the out-of-fold predictions (>= 2).
        C: Inverse L2 strength of the stacking regressions (few features: little shrinkage needed).
        random_state: Seed of the fold assignment (and of the base router, when it takes one).
    """

    parameter_constraints = {
        "base": options(*STACK_BASES),
        "encoder": encoder_name(),
        "text": options(*TEXT_MODES),
        "folds": integer(low=2),
        "C": real(low=0, closed="neither"),
        "random_state": seed(),
    }
    _test_params = {"encoder": "hash-bow-256", "folds": 3}
    exportable = False
    not_exportable_because = "the export runtime has no stacking head yet (its logistic layer over the base router)."

    def __init__(
        self,
        *,
        base: str = "classifier",
        encoder: str = "minilm",
        text: str = "full",
        folds: int = 5,
        C: float = 1.0,
        random_state: int = 0,
    ):
        self.base = base
        self.encoder = encoder
        self.text = text
        self.folds = folds
        self.C = C
        self.random_state = random_state

    def _make_base(self) -> Router:
        return configured_router(self.base, self.encoder, self.text, self.random_state)

    def _fit(self, train: OutcomeTable) -> None:
        oof = out_of_fold_quality(train, self._make_base, self.folds, self.random_state, "stacked")
        self.categories_ = category_vocabulary(train)
        x = self._features(oof, [str(c) for c in train.categories])
        hidden = self._features(oof, None)
        y = np.array(train.quality, dtype=float)
        xs, ys = np.vstack([x, hidden]), np.vstack([y, y])
        self.coef_, self.intercept_ = fit_logistic(xs, ys, float(self.C), solver="newton")
        self.base_ = self._make_base().fit(train)

    def _features(self, p: np.ndarray, categories: list[str] | tuple[str, ...] | None) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=float), _CLIP, 1 - _CLIP)
        onehot = np.zeros((len(p), len(self.categories_)))
        if categories is not None:
            index = {c: j for j, c in enumerate(self.categories_)}
            for i, c in enumerate(categories):
                j = index.get(str(c))
                if j is not None:
                    onehot[i, j] = 1.0
        return np.hstack([np.log(p / (1 - p)), onehot])

    def predict_quality(self, queries: Queries) -> np.ndarray:
        """Stacked P(good answer) per (query, model)."""
        self._check_fitted()
        p = self.base_.predict_quality(queries)
        x = self._features(p, queries.categories)
        return sigmoid(x @ self.coef_.T + self.intercept_)


def configured_router(name: str, encoder: str, text: str, random_state: int) -> Router:
    """A fresh router ``name`` with the ``encoder``, ``text`` and ``random_state`` it takes (others ignored)."""
    router = make_router({"name": name, "params": {}})
    names = router._get_param_names()
    given = {"encoder": encoder, "text": text, "random_state": random_state}
    router.set_params(**{k: v for k, v in given.items() if k in names})
    return router


def out_of_fold_quality(
    train: OutcomeTable, make: Callable[[], Router], folds: int, random_state: int, who: str
) -> np.ndarray:
    """Each train sample's predicted quality per model from a router (``make()``) fitted on the other folds.

    Raises:
        ConfigError: when ``train`` has fewer than two samples per fold (``who`` names the router).
    """
    ids = np.asarray(train.sample_ids)
    k = int(folds)
    if len(ids) < 2 * k:
        raise ConfigError(f"{who}: {len(ids)} train samples are too few for {k} folds (need {2 * k})")
    fold = np.random.default_rng(int(random_state)).permutation(len(ids)) % k
    oof = np.zeros(train.quality.shape)
    for f in range(k):
        inner = train.select(sample_ids=ids[fold != f])
        held = train.select(sample_ids=ids[fold == f])
        base = make().fit(inner)
        rows = pd.Index(ids).get_indexer(held.sample_ids)  # the held table's own sample order
        oof[rows] = base.predict_quality(Queries.from_table(held))
    return oof
