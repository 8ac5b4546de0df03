"""Matrix factorisation of prompts and models: RouteLLM's strongest router, for N models."""

from __future__ import annotations

import numpy as np

from evals.outcomes import OutcomeTable
from routers.registry import register_router
from routers.runtime import sigmoid
from routers.strategies._common import EmbeddingRouter

__all__ = ["MFRouter"]


@register_router("mf")
class MFRouter(EmbeddingRouter):
    """Matrix factorisation: quality = sigmoid(<W x_prompt, v_model> + b_model), learned jointly.

    Source: RouteLLM's matrix-factorisation router (Ong et al. 2024), generalised from a strong/weak pair
    to N models.

    A projection ``W`` (dim x d) of the prompt embedding and one vector ``v_m`` per model are trained
    together with binary cross-entropy on every (train prompt, model) score (numpy, full-batch Adam,
    seeded); the models share the projection, so a model with few distinctive successes borrows strength
    from the others.

    Args:
        encoder: Sentence encoder name.
        use_category: Append the one-hot category to the prompt features.
        dim: Size of the shared latent space.
        epochs: Full-batch Adam steps.
        lr: Adam learning rate.
        weight_decay: L2 penalty on W and the model vectors.
        random_state: Seed of the initialisation.
    """

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
    ):
        self.encoder = encoder
        self.use_category = use_category
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def _fit(self, train: OutcomeTable) -> None:
        fmeta = self._features_meta(train)
        x, y = self._train_xy(train, fmeta)
        proj, vecs, bias = _train_mf(
            x,
            y,
            dim=int(self.dim),
            epochs=int(self.epochs),
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            seed=int(self.random_state or 0),
        )
        meta = self._base_meta("mf", **fmeta, dim=int(self.dim), cost={"kind": "constant"})
        arrays = {
            "projection": proj,
            "model_vectors": vecs,
            "bias": bias,
            "cost_per_model": self.cost_per_model_,
        }
        self.state_ = (meta, arrays)


def _train_mf(
    x: np.ndarray, y: np.ndarray, *, dim: int, epochs: int, lr: float, weight_decay: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-batch Adam on mean binary cross-entropy of ``sigmoid((x @ P.T) @ V.T + b)`` against ``y``.

    Plain numpy (the gradients are three matrix products), float64, seeded: the same data and seed always
    give the same factors. Returns ``(P (dim, d), V (m, dim), b (m,))``.
    """
    rng = np.random.default_rng(seed)
    n, d = x.shape
    m = y.shape[1]
    prior = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
    params = [
        rng.normal(0, 1 / np.sqrt(d), (dim, d)),
        rng.normal(0, 1 / np.sqrt(dim), (m, dim)),
        np.log(prior / (1 - prior)),
    ]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x = np.asarray(x, dtype=np.float64)
    for step in range(1, epochs + 1):
        proj, vecs, bias = params
        h = x @ proj.T
        g = (sigmoid(h @ vecs.T + bias) - y) / (n * m)  # d(mean BCE) / d(logits)
        grads = [(g @ vecs).T @ x + 2 * weight_decay * proj, g.T @ h + 2 * weight_decay * vecs, g.sum(axis=0)]
        for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
            m1, m2 = moments[i]
            m1 *= beta1
            m1 += (1 - beta1) * grad
            m2 *= beta2
            m2 += (1 - beta2) * grad**2
            p -= lr * (m1 / (1 - beta1**step)) / (np.sqrt(m2 / (1 - beta2**step)) + eps)
    return params[0], params[1], params[2]
