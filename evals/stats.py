"""Paired bootstrap intervals over samples, and a paired non-inferiority test.

Every headline number of an evaluation is a mean over the same test samples (the router's, the best single
model's, the oracle's), so intervals come from one **paired** bootstrap: each resample draws samples with
replacement once, and every number is recomputed on that same draw. The draw is a matrix of counts ``W``
(resamples x samples), so a statistic over all resamples is one matrix product (vectorised, seeded).

Example:
    >>> W = resample_counts(n=500, n_resamples=2000, seed=0)
    >>> interval = mean_interval(per_sample_scores, W)              # doctest: +SKIP
    >>> interval.value, interval.low, interval.high, interval.n     # doctest: +SKIP

Reference arguments (``ref_cost``, ``ref_score``) are keyword-only everywhere, so a cost and a score, or the
router and its reference, cannot be swapped by position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sps

__all__ = [
    "Interval",
    "NonInferiority",
    "mean_interval",
    "mean_with_ci",
    "non_inferiority",
    "parity_interval",
    "point_intervals",
    "resample_counts",
    "wilson_interval",
]

DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    """A number with its 95% (by default) paired-bootstrap interval and the sample count behind it."""

    value: float | None
    """The estimate on the full sample (None when undefined, e.g. never at parity)."""
    low: float | None
    """Lower bound of the interval (None when the resamples do not bound it)."""
    high: float | None
    """Upper bound of the interval."""
    n: int
    """Number of samples."""

    def to_dict(self) -> dict[str, float | int | None]:
        """A JSON-able dict."""
        return asdict(self)

    def format(self, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
        """``value [low, high]`` with each number multiplied by ``scale`` (``—`` where undefined)."""

        def f(x: float | None) -> str:
            return "—" if x is None or not np.isfinite(x) else f"{x * scale:.{digits}f}{unit}"

        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}]"


def wilson_interval(successes: float, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (95% with the default ``z``).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n successes
    (all wrong gives ``(0, z**2 / (n + z**2))``, all right the mirror image).

    Args:
        successes: Number of successes, 0 <= successes <= n (a float is allowed: a sum of 0/1 scores).
        n: Number of trials (>= 0).
        z: Standard-normal quantile of the two-sided level (1.96 for 95%, 2.576 for 99%).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n == 0`` (no data: no interval).

    Raises:
        ValueError: ``n`` negative or ``successes`` outside [0, n].
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp float noise only: mathematically the bounds are already inside [0, 1].
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_with_ci(scores: np.ndarray, *, z: float = 1.96) -> tuple[float, float, float]:
    """Mean of per-sample scores in [0, 1] with a confidence interval (95% with the default ``z``).

    The one rule behind every "quality [low, high]" that is not a paired bootstrap: the Wilson score
    interval (:func:`wilson_interval`) when every score is 0 or 1 (exact-match grading), else the normal
    approximation ``mean +- z * sd / sqrt(n)`` clipped to [0, 1] (scores are in [0, 1], so the mean is).
    Non-finite scores are dropped first.

    Returns:
        ``(mean, low, high)``: all NaN for no scores; ``(mean, nan, nan)`` for a single non-0/1 score
        (no spread to estimate). A single 0/1 score gets its Wilson interval.
    """
    v = np.asarray(scores, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if np.isin(v, (0.0, 1.0)).all():
        return (mean, *wilson_interval(float(v.sum()), n, z=z))
    if n < 2:
        return (mean, math.nan, math.nan)
    half = z * float(v.std(ddof=1)) / math.sqrt(n)
    return (mean, max(0.0, mean - half), min(1.0, mean + half))


def resample_counts(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap draws as counts: ``W[b, i]`` = how often sample i is in resample b (rows sum to n).

    Args:
        n: Number of samples.
        n_resamples: Number of resamples (1,000-2,000 is plenty for 95% intervals).
        seed: Seed; the same seed gives the same draws, so intervals are reproducible.
    """
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need n >= 1 and n_resamples >= 1, got n={n}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    # Draw indices and count them per resample (one bincount; much faster than multinomial draws).
    idx = rng.integers(0, n, size=(n_resamples, n)) + (np.arange(n_resamples) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(float)


def _bounds(draws: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile bounds; NaN draws (undefined statistic) count as the worst case (-inf)."""
    d = np.where(np.isnan(draws), -np.inf, draws)
    alpha = (1 - level) / 2
    # Order statistics (no interpolation, so an infinite neighbour never turns a bound into NaN).
    lo = np.quantile(d, alpha, method="lower")
    hi = np.quantile(d, 1 - alpha, method="higher")
    return (float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None)


def mean_interval(x: np.ndarray, W: np.ndarray, *, level: float = 0.95) -> Interval:
    """The mean of per-sample values with its bootstrap interval."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    draws = W @ x / n
    lo, hi = _bounds(draws, level)
    return Interval(float(x.mean()), lo, hi, n)


def point_intervals(
    cost: np.ndarray,
    score: np.ndarray,
    W: np.ndarray,
    *,
    ref_cost: np.ndarray,
    ref_score: np.ndarray,
    level: float = 0.95,
) -> dict[str, Interval]:
    """The headline numbers of one operating point, each with a paired interval.

    Args:
        cost, score: The router's per-sample cost ($) and score at the point.
        W: Resample counts from :func:`resample_counts`.
        ref_cost, ref_score: The reference (best single) model's per-sample cost and score (keyword-only).

    Returns:
        ``quality``, ``cost_per_1k`` ($ per 1k requests), ``quality_diff`` (router - reference) and
        ``savings`` (1 - cost / reference cost).
    """
    cost, score = np.asarray(cost, float), np.asarray(score, float)
    ref_cost, ref_score = np.asarray(ref_cost, float), np.asarray(ref_score, float)
    n = len(cost)
    mc, mq, rc = W @ cost / n, W @ score / n, W @ ref_cost / n
    mdiff = W @ (score - ref_score) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        msav = np.where(rc > 0, 1.0 - mc / rc, np.nan)
    ref_mean = ref_cost.mean()
    out = {
        "quality": Interval(float(score.mean()), *_bounds(mq, level), n),
        "cost_per_1k": Interval(float(cost.mean() * 1000), *_scaled(_bounds(mc, level), 1000.0), n),
        "quality_diff": Interval(float((score - ref_score).mean()), *_bounds(mdiff, level), n),
        "savings": Interval(
            float(1.0 - cost.mean() / ref_mean) if ref_mean > 0 else None, *_bounds(msav, level), n
        ),
    }
    return out


def _scaled(bounds: tuple[float | None, float | None], k: float) -> tuple[float | None, float | None]:
    return tuple(None if b is None else b * k for b in bounds)  # type: ignore[return-value]


def parity_interval(
    cost: np.ndarray,
    score: np.ndarray,
    W: np.ndarray,
    *,
    ref_cost: np.ndarray,
    ref_score: np.ndarray,
    margin: float = 0.005,
    fraction: float | None = None,
    level: float = 0.95,
) -> tuple[Interval, float]:
    """Savings at parity with its interval, re-choosing the parity point in every resample.

    Args:
        cost, score: Per-sample cost and score at every operating point, shape (n, K).
        W: Resample counts.
        ref_cost, ref_score: The reference model's per-sample cost and score, shape (n,) (keyword-only).
        margin: Non-inferiority margin (ignored when ``fraction`` is given).
        fraction: Threshold as a fraction of the reference quality instead (0.95, 0.99).

    Returns:
        ``(interval, share of resamples that reach the threshold at all)``. A resample that never reaches
        it counts as the worst case, so a router that often misses parity gets no lower bound (None).
    """
    cost, score = np.asarray(cost, float), np.asarray(score, float)
    n = cost.shape[0]

    def savings(mc: np.ndarray, mq: np.ndarray, rc: np.ndarray, rq: np.ndarray) -> np.ndarray:
        thr = rq * fraction if fraction is not None else rq - margin
        ok = mq >= thr[:, None] - 1e-12
        best = np.where(ok, mc, np.inf).min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(best) & (rc > 0), 1.0 - best / rc, np.nan)

    full = savings(
        cost.mean(0)[None],
        score.mean(0)[None],
        np.atleast_1d(ref_cost.mean()),
        np.atleast_1d(ref_score.mean()),
    )[0]
    draws = savings(W @ cost / n, W @ score / n, W @ ref_cost / n, W @ ref_score / n)
    lo, hi = _bounds(draws, level)
    value = float(full) if np.isfinite(full) else None
    return Interval(value, lo, hi, n), float(np.isfinite(draws).mean())


@dataclass(frozen=True)
class NonInferiority:
    """A paired one-sided test of "no quality loss beyond the margin" against a reference model."""

    diff: float
    """Mean quality difference (router - reference) on the samples."""
    low: float | None
    """Lower bound of the two-sided 95% bootstrap interval of ``diff``."""
    high: float | None
    """Upper bound of that interval."""
    margin: float
    """Allowed quality loss (0.005 = 0.5 points)."""
    p_value: float
    """One-sided paired t-test p-value of H0: diff <= -margin (small = non-inferior)."""
    n: int
    """Number of paired samples."""
    non_inferior: bool
    """True when the interval's lower bound is above -margin."""

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """A JSON-able dict."""
        return asdict(self)


def non_inferiority(
    score: np.ndarray, W: np.ndarray, *, ref_score: np.ndarray, margin: float = 0.005, level: float = 0.95
) -> NonInferiority:
    """Test whether a router's quality is not worse than the reference's by more than ``margin``.

    Args:
        score: The router's per-sample score at the chosen point.
        W: Resample counts.
        ref_score: The reference model's per-sample score on the same samples (keyword-only).
        margin: Non-inferiority margin (>= 0).
    """
    d = np.asarray(score, float) - np.asarray(ref_score, float)
    n = len(d)
    lo, hi = _bounds(W @ d / n, level)
    sd = d.std(ddof=1) if n > 1 else 0.0
    if sd > 0:
        t = (d.mean() + margin) / (sd / np.sqrt(n))
        p = float(_sps.t.sf(t, df=n - 1))
    else:  # every difference identical: the answer is certain
        p = 0.0 if d.mean() > -margin else 1.0
    return NonInferiority(float(d.mean()), lo, hi, float(margin), p, n, bool(lo is not None and lo > -margin))
