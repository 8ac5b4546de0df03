"""A difficulty classifier: per model, the chance of a good answer from the prompt's embedding."""

from __future__ import annotations

from evals.outcomes import OutcomeTable
from routers.params import real
from routers.registry import register_router
from routers.strategies._common import EMBEDDING_CONSTRAINTS, EmbeddingRouter, fit_logistic

__all__ = ["ClassifierRouter"]


@register_router("classifier")
class ClassifierRouter(EmbeddingRouter):
    """Per-model logistic regression on prompt embeddings (+ one-hot category): P(good answer).

    Source: the difficulty classifiers of Hybrid LLM (Ding et al. 2024) and RouteLLM's BERT classifier,
    here one linear head per model on sentence embeddings.

    For each model ``m``: ``P(good | prompt) = sigmoid(w_m . [embed(prompt), onehot(category)] + b_m)``,
    fitted on the train table's scores (soft labels for fractional scores). An unknown or absent category
    contributes nothing (all-zero one-hot), so the router works on live traffic without categories.

    Args:
        encoder: Sentence encoder name (``routers.embeddings``; ``hash-bow`` needs no model).
        use_category: Append the one-hot category to the features.
        C: Inverse L2 regularisation strength of each logistic regression. The default is strong
            shrinkage: unshrunk fits on 384-dimensional embeddings give over-confident probabilities, and the
            operating point chosen on validation then transfers badly to test. 0.01 was chosen among
            {1, 0.1, 0.02, 0.01} on MMLU-Pro *validation* savings (bench/router_quality_stacked.py).
        text: Which text of each prompt is embedded (:mod:`routers.text_selection`): ``"full"`` (default,
            the whole prompt), ``"auto"``, ``"last_user"`` or ``"question"``; the rule learned from the train
            prompts is part of the state, so an export and the proxy select the same text.
    """

    parameter_constraints = {
        **EMBEDDING_CONSTRAINTS,
        "C": real(low=0, closed="neither"),
    }
    _test_params = {"encoder": "hash-bow-256"}

    def __init__(
        self, *, encoder: str = "minilm", use_category: bool = True, C: float = 0.01, text: str = "full"
    ):
        self.encoder = encoder
        self.use_category = use_category
        self.C = C
        self.text = text

    def _fit(self, train: OutcomeTable) -> None:
        fmeta = self._features_meta(train)
        x, y = self._train_xy(train, fmeta)
        weights, bias = fit_logistic(x, y, float(self.C))
        meta = self._base_meta("linear", **fmeta, cost={"kind": "constant"})
        self.state_ = (meta, {"weights": weights, "bias": bias, "cost_per_model": self.cost_per_model_})
