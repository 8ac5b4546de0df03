"""Frontier metrics, implemented exactly as published and tested on hand-computed cases.

- :func:`nondecreasing_hull` and :func:`aiq`: RouterBench (Hu et al., 2024). The non-decreasing convex hull
  of a router's (cost, quality) points is the best quality reachable at each cost by mixing operating points
  (and by paying more for no gain); AIQ is the area under it over the cost range, divided by the range.
- :func:`aiq_common`: AIQ of several frontiers over one shared cost range, so that AIQs rank routers (the
  per-frontier :func:`aiq` integrates each over its own range, where a single model scores its own quality).
- :func:`pgr`, :func:`apgr`, :func:`cpt`: RouteLLM (Ong et al., 2024), for a two-model (weak, strong) view.
  PGR = (q - q_weak) / (q_strong - q_weak); APGR = area under PGR against the share of strong-model calls
  (trapezoids over [0, 1]); CPT(x) = the smallest strong-call share at which PGR reaches x.
- :func:`savings_at`: the cheapest operating point whose quality reaches a threshold (the best single
  model's quality minus a non-inferiority margin: "savings at parity"; or a fraction of it), and the share of
  that model's cost saved there.
- :func:`per_category`: the same numbers per category at one operating point.

All costs are in the caller's unit (the frontier uses dollars per 1,000 requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "ParityPoint",
    "aiq",
    "aiq_common",
    "apgr",
    "cpt",
    "hull_value",
    "nondecreasing_hull",
    "nondecreasing_hull_indices",
    "per_category",
    "pgr",
    "savings_at",
    "savings_at_parity",
]

_EPS = 1e-12


def nondecreasing_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the non-decreasing upper convex hull of (cost, quality) points (RouterBench).

    The hull starts at the cheapest point (the best of the cheapest ones when costs tie), climbs along the
    upper concave envelope and stops at the first point of maximum quality; beyond it the hull is flat
    (paying more never has to lower quality).

    Args:
        cost: Cost of each point.
        quality: Quality of each point.

    Returns:
        ``(hull_cost, hull_quality)``: vertices with strictly increasing cost and quality.
    """
    idx = nondecreasing_hull_indices(cost, quality)
    c = np.asarray(cost, dtype=float).ravel()
    q = np.asarray(quality, dtype=float).ravel()
    return c[idx], q[idx]


def nondecreasing_hull_indices(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the points on the non-decreasing hull (see :func:`nondecreasing_hull`), cheapest first.

    Example:
        >>> nondecreasing_hull_indices([1.0, 2.0, 3.0, 4.0], [0.5, 0.55, 0.9, 0.8]).tolist()
        [0, 2]
    """
    c = np.asarray(cost, dtype=float).ravel()
    q = np.asarray(quality, dtype=float).ravel()
    if c.shape != q.shape or len(c) == 0:
        raise ValueError(f"need as many costs as qualities (at least one), got {c.shape} and {q.shape}")
    if not (np.isfinite(c).all() and np.isfinite(q).all()):
        raise ValueError("costs and qualities must be finite")
    order = np.lexsort((-q, c))
    hull: list[int] = []
    for i in order:
        ci, qi = c[i], q[i]
        if hull and qi <= q[hull[-1]] + _EPS:
            continue  # dearer and no better than a kept point: never on a non-decreasing hull
        # Pop the last vertex while it lies on or below the chord from the one before it to this point.
        while len(hull) >= 2:
            (c1, q1), (c2, q2) = (c[hull[-2]], q[hull[-2]]), (c[hull[-1]], q[hull[-1]])
            if (q2 - q1) * (ci - c1) <= (qi - q1) * (c2 - c1) + _EPS * (abs(ci - c1) + 1.0):
                hull.pop()
            else:
                break
        if hull and ci <= c[hull[-1]] + _EPS:
            hull.pop()  # same cost, higher quality: the new point replaces the last one
        hull.append(int(i))
    return np.asarray(hull, dtype=int)


def hull_value(hull_cost: np.ndarray, hull_quality: np.ndarray, at: np.ndarray | float) -> np.ndarray:
    """Quality of the non-decreasing hull at cost(s) ``at`` (NaN left of its first vertex, flat after it)."""
    x = np.asarray(at, dtype=float)
    out = np.interp(x, hull_cost, hull_quality)
    return np.where(x < hull_cost[0] - _EPS, np.nan, out)


def aiq(cost: np.ndarray, quality: np.ndarray, cost_range: tuple[float, float] | None = None) -> float:
    """Average quality improvement (RouterBench AIQ): area under the non-decreasing hull / cost range.

    Args:
        cost: Cost of each operating point.
        quality: Quality of each operating point.
        cost_range: ``(low, high)`` to integrate over; default: the points' own cost range. ``low`` may not
            be below the cheapest point (the router cannot operate there); beyond its dearest point the hull
            is flat.

    Returns:
        The mean hull quality over the range; with a zero-width range (a single cost), the hull's quality
        at that cost.
    """
    hc, hq = nondecreasing_hull(cost, quality)
    c = np.asarray(cost, dtype=float)
    lo, hi = (float(c.min()), float(c.max())) if cost_range is None else map(float, cost_range)
    if hi < lo:
        raise ValueError(f"cost range must be increasing, got ({lo}, {hi})")
    if lo < hc[0] - _EPS * (abs(hc[0]) + 1.0):
        raise ValueError(f"cost range starts at {lo}, below the cheapest operating point {hc[0]}")
    if hi - lo <= _EPS * (abs(hi) + 1.0):
        return float(hull_value(hc, hq, lo))
    # Exact integral of a piecewise-linear function: trapezoids over the vertices inside [lo, hi].
    xs = np.concatenate([[lo], hc[(hc > lo) & (hc < hi)], [hi]])
    ys = hull_value(hc, hq, xs)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / (hi - lo))


def aiq_common(
    frontiers: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    cost_range: tuple[float, float] | None = None,
) -> dict[str, float]:
    """AIQ of several frontiers over one shared cost range (RouterBench's definition), so that it ranks them.

    RouterBench (Hu et al., 2024, "RouterBench: A Benchmark for Multi-LLM Routing System") defines
    ``AIQ(R) = 1 / (c_max - c_min) * integral from c_min to c_max of R~(c) dc``, with ``R~`` the
    non-decreasing convex hull of router R's (cost, quality) points and one ``[c_min, c_max]`` for all the
    routers compared. Its code (``evaluation/AIQ.py``, ``calc_AIQ``) settles what the paper leaves open, and
    this function does the same:

    - right of a frontier's dearest hull vertex, its hull is extended flat up to ``c_max`` (the best quality
      it reaches stays reachable when paying more; ``calc_AIQ`` appends ``(max_x, last y)`` to every hull);
    - left of a frontier's cheapest point it cannot operate, and that stretch counts as quality 0
      (``calc_AIQ`` integrates each hull from its own first point).

    One difference: ``calc_AIQ`` divides by ``max_x`` (a range starting at cost 0); this divides by the
    width ``c_max - c_min`` as the paper writes it. With ``cost_range=(0, c_max)`` the two agree.

    So a single model at cost ``c`` and quality ``q`` scores ``q * (c_max - c) / (c_max - c_min)``, while a
    router that reaches ``q`` more cheaply, and offers cheaper points too, scores more.

    Args:
        frontiers: Name -> ``(cost, quality)`` arrays of that frontier's operating points (a single model is
            one point; the oracle, the single-model hull and each router are entries alike).
        cost_range: ``(c_min, c_max)``; default: the cheapest and the dearest point over all frontiers.

    Returns:
        Name -> AIQ, in the order given. With a zero-width range, each hull's quality at that cost (0 when the
        frontier cannot operate there).

    Raises:
        ValueError: for no frontiers, a decreasing range, or points a hull cannot be built from.

    Example:
        >>> r = aiq_common({"router": ([1, 2, 3], [0.6, 0.85, 0.92]), "single": ([2], [0.9])})
        >>> round(r["router"], 4), round(r["single"], 4)
        (0.805, 0.45)
    """
    if not frontiers:
        raise ValueError("aiq_common needs at least one frontier")
    hulls = {name: nondecreasing_hull(c, q) for name, (c, q) in frontiers.items()}
    if cost_range is None:
        lo = min(float(np.min(np.asarray(c, dtype=float))) for c, _ in frontiers.values())
        hi = max(float(np.max(np.asarray(c, dtype=float))) for c, _ in frontiers.values())
    else:
        lo, hi = map(float, cost_range)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"cost range must be finite and increasing, got ({lo}, {hi})")
    width = hi - lo
    out: dict[str, float] = {}
    for name, (hc, hq) in hulls.items():
        if width <= _EPS * (abs(hi) + 1.0):
            v = hull_value(hc, hq, lo)
            out[name] = 0.0 if np.isnan(v) else float(v)
            continue
        start = max(lo, float(hc[0]))  # quality 0 left of the cheapest point (RouterBench's calc_AIQ)
        if start >= hi:
            out[name] = 0.0
            continue
        xs = np.concatenate([[start], hc[(hc > start) & (hc < hi)], [hi]])
        ys = hull_value(hc, hq, xs)
        out[name] = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / width)
    return out


def pgr(quality: np.ndarray | float, q_weak: float, q_strong: float) -> np.ndarray:
    """Performance gap recovered: (q - q_weak) / (q_strong - q_weak) (RouteLLM).

    Raises:
        ValueError: if the strong model is not better than the weak one (the gap is undefined).
    """
    gap = float(q_strong) - float(q_weak)
    if gap <= _EPS:
        raise ValueError(
            f"PGR needs the strong model to beat the weak one (q_strong={q_strong}, q_weak={q_weak})"
        )
    return (np.asarray(quality, dtype=float) - q_weak) / gap


def apgr(strong_share: np.ndarray, quality: np.ndarray, q_weak: float, q_strong: float) -> float:
    """Average PGR (RouteLLM): area under PGR against the share of strong-model calls, over [0, 1].

    The points are sorted by share and joined by straight lines. A curve that does not reach share 0 or 1
    is closed with the all-weak point (0, PGR 0) and the all-strong point (1, PGR 1), which any router can
    reach by sending everything to one model.
    """
    x = np.asarray(strong_share, dtype=float).ravel()
    y = pgr(quality, q_weak, q_strong).ravel()
    if x.shape != y.shape or len(x) == 0:
        raise ValueError("need one quality per strong-call share")
    if ((x < -_EPS) | (x > 1 + _EPS)).any():
        raise ValueError("strong-call shares must be in [0, 1]")
    if not (np.abs(x) <= _EPS).any():
        x, y = np.append(x, 0.0), np.append(y, 0.0)
    if not (np.abs(x - 1) <= _EPS).any():
        x, y = np.append(x, 1.0), np.append(y, 1.0)
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def cpt(
    strong_share: np.ndarray, quality: np.ndarray, q_weak: float, q_strong: float, level: float
) -> float | None:
    """Call-performance threshold CPT(level) (RouteLLM): the least strong-call share reaching PGR >= level.

    Only operating points are considered (no interpolation between them): the answer is a share a user can
    actually run at. Returns None when no point reaches the level.

    Example:
        ``cpt(shares, quality, q_weak, q_strong, 0.5)`` is CPT(50%).
    """
    x = np.asarray(strong_share, dtype=float).ravel()
    y = pgr(quality, q_weak, q_strong).ravel()
    ok = y >= level - _EPS
    return float(x[ok].min()) if ok.any() else None


@dataclass(frozen=True)
class ParityPoint:
    """The cheapest operating point that reaches a quality threshold."""

    index: int
    """Index of the point in the curve."""
    cost: float
    """Its cost (same unit as the inputs)."""
    quality: float
    """Its quality."""
    threshold: float
    """The quality it had to reach."""
    savings: float
    """Share of the reference cost saved: 1 - cost / reference cost (negative when dearer)."""


def savings_at(
    cost: np.ndarray, quality: np.ndarray, threshold: float, *, ref_cost: float
) -> ParityPoint | None:
    """The cheapest point whose quality is at least ``threshold`` (None when no point is).

    Args:
        cost: Cost of each operating point.
        quality: Quality of each operating point.
        threshold: Quality to reach.
        ref_cost: Cost of the reference (best single model) the savings are relative to; must be > 0.
            Keyword-only, like every reference argument here, so a cost and a quality cannot be swapped.
    """
    c = np.asarray(cost, dtype=float)
    q = np.asarray(quality, dtype=float)
    if ref_cost <= 0:
        raise ValueError(f"the reference cost must be > 0 to express savings, got {ref_cost}")
    ok = np.flatnonzero(q >= threshold - _EPS)
    if len(ok) == 0:
        return None
    i = int(ok[np.lexsort((-q[ok], c[ok]))[0]])  # cheapest; among equally cheap, the better
    return ParityPoint(i, float(c[i]), float(q[i]), float(threshold), float(1.0 - c[i] / ref_cost))


def savings_at_parity(
    cost: np.ndarray,
    quality: np.ndarray,
    *,
    ref_cost: float,
    ref_quality: float,
    margin: float = 0.005,
    fraction: float | None = None,
) -> ParityPoint | None:
    """Savings at parity with a reference model (the best single model).

    Args:
        cost, quality: The router's operating points.
        ref_cost, ref_quality: The reference model's cost and quality (keyword-only).
        margin: Non-inferiority margin: quality may be this much below the reference (0.005 = 0.5 points).
        fraction: If given, the threshold is ``fraction * ref_quality`` instead (0.95, 0.99), and ``margin``
            is ignored.
    """
    threshold = ref_quality * fraction if fraction is not None else ref_quality - margin
    return savings_at(cost, quality, threshold, ref_cost=ref_cost)


def per_category(
    categories: np.ndarray,
    cost: np.ndarray,
    score: np.ndarray,
    *,
    ref_cost: np.ndarray,
    ref_score: np.ndarray,
    oracle_score: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-category means at one operating point, next to the reference model on the same samples.

    Args:
        categories: Category per sample.
        cost, score: The router's per-sample cost and score.
        ref_cost, ref_score: The reference (best single) model's per-sample cost and score (keyword-only).
        oracle_score: The oracle's per-sample score (optional).

    Returns:
        One row per category (sorted by name) plus ``(all)``: ``category, n, quality, cost_per_1k,
        ref_quality, ref_cost_per_1k, quality_diff, savings`` (and ``oracle_quality``).
    """
    frame = pd.DataFrame(
        {
            "category": np.asarray(categories, dtype=object),
            "cost": cost,
            "score": score,
            "ref_cost": ref_cost,
            "ref_score": ref_score,
        }
    )
    if oracle_score is not None:
        frame["oracle"] = oracle_score
    groups = [(str(c), g) for c, g in frame.groupby("category", sort=True)] + [("(all)", frame)]
    rows = []
    for cat, g in groups:
        row = {
            "category": cat,
            "n": len(g),
            "quality": g["score"].mean(),
            "cost_per_1k": g["cost"].mean() * 1000.0,
            "ref_quality": g["ref_score"].mean(),
            "ref_cost_per_1k": g["ref_cost"].mean() * 1000.0,
        }
        row["quality_diff"] = row["quality"] - row["ref_quality"]
        ref = g["ref_cost"].mean()
        row["savings"] = 1.0 - g["cost"].mean() / ref if ref > 0 else np.nan
        if oracle_score is not None:
            row["oracle_quality"] = g["oracle"].mean()
        rows.append(row)
    return pd.DataFrame(rows)
