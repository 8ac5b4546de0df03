"""k nearest neighbours over prompt embeddings: how did each model do on the most similar train prompts?"""

from __future__ import annotations

import numpy as np

from evals.outcomes import OutcomeTable
from routers.params import integer, real
from routers.registry import register_router
from routers.strategies._common import EMBEDDING_CONSTRAINTS, EmbeddingRouter

__all__ = ["KNNRouter"]


@register_router("knn")
class KNNRouter(EmbeddingRouter):
    """Similarity-weighted per-model quality of the k most similar train prompts.

    Source: the KNN router of RouterBench (Hu et al. 2024); RouteLLM's similarity-weighted ranking.

    Cosine similarity on L2-normalised embeddings; neighbour weights ``exp((sim - max_sim) / temperature)``;
    the estimate is shrunk towards each model's global train mean with ``prior_weight`` pseudo-neighbours.
    With ``use_category`` the one-hot category (scaled by 0.5) is appended before normalising, raising the
    similarity of same-subject prompts; requests without a category simply lose that bonus.

    Args:
        encoder: Sentence encoder name.
        k: Number of neighbours.
        temperature: Softness of the similarity weighting (smaller = the closest neighbours dominate).
        prior_weight: Pseudo-count of the global per-model mean.
        use_category: Let the category raise the similarity of same-category prompts.
        text: Which text of each prompt is embedded (:mod:`routers.text_selection`): ``"full"`` (default,
            the whole prompt), ``"auto"``, ``"last_user"`` or ``"question"``; the rule learned from the train
            prompts is part of the state, so an export and the proxy select the same text.
    """

    parameter_constraints = {
        **EMBEDDING_CONSTRAINTS,
        "k": integer(low=1),
        "temperature": real(low=0, closed="neither"),
        "prior_weight": real(low=0),
    }
    _test_params = {"encoder": "hash-bow-256", "k": 3}
    _normalise = True
    _category_scale = 0.5

    def __init__(
        self,
        *,
        encoder: str = "minilm",
        k: int = 200,
        temperature: float = 0.05,
        prior_weight: float = 1.0,
        use_category: bool = False,
        text: str = "full",
    ):
        self.encoder = encoder
        self.k = k
        self.temperature = temperature
        self.prior_weight = prior_weight
        self.use_category = use_category
        self.text = text

    def _fit(self, train: OutcomeTable) -> None:
        fmeta = self._features_meta(train)
        x = self._train_features(train, fmeta).astype(np.float32)
        meta = self._base_meta(
            "knn",
            **fmeta,
            k=int(self.k),
            temperature=float(self.temperature),
            prior_weight=float(self.prior_weight),
            cost={"kind": "constant"},
        )
        arrays = {
            "train_x": x,
            "train_quality": np.asarray(train.quality, dtype=np.float32),
            "prior": train.quality.mean(axis=0),
            "cost_per_model": self.cost_per_model_,
        }
        self.state_ = (meta, arrays)
