"""Cost-aware routing: predict each model's answer length too, so a verbose model's price counts (CARROT)."""

from __future__ import annotations

import numpy as np

from evals.outcomes import OutcomeTable
from routers.params import real
from routers.registry import register_router
from routers.strategies._common import EMBEDDING_CONSTRAINTS, EmbeddingRouter, fit_logistic

__all__ = ["CostAwareRouter", "fit_prices"]


def fit_prices(train: OutcomeTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-model prices and input-token model from a train table.

    Returns ``(prices (m, 3) = $/input token, $/output token, $/request; input-token model (m, 2);
    has_tokens (m,))``.

    Prices are recovered from the train table by non-negative least squares of ``cost_usd`` on
    ``[input_tokens, output_tokens, 1]`` (exact when costs were computed from a price table, as in every
    importer). Input tokens are an affine function of the prompt's length in characters (least squares),
    since a deployed router only sees the prompt text. A model without token counts gets a flat price
    equal to its mean train cost and no token model.
    """
    from scipy.optimize import nnls

    cost, tin, tout = train.cost, train.wide("input_tokens"), train.wide("output_tokens")
    chars = np.array([len(p) for p in train.prompts], dtype=float)
    m = len(train.models)
    prices, in_model, has = np.zeros((m, 3)), np.zeros((m, 2)), np.zeros(m, dtype=bool)
    for j in range(m):
        ok = np.isfinite(tin[:, j]) & np.isfinite(tout[:, j])
        if ok.sum() < 3:
            prices[j, 2] = cost[:, j].mean()
            continue
        a = np.c_[tin[ok, j], tout[ok, j], np.ones(ok.sum())]
        scale = np.abs(a).max(axis=0) + 1e-12  # column scaling keeps NNLS well conditioned
        coef, _ = nnls(a / scale, cost[ok, j])
        prices[j] = coef / scale
        in_model[j] = np.linalg.lstsq(np.c_[np.ones(ok.sum()), chars[ok]], tin[ok, j], rcond=None)[0]
        has[j] = True
    return prices, in_model, has


@register_router("cost-aware")
class CostAwareRouter(EmbeddingRouter):
    """Predicts per model both the chance of a good answer and the answer's length, hence its price.

    Source: CARROT (Somerstep et al. 2025), which routes on predicted quality and predicted cost.

    Quality: per-model logistic regression on the prompt embedding (+ category), as ``classifier``. Cost per
    (prompt, model) = ``predicted_input_tokens * price_in + predicted_output_tokens * price_out + fee``, with
    output tokens from a ridge regression on the same features, input tokens affine in the prompt's length,
    and per-model prices derived from the train table (see :func:`fit_prices`). Where the train table has
    no token counts for a model, its cost falls back to its mean train cost.

    Args:
        encoder: Sentence encoder name.
        use_category: Append the one-hot category to the features.
        C: Inverse regularisation of the quality logistic regressions.
        alpha: Ridge penalty of the output-length regression.
        text: Which text of each prompt is embedded (:mod:`routers.text_selection`): ``"full"`` (default,
            the whole prompt), ``"auto"``, ``"last_user"`` or ``"question"``; the rule learned from the train
            prompts is part of the state, so an export and the proxy select the same text.
    """

    parameter_constraints = {
        **EMBEDDING_CONSTRAINTS,
        "C": real(low=0, closed="neither"),
        "alpha": real(low=0),
    }
    _test_params = {"encoder": "hash-bow-256"}

    def __init__(
        self,
        *,
        encoder: str = "minilm",
        use_category: bool = True,
        C: float = 1.0,
        alpha: float = 1.0,
        text: str = "full",
    ):
        self.encoder = encoder
        self.use_category = use_category
        self.C = C
        self.alpha = alpha
        self.text = text

    def _fit(self, train: OutcomeTable) -> None:
        from sklearn.linear_model import Ridge

        fmeta = self._features_meta(train)
        xy, y = self._train_xy(train, fmeta)
        weights, bias = fit_logistic(xy, y, float(self.C))
        x = self._train_features(train, fmeta)
        prices, in_model, has = fit_prices(train)
        tout = np.nan_to_num(train.wide("output_tokens"), nan=0.0)
        ridge = Ridge(alpha=float(self.alpha)).fit(x, tout)
        out_w = np.where(has[:, None], ridge.coef_.reshape(len(has), -1), 0.0)
        out_b = np.where(has, np.atleast_1d(ridge.intercept_), 0.0)
        meta = self._base_meta("cost-aware", **fmeta, cost={"kind": "tokens"})
        arrays = {
            "weights": weights,
            "bias": bias,
            "prices": prices,
            "in_tokens": in_model,
            "out_weights": out_w,
            "out_bias": out_b,
            "cost_per_model": self.cost_per_model_,
        }
        self.state_ = (meta, arrays)
