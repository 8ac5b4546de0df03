"""A smooth, exportable quality model: shrunk logistic regression + latent difficulty factors + subject prior.

Built for MMLU-Pro-like task sets (many models, a few thousand labelled prompts), where what limits savings at
parity is less what a router *can* learn from a prompt than how noisy its probabilities are: a plain
per-model logistic regression on 384 MiniLM dimensions (C=1) learns 14 independent, over-confident
predictors from 6k prompts, and the operating point chosen on validation then lands on a noisy curve
(``bench/router_quality_stacked.py``: 56% savings at parity on the seed-0 test split, against 84% for the
same regression with C=0.01 and 79% for this blend; see that script for the full table). This router
averages three *smooth* views of the same question:

1. ``linear``: per-model logistic regression on ``[embedding, one-hot category]`` with strong L2 shrinkage
   (``C`` = 0.02 by default, 50x the classifier's penalty), so predictions stay close to the subject prior
   unless the text says otherwise;
2. ``factors``: an item-response model. The train correctness matrix (prompts x models) is centred and its
   top ``factors`` principal directions give each train prompt a few latent "difficulty" scores shared by
   all models; ridge regression predicts them from the prompt features (fitted out-of-fold, so the second
   stage sees honest, not memorised, scores); then per model a logistic regression on
   ``[scores, one-hot category]`` (few parameters, so well calibrated). It pools evidence across the 14
   models instead of learning 14 unrelated directions;
3. ``category``: each model's smoothed mean quality per category (the strong baseline of task sets with a
   subject label).

The blend is the weighted mean of the three probabilities. Every part is a head the runtime already has
(``linear``, ``mf`` (the factor model folds into a low-rank bilinear head exactly), ``category``), so the
router exports as one ``blend`` state with no new inference code.

Sources: item response theory for routing (IRT-Router, Song et al. 2025); the per-model classifier and
per-task baselines of RouterBench (Hu et al. 2024) and RouteLLM (Ong et al. 2024); model averaging.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers.params import boolean, integer, real, seed
from routers.registry import register_router
from routers.strategies._common import (
    EMBEDDING_CONSTRAINTS,
    EmbeddingRouter,
    category_vocabulary,
    fit_logistic,
    per_category_mean,
)

__all__ = ["IRTBlendRouter", "fit_factor_model", "ridge_fit"]


@register_router("irt-blend")
class IRTBlendRouter(EmbeddingRouter):
    """Mean of a shrunk per-model logistic regression, an item-response factor model and the category prior.

    Source: IRT-Router (Song et al. 2025) for the latent-difficulty factors; RouterBench / RouteLLM for the
    per-model classifier and the per-category baseline. See the module docstring for the full recipe.

    Args:
        encoder: Sentence encoder name (``routers.embeddings``; ``hash-bow`` needs no model).
        use_category: Append the one-hot category to the features (a request without one gets zeros, and
            the category part falls back to each model's global mean).
        C: Inverse L2 strength of the per-model logistic regression on features (small = smooth).
        factors: Number of latent difficulty factors (0 = the factor part uses the category only).
        factor_alpha: Ridge penalty of the regression from features to factor scores.
        factor_C: Inverse L2 strength of the per-model logistic regression on factor scores.
        folds: Folds of the out-of-fold factor scores the second stage is fitted on.
        weight_linear: Blend weight of the linear part.
        weight_factors: Blend weight of the factor part.
        weight_category: Blend weight of the category part.
        per_category_cost: Predict each model's cost as its mean train cost in the request's category
            (output lengths differ by subject); False = one mean cost per model (what a two-model,
            strong-call-share view such as APGR assumes).
        random_state: Seed of the fold assignment.
        text: Which text of each prompt is embedded (:mod:`routers.text_selection`): ``"full"`` (default,
            the whole prompt), ``"auto"``, ``"last_user"`` or ``"question"``; the rule learned from the train
            prompts is part of the state, so an export and the proxy select the same text.
    """

    parameter_constraints = {
        **EMBEDDING_CONSTRAINTS,
        "C": real(low=0, closed="neither"),
        "factors": integer(low=0),
        "factor_alpha": real(low=0),
        "factor_C": real(low=0, closed="neither"),
        "folds": integer(low=2),
        "weight_linear": real(low=0),
        "weight_factors": real(low=0),
        "weight_category": real(low=0),
        "per_category_cost": boolean(),
        "random_state": seed(),
    }
    _test_params = {"encoder": "hash-bow-256", "folds": 3}

    def __init__(
        self,
        *,
        encoder: str = "minilm",
        use_category: bool = True,
        C: float = 0.02,
        factors: int = 3,
        factor_alpha: float = 30.0,
        factor_C: float = 1.0,
        folds: int = 5,
        weight_linear: float = 1.0,
        weight_factors: float = 1.0,
        weight_category: float = 1.0,
        per_category_cost: bool = True,
        random_state: int = 0,
        text: str = "full",
    ):
        self.encoder = encoder
        self.use_category = use_category
        self.C = C
        self.factors = factors
        self.factor_alpha = factor_alpha
        self.factor_C = factor_C
        self.folds = folds
        self.weight_linear = weight_linear
        self.weight_factors = weight_factors
        self.weight_category = weight_category
        self.per_category_cost = per_category_cost
        self.random_state = random_state
        self.text = text

    def _check_params(self) -> list[float]:
        """The blend weights; each parameter's own range is checked by ``fit`` (``parameter_constraints``)."""
        weights = [float(self.weight_linear), float(self.weight_factors), float(self.weight_category)]
        if sum(weights) <= 0:
            raise ConfigError(f"router 'irt-blend': the weights must not all be zero, got {weights}")
        return weights

    def _fit(self, train: OutcomeTable) -> None:
        weights = self._check_params()
        fmeta = self._features_meta(train)
        x = self._train_features(train, fmeta).astype(np.float64)
        y = np.asarray(train.quality, dtype=np.float64)
        n_cat = len(fmeta.get("categories", [])) if fmeta["use_category"] else 0
        seed = int(self.random_state or 0)

        parts: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []
        w_lin, b_lin = fit_logistic(x, y, float(self.C), random_state=seed)
        parts.append((self._base_meta("linear", **fmeta), {"weights": w_lin, "bias": b_lin}))

        proj, vecs, bias = fit_factor_model(
            x,
            y,
            n_cat=n_cat,
            factors=int(self.factors),
            alpha=float(self.factor_alpha),
            c=float(self.factor_C),
            folds=int(self.folds),
            seed=seed,
        )
        parts.append(
            (
                self._base_meta("mf", **fmeta, dim=int(proj.shape[0])),
                {"projection": proj, "model_vectors": vecs, "bias": bias},
            )
        )

        vocab = category_vocabulary(train)
        cats = np.asarray([str(c) for c in train.categories], dtype=object)
        parts.append(
            (
                self._base_meta("category", categories=vocab),
                {"quality_table": per_category_mean(y, cats, vocab, 2.0)},
            )
        )

        arrays: dict[str, np.ndarray] = {"cost_per_model": self.cost_per_model_}
        cost: dict[str, Any] = {"kind": "constant"}
        if self.per_category_cost:
            # Output lengths differ by subject (long chains of thought in math): the mean cost per category.
            arrays["cost_table"] = per_category_mean(
                np.asarray(train.cost, dtype=np.float64), cats, vocab, 2.0
            )
            cost = {"kind": "constant", "per_category": True, "categories": vocab}
        for i, (_, part_arrays) in enumerate(parts):
            arrays.update({f"p{i}.{k}": v for k, v in part_arrays.items()})
        meta = self._base_meta(
            "blend",
            weights=weights,
            parts=[m for m, _ in parts],
            cost=cost,
        )
        self.state_ = (meta, arrays)


def ridge_fit(x: np.ndarray, z: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept: ``(coef (k, d), b (k,))`` for ``z ≈ x @ coef.T + b``.

    Solved in closed form on the ``d x d`` normal equations (d is the embedding size, a few hundred).
    """
    xm, zm = x.mean(axis=0), z.mean(axis=0)
    xc, zc = x - xm, z - zm
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, xc.T @ zc).T if alpha > 0 else np.linalg.lstsq(xc, zc, rcond=None)[0].T
    return coef, zm - coef @ xm


def fit_factor_model(
    x: np.ndarray, y: np.ndarray, *, n_cat: int, factors: int, alpha: float, c: float, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The item-response part as an ``mf`` head: ``sigmoid((x @ P.T) @ V.T + b)``.

    Steps: latent scores ``s = (y - mean) @ U_k`` (top-k right singular vectors of the centred correctness
    matrix); ridge ``x -> s`` fitted out-of-fold for the train rows; standardise; per model a logistic
    regression on ``[standardised scores, one-hot category]``. Folding the ridge map and standardisation into
    ``P`` and the constants into ``b`` gives exactly the same numbers at inference.

    Args:
        x: Train features (n, d); the last ``n_cat`` columns are the one-hot category.
        y: Train scores (n, m) in [0, 1].
        n_cat: Number of trailing one-hot category columns of ``x``.
        factors: Number of latent factors (capped by the rank of ``y``).
        alpha: Ridge penalty.
        c: Inverse L2 strength of the second-stage logistic regressions.
        folds: Out-of-fold folds (capped by the number of rows).
        seed: Seed of the fold assignment.

    Returns:
        ``(P (k + n_cat, d), V (m, k + n_cat), b (m,))``.
    """
    n, d = x.shape
    m = y.shape[1]
    yc = y - y.mean(axis=0)
    k = int(min(factors, max(m - 1, 0), max(n - 1, 0)))
    if k > 0:
        _, sv, vt = np.linalg.svd(yc, full_matrices=False)
        k = int(min(k, (sv > 1e-9 * max(sv[0], 1e-300)).sum()))
    rows: list[np.ndarray] = []
    feats = np.zeros((n, 0))
    if k > 0:
        scores = yc @ vt[:k].T
        oof = np.zeros_like(scores)
        fold_of = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
        for f in np.unique(fold_of):
            held = fold_of == f
            coef, icpt = ridge_fit(x[~held], scores[~held], alpha)
            oof[held] = x[held] @ coef.T + icpt
        coef, icpt = ridge_fit(x, scores, alpha)
        mu, sd = oof.mean(axis=0), oof.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        feats = (oof - mu) / sd
        # Inference: standardised score = x @ (coef / sd).T + (icpt - mu) / sd
        rows.append(coef / sd[:, None])
        offset = (icpt - mu) / sd
    else:
        offset = np.zeros(0)
    if n_cat:
        eye = np.zeros((n_cat, d))
        eye[:, d - n_cat :] = np.eye(n_cat)
        rows.append(eye)
        feats = np.hstack([feats, x[:, d - n_cat :]])
    proj = np.vstack(rows) if rows else np.zeros((0, d))
    if feats.shape[1]:
        vecs, bias = fit_logistic(feats, y, c, random_state=seed)
    else:  # no factors and no category: the per-model prior (log-odds of the smoothed mean)
        mean = (y.sum(axis=0) + 0.5) / (n + 1.0)
        vecs, bias = np.zeros((m, 0)), np.log(mean / (1 - mean))
    bias = bias + vecs[:, :k] @ offset
    return proj, vecs, bias
