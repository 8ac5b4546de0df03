"""Matrix factorisation of prompts and models: RouteLLM's strongest router, for N models."""

from __future__ import annotations

import numpy as np

from evals.outcomes import OutcomeTable
from routers.params import integer, real, seed
from routers.registry import register_router
from routers.strategies._common import EMBEDDING_CONSTRAINTS, EmbeddingRouter

__all__ = ["MFRouter"]


@register_router("mf")
class MFRouter(EmbeddingRouter):
    """Matrix factorisation: quality = sigmoid(<W x_prompt, v_model> + b_model), learned jointly.

    Source: RouteLLM's matrix-factorisation router (Ong et al. 2024), generalised from a strong/weak pair
    to N models.

    A projection ``W`` (dim x d) of the prompt embedding and one vector ``v_m`` per model are trained
    together with binary cross-entropy on every (train prompt, model) score, Adam, full-batch, seeded; the
    models share the projection, so a model with few distinctive successes borrows strength from the others.

    Args:
        encoder: Sentence encoder name.
        use_category: Append the one-hot category to the prompt features.
        dim: Size of the shared latent space.
        epochs: Full-batch Adam steps.
        lr: Adam learning rate.
        weight_decay: L2 penalty on W and the model vectors.
        random_state: Seed of the initialisation.
        text: Which text of each prompt is embedded (:mod:`routers.text_selection`): ``"full"`` (default,
            the whole prompt), ``"auto"``, ``"last_user"`` or ``"question"``; the rule learned from the train
            prompts is part of the state, so an export and the proxy select the same text.
    """

    parameter_constraints = {
        **EMBEDDING_CONSTRAINTS,
        "dim": integer(low=1),
        "epochs": integer(low=1),
        "lr": real(low=0, closed="neither"),
        "weight_decay": real(low=0),
        "random_state": seed(),
    }
    _test_params = {"encoder": "hash-bow-256", "dim": 8, "epochs": 40}

    def __init__(
        self,
        *,
        encoder: str = "minilm",
        use_category: bool = True,
        dim: int = 32,
        epochs: int = 300,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        random_state: int = 0,
        text: str = "full",
    ):
        self.encoder = encoder
        self.use_category = use_category
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.text = text

    def _fit(self, train: OutcomeTable) -> None:
        import torch

        fmeta = self._features_meta(train)
        xs, ys = self._train_xy(train, fmeta)
        x = torch.as_tensor(xs, dtype=torch.float32)
        y = torch.as_tensor(ys, dtype=torch.float32)
        gen = torch.Generator().manual_seed(int(self.random_state or 0))
        d, m, k = x.shape[1], y.shape[1], int(self.dim)
        proj = (torch.randn(k, d, generator=gen) / np.sqrt(d)).requires_grad_()
        vecs = (torch.randn(m, k, generator=gen) / np.sqrt(k)).requires_grad_()
        prior = y.mean(0).clamp(1e-3, 1 - 1e-3)
        bias = torch.log(prior / (1 - prior)).clone().requires_grad_()
        opt = torch.optim.Adam([proj, vecs, bias], lr=float(self.lr))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small dense problem: threads only add contention on a shared CPU
        try:
            for _ in range(int(self.epochs)):
                opt.zero_grad()
                logits = (x @ proj.T) @ vecs.T + bias
                loss = loss_fn(logits, y) + float(self.weight_decay) * (proj.pow(2).sum() + vecs.pow(2).sum())
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        meta = self._base_meta("mf", **fmeta, dim=k, cost={"kind": "constant"})
        arrays = {
            "projection": proj.detach().double().numpy(),
            "model_vectors": vecs.detach().double().numpy(),
            "bias": bias.detach().double().numpy(),
            "cost_per_model": self.cost_per_model_,
        }
        self.state_ = (meta, arrays)
