"""Propensities of the serving policy: a lam-argmax router with epsilon exploration over the eligible models.

The serving policy (issue 15, item 3): with probability ``1 - epsilon`` the router's own choice (the argmax of
``lam * quality_hat - cost_hat`` over the *eligible* models), with probability ``epsilon`` a uniformly random
eligible model. So each eligible model's probability is::

    p(model) = (1 - epsilon) * [model == greedy choice] + epsilon / n_eligible

and every eligible model keeps a known positive propensity when ``epsilon > 0``: what off-policy estimates
(:mod:`evals.production.offpolicy`) need.

The greedy choice follows the decision rule of ``routers/runtime.py`` (``decide``) to the letter, ties included
(utilities within a relative 1e-12 tie; the cheapest tied model wins, then the better one, then the first). It is
re-implemented here because the evals core never imports ``routers``; a test checks the two agree, ties included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["explore", "greedy_choice", "propensity_matrix", "propensity_of"]


def _as_2d(quality_hat: Any, cost_hat: Any) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(quality_hat, dtype=float)
    if q.ndim != 2:
        raise ValueError(f"quality_hat must be (requests, models), got shape {q.shape}")
    c = np.asarray(cost_hat, dtype=float)
    if c.ndim == 1:
        c = np.broadcast_to(c, q.shape)
    if c.shape != q.shape:
        raise ValueError(f"cost_hat has shape {c.shape}, expected {q.shape} or ({q.shape[1]},)")
    return q, c


def _eligible_mask(eligible: Any, shape: tuple[int, int]) -> np.ndarray:
    if eligible is None:
        return np.ones(shape, dtype=bool)
    mask = np.broadcast_to(np.asarray(eligible, dtype=bool), shape)
    empty = np.flatnonzero(~mask.any(axis=1))
    if len(empty):
        raise ValueError(f"request {int(empty[0])} has no eligible model (every candidate excluded)")
    return mask


def greedy_choice(quality_hat: Any, cost_hat: Any, lam: float, eligible: Any = None) -> np.ndarray:
    """The router's choice per request: ``argmax lam * quality_hat - cost_hat`` over the eligible models.

    Args:
        quality_hat: Predicted quality, shape (n, m).
        cost_hat: Predicted cost, shape (n, m) or (m,).
        lam: Operating point (finite, >= 0).
        eligible: Boolean mask (n, m) or (m,) of the models that may be chosen; None = all.

    Returns:
        Column indices, shape (n,), by the same rule and tie-breaking as ``routers.runtime.decide``.

    Raises:
        ValueError: for a bad operating point or shape, or a request with no eligible model.
    """
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
    q, c = _as_2d(quality_hat, cost_hat)
    mask = _eligible_mask(eligible, q.shape)
    utility = np.where(mask, lam * q - c, -np.inf)
    best = utility.max(axis=1, keepdims=True)
    tied = utility >= best - 1e-12 * (np.abs(best) + lam + 1.0)
    tied_cost = np.where(tied, c, np.inf)
    # The cost tolerance uses the largest cost of the whole array, exactly as the runtime's rule does.
    cheapest = tied & (tied_cost <= tied_cost.min(axis=1, keepdims=True) + 1e-12 * (np.abs(c).max() + 1.0))
    return np.where(cheapest, -q, np.inf).argmin(axis=1)


def propensity_matrix(
    quality_hat: Any, cost_hat: Any, lam: float, epsilon: float, eligible: Any = None
) -> np.ndarray:
    """Probability of each model per request under the epsilon-greedy policy, shape (n, m); rows sum to 1.

    Ineligible models get 0; the greedy one ``1 - epsilon + epsilon / n_eligible``; the other eligible ones
    ``epsilon / n_eligible``.

    Raises:
        ValueError: for epsilon outside [0, 1], or anything :func:`greedy_choice` refuses.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    q, c = _as_2d(quality_hat, cost_hat)
    mask = _eligible_mask(eligible, q.shape)
    greedy = greedy_choice(q, c, lam, mask)
    n_eligible = mask.sum(axis=1, keepdims=True)
    probs = np.where(mask, epsilon / n_eligible, 0.0)
    probs[np.arange(len(greedy)), greedy] += 1.0 - epsilon
    return probs


def propensity_of(
    chosen: Any, quality_hat: Any, cost_hat: Any, lam: float, epsilon: float, eligible: Any = None
) -> np.ndarray:
    """The propensity of each request's chosen model (index per request), shape (n,).

    Raises:
        ValueError: for a chosen index out of range, or anything :func:`propensity_matrix` refuses.
    """
    probs = propensity_matrix(quality_hat, cost_hat, lam, epsilon, eligible)
    idx = np.asarray(chosen, dtype=int).reshape(-1)
    if idx.shape[0] != probs.shape[0] or (idx < 0).any() or (idx >= probs.shape[1]).any():
        raise ValueError(f"chosen must be {probs.shape[0]} model indices in [0, {probs.shape[1]}), got {idx!r}")
    return probs[np.arange(len(idx)), idx]


def explore(
    greedy: Any, epsilon: float, u_explore: Any, u_pick: Any, eligible: Any = None, n_models: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply epsilon exploration to greedy choices, given two uniform draws in [0, 1) per request.

    A request explores when ``u_explore < epsilon``; it then takes the eligible model at position
    ``floor(u_pick * n_eligible)`` (in model order). The draws are arguments so the caller decides where the
    randomness comes from (a seeded generator in a simulation, a per-request random source in the proxy).

    Args:
        greedy: The router's choice per request, shape (n,).
        epsilon: Exploration rate in [0, 1].
        u_explore, u_pick: Uniform draws in [0, 1), shape (n,) each.
        eligible: Boolean mask (n, m) or (m,); None = all ``n_models`` models.
        n_models: Number of models (needed when ``eligible`` is None).

    Returns:
        ``(chosen index per request, whether it explored)``. The chosen model's propensity is what
        :func:`propensity_of` gives for the same inputs.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    g = np.asarray(greedy, dtype=int).reshape(-1)
    if eligible is None:
        if n_models is None:
            raise ValueError("explore needs eligible or n_models")
        eligible = np.ones(n_models, dtype=bool)
    mask = np.broadcast_to(np.asarray(eligible, dtype=bool), (len(g), np.shape(eligible)[-1]))
    ue, up = np.asarray(u_explore, dtype=float), np.asarray(u_pick, dtype=float)
    explored = ue < epsilon
    # The k-th eligible model of each row: cumulative count of eligible columns reaches k + 1 there.
    k = np.minimum((up * mask.sum(axis=1)).astype(int), mask.sum(axis=1) - 1)
    pick = (np.cumsum(mask, axis=1) > k[:, None]).argmax(axis=1)
    return np.where(explored, pick, g), explored
