"""Shared pieces of the strategies: the runtime-backed router base and policies for non-argmax routers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers import runtime
from routers.base import Policy, Queries, Router, ScorePolicy
from routers.params import boolean, encoder_name, options
from routers.text_selection import TEXT_MODES, TextSelector

#: The parameters every embedding router takes, declared once; a router adds its own:
#: ``parameter_constraints = {**EMBEDDING_CONSTRAINTS, "k": integer(low=1)}``.
EMBEDDING_CONSTRAINTS = {"encoder": encoder_name(), "use_category": boolean(), "text": options(*TEXT_MODES)}

__all__ = [
    "TEXT_WINDOW_CHARS",
    "EmbeddingRouter",
    "FixedPolicy",
    "PinnedPolicy",
    "RuntimeRouter",
    "fit_logistic",
    "category_vocabulary",
    "per_category_mean",
    "resolve_model",
]


class RuntimeRouter(Router):
    """A router whose inference is the runtime's: ``_fit`` sets ``state_ = (meta, arrays)``, nothing else.

    ``predict_quality`` / ``predict_cost`` / ``route_indices`` delegate to
    :func:`routers.runtime.load_state` on that state, so :meth:`export_state` is, by construction, exactly
    what the workbench measured.
    """

    def export_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted state: ``(meta, arrays)`` with JSON-able ``meta`` (kind, models, encoder, ...)."""
        self._check_fitted()
        meta, arrays = self.state_
        return dict(meta), dict(arrays)

    def _runtime(self) -> runtime.LoadedRouter:
        self._check_fitted()
        rt = getattr(self, "runtime_", None)
        if rt is None:
            rt = self.runtime_ = runtime.load_state(*self.state_)
        return rt

    def predict_quality(self, queries: Queries) -> np.ndarray:
        """Predicted quality per (query, model), computed by the runtime head of this router's kind."""
        return self._runtime().predict_quality(list(queries.prompts), queries.categories)

    def predict_cost(self, queries: Queries) -> np.ndarray:
        """Predicted dollars per (query, model), computed by the runtime's cost head."""
        return self._runtime().predict_cost(list(queries.prompts), queries.categories)

    def route_indices(self, queries: Queries, lam: float) -> np.ndarray:
        """Index of the chosen model per query (the runtime's decision, identical to the exported one)."""
        return self._runtime().route_indices(list(queries.prompts), lam, queries.categories)

    def _base_meta(self, kind: str, **extra: Any) -> dict[str, Any]:
        return {"format": runtime.STATE_FORMAT, "kind": kind, "models": list(self.models_), **extra}


class FixedPolicy(Policy):
    """A policy whose choice per sample does not depend on the operating point (a single model)."""

    def __init__(
        self, models: Sequence[str], choice: np.ndarray, quality: np.ndarray, cost: np.ndarray
    ) -> None:
        self.models = tuple(models)
        self.choice = np.asarray(choice, dtype=int)
        rows = np.arange(len(self.choice))
        self.q = np.asarray(quality, dtype=float)[rows, self.choice]
        self.c = np.asarray(cost, dtype=float)[rows, self.choice]

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.outcomes`."""
        return self.choice, self.c, self.q

    def grid(self, n_points: int = 200) -> np.ndarray:
        """A single point: every operating point gives the same decisions."""
        return np.zeros(1)


class PinnedPolicy(Policy):
    """A scoring policy where some samples are pinned to one model whatever the operating point (rules)."""

    def __init__(self, inner: ScorePolicy, pinned: np.ndarray) -> None:
        self.models = inner.models
        self.inner = inner
        self.pinned = np.asarray(pinned, dtype=int)
        rows = np.arange(len(self.pinned))
        p = np.maximum(self.pinned, 0)
        self._is_pinned = self.pinned >= 0
        self._pq = inner.quality[rows, p]
        self._pc = inner.cost[rows, p]

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.outcomes`."""
        choice, cost, qual = self.inner.outcomes(lam)
        pin = self._is_pinned
        return (
            np.where(pin, self.pinned, choice),
            np.where(pin, self._pc, cost),
            np.where(pin, self._pq, qual),
        )

    def grid(self, n_points: int = 200) -> np.ndarray:
        """The inner scoring policy's grid (pinned samples do not move)."""
        return self.inner.grid(n_points)


def category_vocabulary(train: OutcomeTable) -> list[str]:
    """Sorted non-empty categories of a table."""
    return sorted({str(c) for c in train.categories if str(c)})


def per_category_mean(
    values: np.ndarray, cats: np.ndarray, vocabulary: Sequence[str], smoothing: float
) -> np.ndarray:
    """Per category, per column mean of ``values`` shrunk towards the global column mean.

    Row ``j`` = ``(sum over category j + smoothing * global_mean) / (count_j + smoothing)`` (additive,
    Laplace-style smoothing); the extra last row is the global mean, used for unknown categories.
    """
    glob = values.mean(axis=0)
    out = np.empty((len(vocabulary) + 1, values.shape[1]))
    for j, c in enumerate(vocabulary):
        rows = cats == c
        out[j] = (values[rows].sum(axis=0) + smoothing * glob) / (rows.sum() + smoothing)
    out[-1] = glob
    return out


def resolve_model(name: str | None, models: Sequence[str], param: str, default: int) -> int:
    """Index of a model given by name (``default`` when None); a clear error for unknown names."""
    if name is None:
        return default
    if name not in models:
        raise ConfigError(f"{param}={name!r} is not a model of the train table; models: {', '.join(models)}")
    return list(models).index(name)


#: Each encoder's window in characters (about 4 per word piece), where ``text != "full"`` keeps head and tail:
#: MiniLM reads 256 word pieces, the static encoder 512; ``hash-bow`` reads everything.
TEXT_WINDOW_CHARS = {"minilm": 1000, "minilm-static": 2000}


class EmbeddingRouter(RuntimeRouter):
    """Base of routers on prompt embeddings: builds the train features the same way the runtime does.

    Subclasses set ``encoder`` and ``use_category`` params; ``_features_meta`` returns the meta keys that
    define featurisation (encoder, use_category, categories, ...) and :meth:`_train_features` the matrix.

    Text selection (:mod:`routers.text_selection`): a subclass that takes a ``text`` parameter (declared
    ``options(*TEXT_MODES)``, default ``"full"``) embeds the text that rule selects. ``"full"`` is the
    behaviour without the parameter, bit for bit (no ``text_selection`` in the state). Any other value is
    learned from the train prompts in ``_features_meta`` (the first step of every ``_fit``) into
    ``text_selector_`` and stored in the feature meta as ``text_selection``, so every state built on it (and a
    blend's parts) carries the rule and the runtime applies it to train and routed prompts alike, in the
    workbench, an export and the proxy.
    """

    _category_scale: float = 1.0
    _normalise: bool = False

    def _text_selector(self) -> TextSelector | None:
        return getattr(self, "text_selector_", None)

    def _features_meta(self, train: OutcomeTable) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "encoder": str(self.encoder),
            "use_category": bool(getattr(self, "use_category", False)),
        }
        if str(getattr(self, "text", "full")) != "full":
            window = TEXT_WINDOW_CHARS.get(str(self.encoder))
            self.text_selector_ = TextSelector.fit(train.prompts, str(self.text), max_chars=window)
            meta["text_selection"] = self.text_selector_.to_state()
        if meta["use_category"]:
            meta["categories"] = category_vocabulary(train)
            meta["category_scale"] = float(self._category_scale)
        if self._normalise:
            meta["normalise"] = True
        return meta

    def _train_xy(self, train: OutcomeTable, feature_meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Train features and scores; with a category, every row also appears with its category hidden.

        This "category dropout" teaches the model what to predict for traffic without a category (live
        requests), instead of reading an all-zero one-hot as a category it never saw.
        """
        x = self._train_features(train, feature_meta)
        y = np.array(train.quality, dtype=float)  # a writable copy (the table's views are read-only)
        if feature_meta.get("use_category") and feature_meta.get("categories"):
            hidden = x.copy()
            hidden[:, -len(feature_meta["categories"]) :] = 0.0
            x, y = np.vstack([x, hidden]), np.vstack([y, y])
        return x, y

    def _train_features(self, train: OutcomeTable, feature_meta: dict[str, Any]) -> np.ndarray:
        probe = runtime.load_state({**self._base_meta("linear"), **feature_meta}, {})
        return probe.features(list(train.prompts), [str(c) for c in train.categories])

    def text_selection_state(self) -> dict[str, Any] | None:
        """The learned text rule as JSON (:meth:`TextSelector.to_state`), or None with ``text = "full"``."""
        self._check_fitted()
        sel = self._text_selector()
        return None if sel is None else sel.to_state()


def fit_logistic(
    x: np.ndarray, y: np.ndarray, c: float, random_state: int | None = 0, *, solver: str = "lbfgs"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column logistic regression of scores ``y`` (n, m) in [0, 1] on ``x``: (weights (m, d), bias (m,)).

    Both solvers minimise ``sum(-y log p - (1 - y) log(1 - p)) + |w|^2 / (2 c)`` with the intercept
    unpenalised (scikit-learn's ``LogisticRegression(C=c)``); fractional scores (judge grades) count as soft
    labels.

    Args:
        x: Features (n, d).
        y: Scores (n, m) in [0, 1], one regression per column.
        c: Inverse L2 strength.
        random_state: Seed of scikit-learn's solver (``lbfgs`` only).
        solver: ``"lbfgs"`` (scikit-learn; for many features, e.g. embeddings) or ``"newton"`` (exact Newton
            steps; far faster on a handful of features, as in the cascade's per-stage scorers).

    A column with a single class gets zero weights and the log-odds of its (smoothed, for ``lbfgs``; clipped to
    [0.001, 0.999], for ``newton``) mean as bias.
    """
    from threadpoolctl import threadpool_limits

    if solver not in ("lbfgs", "newton"):
        raise ValueError(f"solver must be 'lbfgs' or 'newton', got {solver!r}")
    n, m = y.shape
    weights = np.zeros((m, x.shape[1]))
    bias = np.zeros(m)
    binary = bool(np.isin(y, (0.0, 1.0)).all())
    # One BLAS thread: these small solves gain nothing from threads, and on a busy 2-core machine
    # oversubscribed BLAS threads made fits ~15x slower.
    with threadpool_limits(limits=1):
        if solver == "newton":
            for j in range(m):
                weights[j], bias[j] = _newton_column(x, y[:, j], c)
        else:
            _fit_columns(x, y, c, random_state, weights, bias, binary)
    return weights, bias


def _newton_column(z: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """One column of :func:`fit_logistic` by Newton's method: ``(coef (d,), intercept)``."""
    y = np.asarray(y, dtype=float)
    n, d = z.shape
    mean = float(y.mean()) if n else 0.5
    p0 = min(max(mean, 1e-3), 1 - 1e-3)
    beta = np.zeros(d + 1)
    beta[-1] = math.log(p0 / (1 - p0))
    if n == 0 or mean <= 0.0 or mean >= 1.0:
        return beta[:-1], float(beta[-1])
    x = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(d + 1, 1.0 / float(c))
    penalty[-1] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -35, 35)))
        grad = x.T @ (p - y) + penalty * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1].copy(), float(beta[-1])


def _fit_columns(
    x: np.ndarray, y: np.ndarray, c: float, random_state: int | None, weights: np.ndarray, bias: np.ndarray,
    binary: bool,
) -> None:
    """Fill ``weights``/``bias`` column by column (see :func:`fit_logistic`)."""
    from sklearn.linear_model import LogisticRegression

    n, m = y.shape
    for j in range(m):
        col = y[:, j]
        mean = (col.sum() + 0.5) / (n + 1.0)
        if col.min() == col.max():
            bias[j] = np.log(mean / (1 - mean))
            continue
        lr = LogisticRegression(C=c, max_iter=500, random_state=random_state)
        if binary:
            lr.fit(x, col.astype(int))
        else:
            xx = np.vstack([x, x])
            yy = np.r_[np.ones(n, dtype=int), np.zeros(n, dtype=int)]
            ww = np.r_[col, 1.0 - col]
            lr.fit(xx, yy, sample_weight=ww)
        weights[j], bias[j] = lr.coef_[0], lr.intercept_[0]
