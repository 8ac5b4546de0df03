"""A cascade that also reads the prompt: its stage scorers see a prompt router's out-of-fold predictions.

The plain cascade (:mod:`routers.strategies.cascade`) judges a cheap answer from the answer itself (format,
hedging, agreement with the cheaper stages) and the model's accuracy in the prompt's category. What a prompt
router knows (this kind of question is hard for that model) is a different signal: it is available before any
call and it does not depend on how the answer is phrased. Stacking the two is what the plateau bench
(``bench/router_plateau.py``) asks for: "stacking of the task/category prior with embedding routers".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evals.outcomes import OutcomeTable
from routers.base import Queries, Router
from routers.params import encoder_name, integer, options
from routers.registry import register_router
from routers.strategies.cascade import CascadeRouter
from routers.strategies.stacked import STACK_BASES, configured_router, out_of_fold_quality
from routers.text_selection import TEXT_MODES

__all__ = ["StackedCascadeRouter"]

_CLIP = 1e-4


@register_router("cascade-stacked")
class StackedCascadeRouter(CascadeRouter):
    """FrugalGPT-style cascade whose answer scorers also read a prompt router's predicted quality.

    Source: FrugalGPT's cascade (Chen, Zaharia & Zou, 2023) with stacked generalisation (Wolpert 1992): the
    scorer of each stage gets, besides the plain cascade's answer features (see
    :class:`~routers.strategies.cascade.CascadeRouter`), the logit of ``prompt_router``'s predicted quality
    of this stage's model and of every later stage's model. On train those predictions are **out of fold**
    (``folds`` seeded folds: a fresh prompt router fitted on the other folds predicts each fold), so the
    scorers learn how far to trust them on prompts the prompt router has not seen; the prompt router is then
    refitted on all of train and used when replaying or routing live.

    The chain, the knob ``lam`` and the escalation rule are the cascade's; like it, this router needs each
    stage's answer (:meth:`route_with_answers`, :meth:`policy`) and is not exportable.

    Args:
        models, max_stages, C, prior_smoothing, agreement, random_state: As for the cascade.
        prompt_router: The embedding router whose predicted quality is stacked (one of
            :data:`~routers.strategies.stacked.STACK_BASES`), with its defaults.
        encoder: Sentence encoder given to the prompt router.
        text: Text selection given to the prompt router (:mod:`routers.text_selection`).
        folds: Folds of the out-of-fold train predictions (>= 2).
    """

    parameter_constraints = {
        **CascadeRouter.parameter_constraints,
        "prompt_router": options(*STACK_BASES),
        "encoder": encoder_name(),
        "text": options(*TEXT_MODES),
        "folds": integer(low=2),
    }
    _test_params = {"encoder": "hash-bow-256", "folds": 3}

    def __init__(
        self,
        *,
        models: Sequence[str] | None = None,
        max_stages: int = 3,
        C: float = 1.0,
        prior_smoothing: float = 20.0,
        agreement: str = "normalised",
        prompt_router: str = "classifier",
        encoder: str = "minilm",
        text: str = "full",
        folds: int = 5,
        random_state: int = 0,
    ) -> None:
        super().__init__(
            models=models,
            max_stages=max_stages,
            C=C,
            prior_smoothing=prior_smoothing,
            agreement=agreement,
            random_state=random_state,
        )
        self.prompt_router = prompt_router
        self.encoder = encoder
        self.text = text
        self.folds = folds

    def _make_prompt_router(self) -> Router:
        return configured_router(self.prompt_router, self.encoder, self.text, self.random_state)

    def _fit(self, train: OutcomeTable) -> None:
        oof = out_of_fold_quality(train, self._make_prompt_router, self.folds, self.random_state, "cascade-stacked")
        # While the cascade part is fitted, the train prompts read their out-of-fold predictions.
        self._train_prompt_quality = (list(train.prompts), oof)
        try:
            super()._fit(train)
        finally:
            del self._train_prompt_quality
        self.prompt_router_ = self._make_prompt_router().fit(train)

    def _prompt_quality(self, prompts: Sequence[str], cats: Sequence[str]) -> np.ndarray:
        """Predicted quality per (prompt, model): out of fold for the train prompts during fit."""
        pending = getattr(self, "_train_prompt_quality", None)
        if pending is not None and pending[0] == list(prompts):
            return pending[1]
        queries = Queries(tuple(prompts), tuple(str(c) for c in cats))
        return self.prompt_router_.predict_quality(queries)

    def _stage_features(
        self,
        idx: Sequence[int],
        texts: np.ndarray,
        prompts: Sequence[str],
        cats: Sequence[str],
        cache: dict | None = None,
    ) -> list[np.ndarray]:
        """The cascade's stage features, then the prompt router's logits of this and every later stage."""
        feats = super()._stage_features(idx, texts, prompts, cats, cache)
        p = np.clip(self._prompt_quality(prompts, cats), _CLIP, 1 - _CLIP)
        logit = np.log(p / (1 - p))
        idx = list(idx)
        return [np.hstack([f, logit[:, idx[s:]]]) for s, f in enumerate(feats)]
