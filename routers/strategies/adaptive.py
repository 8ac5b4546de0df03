"""An adaptive router that learns from feedback: per (category, model) success with forgetting.

Idea: a contextual multi-armed bandit with one context per category and discounted Beta posteriors
(discounted Thompson sampling / "discounted UCB" for non-stationary bandits: Garivier & Moulines, 2011, "On
upper-confidence bound policies for switching bandit problems"; Raj & Kalyani, 2017, "Taming non-stationary
bandits: a Bayesian approach"). Applied to LLM routing it is the feedback loop of production routers that
watch per-segment success and fall back to a stronger model when a cheap one degrades.

* **Prior** (fitted on train): per category, each model's train success rate (shrunk toward its overall rate)
  as a Beta prior worth ``prior_strength`` observations.
* **Evidence** (live state): per (category, model) discounted counts of successes and failures. A feedback for
  category ``g`` first multiplies every model's counts in ``g`` by ``forgetting`` (so old evidence fades, on
  the clock of that category's traffic) and then adds ``score`` to the successes and ``1 - score`` to the
  failures of the model that answered. Posterior mean = ``(prior_a + s) / (prior_a + prior_b + s + f)``.
* **Decision**: the shared operating point ``lam``: ``argmax lam * posterior_mean - mean cost`` per request
  (ties to the cheaper model). When a cheap model fails its posterior drops and the router **backs off** to a
  stronger one; because the failures fade, and because with probability ``explore`` a request is sent to the
  model the *prior* would pick, a backed-off model is re-tried and **recovers** once it does well again.
* **State** is small and JSON-serialisable (``{category: {model: [successes, failures]}}``): several workers
  can share it (:meth:`AdaptiveRouter.get_state` / :meth:`AdaptiveRouter.set_state`).

Evaluation replays a table's samples **in arrival order** (row order): route, then feed back the recorded
score of the model routed to, starting each operating point from a fresh copy of the fitted prior. All
operating points are simulated together (one pass over the stream, numpy over the points). A request
explores iff a seeded hash of its prompt is below ``explore``, live and in replay alike (the same draws at
every point), so a decision is a pure function of (state, request, lam) and a sweep is deterministic.

The inference math (:func:`~routers.runtime.posterior_head`, :func:`~routers.runtime.apply_feedback`,
:func:`~routers.runtime.explore_choice`, :func:`~routers.runtime.decide_rows`) lives in ``routers/runtime.py``
and is called by the router, its replay and an exported copy alike: an export (kind ``adaptive``) decides and
learns from ``POST /v1/feedback`` exactly as the workbench router does with :meth:`AdaptiveRouter.update`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evals.exceptions import SchemaError
from evals.outcomes import OutcomeTable
from routers.base import Policy, Queries, Router
from routers.params import real, seed
from routers.registry import register_router
from routers.runtime import (
    STATE_FORMAT,
    apply_feedback,
    category_index,
    check_feedback,
    decide_rows,
    evidence_from_dict,
    evidence_to_dict,
    explore_choice,
    posterior_head,
    unit_hash,
)

__all__ = ["AdaptivePolicy", "AdaptiveRouter", "apply_feedback", "explore_choice", "posterior_head"]

_UNKNOWN = ""  # the category of requests that carry none


@register_router("adaptive")
class AdaptiveRouter(Router):
    """Adaptive router: per-category discounted Beta posteriors of success; backs off and recovers.

    Source: discounted (non-stationary) bandits, Garivier & Moulines (2011); Raj & Kalyani (2017). See the
    module docstring for the prior, the update, the decision and the replay.

    Args:
        prior_strength: Pseudo-observations of the train prior per (category, model) (> 0). Smaller adapts
            faster.
        forgetting: Per-feedback discount of a category's evidence, in (0, 1]; ``1 / (1 - forgetting)`` is
            the effective memory in feedbacks of that category (1 = never forget).
        explore: Probability of sending a request to the model the prior would pick when the posterior has
            backed off from it (re-tries a model so it can recover), in [0, 1).
        smoothing: Pseudo-count that shrinks per-category train rates toward the model's overall rate.
        random_state: Seed of the exploration draws (an integer: a request explores iff a seeded hash of its
            prompt falls below ``explore``, so the decision is a pure function of state and request).
    """

    parameter_constraints = {
        "prior_strength": real(low=0, closed="neither"),
        "forgetting": real(low=0, high=1, closed="right"),
        "explore": real(low=0, high=1, closed="left"),
        "smoothing": real(low=0),
        "random_state": seed(),
    }
    exportable = True  # runtime kind "adaptive": the export decides alike and learns from POST /v1/feedback

    def __init__(
        self,
        *,
        prior_strength: float = 10.0,
        forgetting: float = 0.97,
        explore: float = 0.1,
        smoothing: float = 20.0,
        random_state: int = 0,
    ) -> None:
        self.prior_strength = prior_strength
        self.forgetting = forgetting
        self.explore = explore
        self.smoothing = smoothing
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: OutcomeTable) -> None:
        # Parameter ranges are checked by ``fit`` against ``parameter_constraints``.
        q = train.quality
        cats = np.asarray([str(c) for c in train.categories], dtype=object)
        overall = q.mean(axis=0)
        k = float(self.smoothing)
        vocab = sorted({c for c in cats if c})
        rates = []
        for c in vocab:
            rows = cats == c
            rates.append((q[rows].sum(axis=0) + k * overall) / (rows.sum() + k))
        rates.append(overall)  # the last row: unknown category
        self.categories_ = (*vocab, _UNKNOWN)
        self.prior_rate_ = np.clip(np.asarray(rates, dtype=float), 1e-3, 1 - 1e-3)
        # Live state: discounted (successes, failures) per (category, model); starts empty (= the prior).
        self.evidence_ = np.zeros((len(self.categories_), len(self.models_), 2))

    def _cat_rows(self, categories: Sequence[str] | None, n: int) -> np.ndarray:
        # The last row is the unknown category: unseen, empty or absent categories (as in the runtime).
        return category_index(categories, self.categories_[:-1], n)

    # ------------------------------------------------------------------ live use
    def posterior_mean(self, categories: Sequence[str] | None = None, n: int | None = None) -> np.ndarray:
        """Current estimated success per (request, model) from the prior and the feedback so far."""
        self._check_fitted()
        if n is None:
            n = 1 if categories is None else len(categories)
        rows = self._cat_rows(categories, n)
        return posterior_head(rows, self.prior_rate_, self.evidence_, float(self.prior_strength))

    def predict_quality(self, queries: Queries) -> np.ndarray:
        """The posterior mean success per (query, model) for the query's category (unknown: the overall)."""
        return self.posterior_mean(queries.categories, len(queries))

    def route_indices(self, queries: Queries, lam: float) -> np.ndarray:
        """Argmax of ``lam * posterior - cost``; with chance ``explore`` the prior's pick if backed off."""
        self._check_fitted()
        rows = self._cat_rows(queries.categories, len(queries))
        q = posterior_head(rows, self.prior_rate_, self.evidence_, float(self.prior_strength))
        u = unit_hash(queries.prompts, int(self.random_state))
        return explore_choice(q, self.prior_rate_[rows], self.cost_per_model_, lam, u, float(self.explore))

    def update(self, category: str | None, model: str, score: float) -> None:
        """Feed back the quality of one answer (what the proxy's feedback endpoint calls).

        Args:
            category: The request's category ("" or None when unknown; an unseen one counts as unknown).
            model: The model that answered (one of ``models_``).
            score: Its quality in [0, 1] (1 = success).

        Raises:
            SchemaError: for an unknown model or a score outside [0, 1].
        """
        self._check_fitted()
        try:
            j, value = check_feedback(model, score, self.models_)
        except ValueError as exc:
            raise SchemaError(str(exc)) from None
        g = int(self._cat_rows([category or ""], 1)[0])
        apply_feedback(self.evidence_, g, j, value, float(self.forgetting))

    def export_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted prior and the current evidence as ``(meta, arrays)`` for a runtime ``adaptive`` head.

        ``meta``: kind ``adaptive``, ``adaptive: True`` (the proxy then accepts feedback), models, categories
        (the last table row is the unknown category), ``prior_strength``, ``forgetting``, ``explore``,
        ``seed``.
        ``arrays``: ``prior_rate`` (G, m), ``evidence`` (G, m, 2; the feedback so far travels with the
        export), ``cost_per_model`` (m,). The runtime's :class:`~routers.runtime.FeedbackState` rebuilds the
        router from them and takes feedback with the same :func:`apply_feedback`.
        """
        self._check_fitted()
        meta = {
            "format": STATE_FORMAT,
            "kind": "adaptive",
            "adaptive": True,
            "models": list(self.models_),
            "categories": list(self.categories_[:-1]),
            "prior_strength": float(self.prior_strength),
            "forgetting": float(self.forgetting),
            "explore": float(self.explore),
            "seed": int(self.random_state),
            "cost": {"kind": "constant"},
        }
        arrays = {
            "prior_rate": self.prior_rate_.copy(),
            "evidence": self.evidence_.copy(),
            "cost_per_model": np.asarray(self.cost_per_model_, dtype=float).copy(),
        }
        return meta, arrays

    def get_state(self) -> dict[str, dict[str, list[float]]]:
        """The live evidence as JSON-able ``{category: {model: [successes, failures]}}`` (shareable)."""
        self._check_fitted()
        return evidence_to_dict(self.evidence_, self.categories_, self.models_)

    def set_state(self, state: dict[str, dict[str, Sequence[float]]] | str) -> None:
        """Load evidence written by :meth:`get_state` (a dict or its JSON text); unknown keys are errors."""
        self._check_fitted()
        try:
            self.evidence_ = evidence_from_dict(state, self.categories_, self.models_)
        except ValueError as exc:
            raise SchemaError(str(exc)) from None

    def reset_state(self) -> None:
        """Forget all feedback (back to the fitted prior)."""
        self._check_fitted()
        self.evidence_ = np.zeros_like(self.evidence_)

    # ------------------------------------------------------------------ replay
    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> AdaptivePolicy:
        """The replay of a table's samples in arrival (row) order, from a fresh copy of the fitted prior."""
        self._check_fitted()
        table = self._align(table)
        cats = [str(c) for c in table.categories] if use_categories else None
        return AdaptivePolicy(
            self.models_,
            self._cat_rows(cats, table.n_samples),
            self.prior_rate_,
            self.cost_per_model_,
            table.quality,
            table.cost,
            prior_strength=float(self.prior_strength),
            forgetting=float(self.forgetting),
            explore=float(self.explore),
            draws=unit_hash(list(table.prompts), int(self.random_state)),
        )


class AdaptivePolicy(Policy):
    """The adaptive router replayed over a stream, for many operating points at once.

    Args:
        models: Model names (columns).
        cat_rows: Per sample (arrival order), its row in the prior table (last row = unknown category).
        prior_rate: Prior success per (category row, model).
        cost_hat: The cost the decision uses per model (mean train cost).
        quality: Realised scores (n, m), fed back after each decision.
        cost: Realised costs (n, m).
        prior_strength, forgetting, explore: As in :class:`AdaptiveRouter`.
        draws: Per request, a uniform number in [0, 1); it explores iff the number is below ``explore``.
    """

    def __init__(
        self,
        models: Sequence[str],
        cat_rows: np.ndarray,
        prior_rate: np.ndarray,
        cost_hat: np.ndarray,
        quality: np.ndarray,
        cost: np.ndarray,
        *,
        prior_strength: float,
        forgetting: float,
        explore: float,
        draws: np.ndarray,
    ) -> None:
        self.models = tuple(models)
        self.cat_rows = np.asarray(cat_rows, dtype=int)
        self.prior_rate = np.asarray(prior_rate, dtype=float)
        self.cost_hat = np.asarray(cost_hat, dtype=float)
        self.quality = np.asarray(quality, dtype=float)
        self.cost = np.asarray(cost, dtype=float)
        self.prior_strength = prior_strength
        self.forgetting = forgetting
        self.explore = explore
        # One exploration draw per request, shared by every operating point (common random numbers).
        self.draws = np.asarray(draws, dtype=float)
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def simulate(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Replay the stream at every point of ``lams`` at once: (choice, cost, score), each (K, n).

        Cost O(n * K * m) numpy work in one Python loop over the n requests. Each step is the live path
        vectorised over the points: :func:`explore_choice` (the posterior is skipped when the request
        explores) on :func:`posterior_head` of the evidence so far, then :func:`apply_feedback` of the
        recorded score of the model picked, so a replay and a router (or export) fed the same stream agree.
        """
        lams = np.asarray(lams, dtype=float).ravel()
        key = lams.tobytes()
        if key in self._cache:
            return self._cache[key]
        K, n, m = len(lams), len(self.cat_rows), len(self.models)
        n_cats = self.prior_rate.shape[0]
        evidence = np.zeros((K, n_cats, m, 2))  # per point, the live router's evidence
        prior = np.broadcast_to(self.prior_rate[:, None, :], (n_cats, K, m))  # per category, per point
        # The prior's pick per (category, point) never changes: compute it once.
        prior_pick = np.stack([decide_rows(prior[g], self.cost_hat, lams) for g in range(n_cats)])  # (G, K)
        choice = np.empty((K, n), dtype=int)
        ks = np.arange(K)
        for i in range(n):
            g = self.cat_rows[i]
            ev = evidence[:, g]  # (K, m, 2), a view: category g's evidence at every point
            if self.draws[i] < self.explore:
                pick = prior_pick[g]
            else:
                pick = decide_rows(posterior_head(ks, prior[g], ev, self.prior_strength), self.cost_hat, lams)
            choice[:, i] = pick
            apply_feedback(ev, ks, pick, self.quality[i, pick], self.forgetting)
        rows = np.arange(n)
        out = (choice, self.cost[rows, choice], self.quality[rows, choice])
        self._cache = {key: out}  # keep only the latest sweep
        return out

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.outcomes` (a replay of the whole stream at this point)."""
        choice, cost, score = self.simulate(np.array([float(lam)]))
        return choice[0], cost[0], score[0]

    def grid(self, n_points: int = 200) -> np.ndarray:
        """0, then points spread over where the prior decision changes, and one above them all.

        The decision switches between models ``a`` (cheaper) and ``b`` at ``lam = (c_b - c_a) / (q_b - q_a)``;
        the candidate points are these break-evens over every category's prior (the posterior moves around
        them), spread geometrically a decade either side.
        """
        c, q = self.cost_hat, self.prior_rate
        dc = c[None, :, None] - c[None, None, :]  # (1, m, m): c_b - c_a
        dq = q[:, :, None] - q[:, None, :]  # (G, m, m): q_b - q_a
        with np.errstate(divide="ignore", invalid="ignore"):
            be = dc / dq
        be = be[(dc > 0) & (dq > 1e-9) & np.isfinite(be)]
        if len(be) == 0:
            return np.zeros(1)
        lo, hi = float(be.min()) / 10.0, float(be.max()) * 10.0
        return np.concatenate([[0.0], np.geomspace(max(lo, 1e-12), max(hi, 2e-12), max(n_points - 1, 1))])

    def curve(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.curve`: one simulation for all points."""
        choice, cost, score = self.simulate(lams)
        K, m = choice.shape[0], len(self.models)
        share = np.zeros((K, m))
        np.add.at(share, (np.repeat(np.arange(K), choice.shape[1]), choice.ravel()), 1.0)
        return cost.mean(axis=1), score.mean(axis=1), share / choice.shape[1]
