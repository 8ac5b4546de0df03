"""Frontier replay: a fitted router's (cost, quality) operating points on a table, with its references.

A router's operating point ``lam`` is swept over scores computed once (:meth:`routers.base.Router.policy`),
so a frontier of hundreds of points costs about as much as routing the table once. Every frontier carries,
on the same axes and the same samples:

- the **oracle**: per sample, the cheapest model with the top score (its sweep over the true outcomes is
  the oracle curve; its last point is the oracle point);
- every **single model** (one point each);
- the **random mix** between the cheapest and the best single model (a straight line: send a share ``p``
  of traffic to the best model at random).

Costs are dollars per 1,000 requests; quality is the mean score in [0, 1].

Example:
    >>> frontier = compute_frontier(router, split.test)          # doctest: +SKIP
    >>> frontier.to_frame().head()                               # doctest: +SKIP
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evals.outcomes import OutcomeTable
from routers.base import Policy, Router, ScorePolicy
from routers.registry import name_of

__all__ = [
    "Curve",
    "Frontier",
    "compute_frontier",
    "oracle_choice",
    "per_sample_outcomes",
    "reference_curves",
    "sweep_policies",
]

#: Dollars per request -> dollars per 1,000 requests.
PER_1K = 1000.0


@dataclass(frozen=True)
class Curve:
    """Operating points of one line of a frontier plot (means over the table's samples)."""

    name: str
    """Label (router label, ``oracle``, a model name, ``random``)."""
    kind: str
    """``router``, ``oracle``, ``single`` or ``random``."""
    lam: np.ndarray
    """Operating point of each point (NaN where the line has no knob, e.g. single models)."""
    cost: np.ndarray
    """Mean dollars per request at each point."""
    quality: np.ndarray
    """Mean score at each point."""
    share: np.ndarray
    """Share of traffic per model at each point, shape (n_points, n_models)."""

    @property
    def cost_per_1k(self) -> np.ndarray:
        """Dollars per 1,000 requests at each point."""
        return self.cost * PER_1K

    def __len__(self) -> int:
        return len(self.cost)


@dataclass(frozen=True)
class Frontier:
    """A router's frontier on one table, with the oracle, single models and random mix on the same samples.

    Build with :func:`compute_frontier`. ``policy`` keeps the scored table so that per-sample outcomes at any
    operating point (for bootstrap intervals) can be recomputed without scoring again.
    """

    name: str
    """The router's label."""
    models: tuple[str, ...]
    """Model names, in the column order of every ``share``."""
    n_samples: int
    """Number of samples replayed."""
    cost_estimated: bool
    """True when the table's costs are estimates (say so wherever they are shown)."""
    router: Curve
    """The router's sweep (increasing ``lam``)."""
    oracle: Curve
    """The oracle's sweep over the true outcomes; its last point is the oracle."""
    singles: Curve
    """One point per model, in ``models`` order."""
    random: Curve
    """The random mix between the cheapest and the best single model."""
    policy: Policy | None = field(default=None, repr=False, compare=False)
    """The :class:`routers.base.Policy` the router curve came from (for per-sample outcomes)."""

    @property
    def best_single(self) -> int:
        """Column of the best single model: highest mean quality, ties to the cheaper."""
        return _best_index(self.singles.quality, self.singles.cost)

    @property
    def cheapest_single(self) -> int:
        """Column of the cheapest single model (ties to the better)."""
        order = np.lexsort((-self.singles.quality, self.singles.cost))
        return int(order[0])

    def per_sample(self, lams: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sample outcomes at each operating point: (choice, cost, score), each of shape (n, K).

        Args:
            lams: Operating points (default: the router curve's own points).
        """
        if self.policy is None:
            raise ValueError(f"frontier {self.name!r} was built without its policy")
        lams = self.router.lam if lams is None else np.asarray(lams, dtype=float)
        return per_sample_outcomes(self.policy, lams, self.n_samples)

    def to_frame(self) -> pd.DataFrame:
        """Every point of every line as one long table.

        Columns: ``curve, kind, point, lam, cost_per_1k, quality, share_<model>...``, plus ``router`` and
        ``cost_estimated`` so that frames of several routers can be concatenated.
        """
        parts = []
        for curve in (self.router, self.oracle, self.singles, self.random):
            part = pd.DataFrame(
                {
                    "router": self.name,
                    "curve": curve.name if curve.kind != "single" else list(self.models),
                    "kind": curve.kind,
                    "point": np.arange(len(curve)),
                    "lam": curve.lam,
                    "cost_per_1k": curve.cost_per_1k,
                    "quality": curve.quality,
                }
            )
            shares = pd.DataFrame(curve.share, columns=[f"share_{m}" for m in self.models])
            parts.append(pd.concat([part, shares], axis=1))
        out = pd.concat(parts, ignore_index=True)
        out["cost_estimated"] = self.cost_estimated
        return out


def per_sample_outcomes(
    policy: Policy, lams: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A policy's per-sample outcomes at each point: (choice, cost, score), each of shape (n, K).

    Args:
        policy: The policy (a stateful one with a ``simulate(lams)`` batch hook replays its stream once).
        lams: Operating points.
        n: Number of samples of the table the policy was built on.
    """
    lams = np.asarray(lams, dtype=float)
    batch = getattr(policy, "simulate", None)
    if callable(batch):
        # Optional batch hook of stateful policies (one replay of the stream for all points):
        # ``simulate(lams)`` -> (choice, cost, score), each of shape (K, n).
        choice, cost, score = batch(lams)
        return np.asarray(choice).T, np.asarray(cost).T, np.asarray(score).T
    choice = np.empty((n, len(lams)), dtype=np.intp)
    cost = np.empty((n, len(lams)))
    score = np.empty((n, len(lams)))
    for k, lam in enumerate(lams):
        choice[:, k], cost[:, k], score[:, k] = policy.outcomes(float(lam))
    return choice, cost, score


def _best_index(quality: np.ndarray, cost: np.ndarray) -> int:
    """Index of the highest quality, ties (within 1e-12) to the cheaper, then the first."""
    top = quality >= quality.max() - 1e-12
    return int(np.where(top, cost, np.inf).argmin())


def oracle_choice(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per sample, the column of the cheapest model with the top score (ties to the lower index).

    Args:
        quality: Realised scores (n, m).
        cost: Realised costs (n, m).
    """
    quality = np.asarray(quality, dtype=float)
    top = quality >= quality.max(axis=1, keepdims=True) - 1e-12
    return np.where(top, np.asarray(cost, dtype=float), np.inf).argmin(axis=1)


def reference_curves(
    models: tuple[str, ...], quality: np.ndarray, cost: np.ndarray, n_points: int = 200
) -> tuple[Curve, Curve, Curve]:
    """The oracle, single-model and random-mix lines of one table's wide outcomes.

    Returns:
        ``(oracle, singles, random)``.
    """
    quality = np.asarray(quality, dtype=float)
    cost = np.asarray(cost, dtype=float)
    m = len(models)
    # The oracle sweep is a ScorePolicy whose predictions are the true outcomes.
    oracle_policy = ScorePolicy(models, quality, cost, quality, cost)
    lams = oracle_policy.grid(n_points)
    o_cost, o_qual, o_share = oracle_policy.curve(lams)
    oracle = Curve("oracle", "oracle", lams, o_cost, o_qual, o_share)

    s_qual, s_cost = quality.mean(axis=0), cost.mean(axis=0)
    singles = Curve("single", "single", np.full(m, np.nan), s_cost, s_qual, np.eye(m))

    best = _best_index(s_qual, s_cost)
    cheap = int(np.lexsort((-s_qual, s_cost))[0])
    p = np.linspace(0.0, 1.0, 21)
    share = np.zeros((len(p), m))
    share[:, cheap] += 1 - p
    share[:, best] += p
    random = Curve(
        "random",
        "random",
        p,
        (1 - p) * s_cost[cheap] + p * s_cost[best],
        (1 - p) * s_qual[cheap] + p * s_qual[best],
        share,
    )
    return oracle, singles, random


def compute_frontier(
    router: Router,
    table: OutcomeTable,
    *,
    n_points: int = 200,
    name: str | None = None,
    policy: Policy | None = None,
) -> Frontier:
    """Sweep a fitted router's operating point over a table.

    Args:
        router: A fitted :class:`routers.base.Router` (used only when ``policy`` is not given).
        table: The outcomes to replay (usually the test split).
        n_points: Operating points requested from the policy's grid (at least 100 recommended; the
            policy returns fewer when the router has fewer distinct decisions).
        name: Label of the router line (default: the router's registered name).
        policy: A policy already built by ``router.policy(table)`` (skips scoring again).

    Returns:
        A :class:`Frontier`.
    """
    if policy is None:
        policy = router.policy(table)
    if name is None:
        name = name_of(type(router))
    models = tuple(policy.models)
    aligned = table if table.models == models else table.select(models=list(models))
    lams = np.asarray(policy.grid(n_points), dtype=float)
    cost, quality, share = policy.curve(lams)
    oracle, singles, random = reference_curves(models, aligned.quality, aligned.cost, n_points)
    return Frontier(
        name=name,
        models=models,
        n_samples=aligned.n_samples,
        cost_estimated=aligned.cost_estimated,
        router=Curve(name, "router", lams, np.asarray(cost), np.asarray(quality), np.asarray(share)),
        oracle=oracle,
        singles=singles,
        random=random,
        policy=policy,
    )


def sweep_policies(
    policies: list[Policy], *, n_points: int = 200, max_workers: int | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Sweep several routers' policies at once: per policy ``(lams, cost, quality, share)``.

    The sweeps are independent and spend their time in numpy, which releases the GIL, so a thread per core
    runs them in parallel (``max_workers`` defaults to the number of cores, at most one per policy).

    Args:
        policies: Policies from ``router.policy(table)``.
        n_points: Operating points requested from each policy's grid.
        max_workers: Threads to use (1 = sequential).
    """
    def one(policy: Policy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lams = np.asarray(policy.grid(n_points), dtype=float)
        cost, quality, share = policy.curve(lams)
        return lams, np.asarray(cost), np.asarray(quality), np.asarray(share)

    workers = max(1, min(max_workers or os.cpu_count() or 1, len(policies)))
    if workers == 1:
        return [one(p) for p in policies]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="routelab-sweep") as pool:
        return list(pool.map(one, policies))
