"""Off-policy estimates: what another policy would have cost and scored, from the traffic one policy served.

The log holds, per request, the model the serving (*logging*) policy chose, that choice's propensity ``p_i``
(:mod:`evals.production.propensity`), and what it cost and scored (``r_i``). For a *target* policy ``pi`` (another
operating point, another router), with weight ``w_i = pi(a_i | x_i) / p_i``:

* **IPS** (inverse propensity scoring): ``mean_i w_i r_i``; unbiased when every model the target may pick has a
  positive logging propensity (exploration ``epsilon > 0`` guarantees it);
* **SNIPS** (self-normalised IPS): ``sum_i w_i r_i / sum_i w_i``; a little biased, far less variable;
* **DR** (doubly robust): ``mean_i [ sum_a pi(a | x_i) rhat(x_i, a) + w_i (r_i - rhat(x_i, a_i)) ]`` with a reward
  model ``rhat`` (here the candidates' predicted quality or cost, as the log stores them); unbiased when either the
  propensities or the reward model are right, and much less variable than IPS when the reward model is good.

Each comes with an interval (95% by default) of one of two kinds, named in the result's ``interval_method``:

* ``design`` (the default whenever the logging policy's probabilities of every model are known, as they are in
  a decision log): ``value +- z * se``, where ``se`` is the larger of (1) the usual plug-in standard error of the
  per-request terms and (2) the **design** standard error: the variance those terms have under the *known*
  logging policy, ``E[w^2 (r - b)^2 | x] = sum_a pi(a|x)^2 / mu(a|x) * v_a``, averaged over *every* logged request
  (``b`` = the estimator's baseline: 0 for IPS, the SNIPS value, ``rhat`` for DR; ``v_a`` = the mean of
  ``(r - b)^2`` over the requests that logged model ``a``). Why: with exploration ``epsilon`` spread over ``m``
  models, a target that disagrees with the logging router is seen only on the rare explored requests that happen
  to pick its model (weight ``m / epsilon``, e.g. 280; a handful per 5,000 requests). The estimate's spread is
  dominated by those few requests, and on most logs they are too few to show it: a bootstrap or plug-in variance
  then sees almost nothing and its interval is far too narrow (measured on MMLU-Pro: 75-95% coverage per target
  and metric for a nominal 95%, ``bench/bench_offpolicy.py``). The known propensities say how much variance the
  unseen requests carry, from all ``n`` requests instead of the few that hit (measured: 95-100%).
  Where the reward's range is known (``reward_range``: a grade in [0, 1], a cost >= 0), the ends are clipped to it.
* ``bootstrap``: the percentile bootstrap over logged requests (one paired draw for all three, from
  :func:`evals.stats.resample_counts`). Kept for comparison and for logs without the full logging probabilities;
  it under-covers when the weights are heavy (small ``effective_n``).

A target policy is either a deterministic choice per request (model indices, shape (n,)) or a probability matrix
(n, m) whose rows sum to 1. No reward model is fitted on the log (DR's ``rhat`` is the router's own predictions,
fitted offline), so there is no fitting variance to carry and no cross-fitting to do.

Example:
    >>> est = estimate(choice, propensity, quality, target=other_choice, predicted=quality_hat)  # doctest: +SKIP
    >>> est.dr.value, est.dr.low, est.dr.high                                                     # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from evals.production.propensity import propensity_matrix
from evals.production.records import DecisionRecord
from evals.stats import DEFAULT_RESAMPLES, Interval, resample_counts

__all__ = [
    "INTERVAL_METHODS",
    "LoggedDecisions",
    "OffPolicyEstimate",
    "estimate",
    "estimate_policy",
    "target_probabilities",
]

#: The interval kinds :func:`estimate` computes (see the module docstring); ``auto`` picks ``design`` when the
#: logging probabilities are given and ``bootstrap`` otherwise.
INTERVAL_METHODS = ("auto", "design", "bootstrap")


@dataclass(frozen=True)
class OffPolicyEstimate:
    """IPS, SNIPS and DR estimates of a target policy's mean reward, each with its bootstrap interval."""

    ips: Interval
    """Inverse propensity scoring."""
    snips: Interval
    """Self-normalised IPS."""
    dr: Interval | None
    """Doubly robust (None without a reward model)."""
    n: int
    """Logged requests used (those with a known reward)."""
    n_dropped: int
    """Logged requests left out because their reward is unknown (NaN)."""
    effective_n: float
    """Kish effective sample size of the weights, ``(sum w)^2 / sum w^2``: small = few requests carry the estimate."""
    max_weight: float
    """The largest importance weight."""
    unsupported: float | None
    """Share of the target's probability mass on models the logging policy could not pick (propensity 0): the
    part IPS and SNIPS cannot see (None when the logging probabilities of every model are not known)."""
    interval_method: str = "bootstrap"
    """How the intervals were computed: ``design`` or ``bootstrap`` (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "ips": self.ips.to_dict(),
            "snips": self.snips.to_dict(),
            "dr": None if self.dr is None else self.dr.to_dict(),
            "n": self.n,
            "n_dropped": self.n_dropped,
            "effective_n": self.effective_n,
            "max_weight": self.max_weight,
            "unsupported": self.unsupported,
            "interval_method": self.interval_method,
        }


def target_probabilities(target: Any, n: int, m: int) -> np.ndarray:
    """A target policy as an (n, m) probability matrix.

    Args:
        target: Model indices (n,) of a deterministic policy, or a probability matrix (n, m).

    Raises:
        ValueError: for a wrong shape, an index out of range, or rows that are not probabilities.
    """
    t = np.asarray(target)
    if t.ndim == 1:
        if t.shape[0] != n:
            raise ValueError(f"target choice has {t.shape[0]} entries for {n} logged requests")
        if not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"target choice must be model indices (integers), got dtype {t.dtype}")
        if (t < 0).any() or (t >= m).any():
            raise ValueError(f"target choice has an index outside [0, {m})")
        probs = np.zeros((n, m))
        probs[np.arange(n), t] = 1.0
        return probs
    probs = np.asarray(t, dtype=float)
    if probs.shape != (n, m):
        raise ValueError(f"target probabilities have shape {probs.shape}, expected {(n, m)}")
    if not np.isfinite(probs).all() or (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError("target probabilities must be finite, >= 0 and sum to 1 in every row")
    return probs


def _bounds(draws: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile bounds (order statistics, like evals.stats); an undefined draw (NaN) counts as the worst case."""
    d = np.where(np.isnan(draws), -np.inf, draws)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(d, alpha, method="lower"), np.quantile(d, 1 - alpha, method="higher")
    return (float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None)


def _normal_interval(value: float | None, se: float, n: int, level: float) -> Interval:
    """``value +- z * se`` (undefined value: no bounds)."""
    if value is None or not np.isfinite(se):
        return Interval(value, None, None, n)
    half = NormalDist().inv_cdf(0.5 + level / 2) * se
    return Interval(value, value - half, value + half, n)


def _clip(iv: Interval, reward_range: tuple[float | None, float | None]) -> Interval:
    """``iv`` with its ends clipped to the possible range of a mean reward."""
    lo_r, hi_r = reward_range
    low, high = iv.low, iv.high
    if lo_r is not None:
        low = None if low is None else max(low, lo_r)
        high = None if high is None else max(high, lo_r)
    if hi_r is not None:
        low = None if low is None else min(low, hi_r)
        high = None if high is None else min(high, hi_r)
    return Interval(iv.value, low, high, iv.n)


def _design_se(
    terms_direct: np.ndarray,
    residual: np.ndarray,
    a: np.ndarray,
    ratio: np.ndarray,
    pi: np.ndarray,
    center: float,
    plug_in_var: float,
) -> float:
    """Standard error of ``mean_i [d_i + w_i (r_i - b_i)]`` from the known logging policy (module docstring).

    ``E[term^2 | x_i]`` is ``d_i^2 + 2 d_i sum_a pi(a|x_i) e_a + sum_a pi(a|x_i)^2 / mu(a|x_i) v_a``, with ``e_a`` and
    ``v_a`` the mean and mean square of the residual ``r - b`` over the requests that logged model ``a`` (a model
    the log never shows gets the largest ``v`` seen, and ``e = 0``). The variance of a term is that, averaged over
    every request, minus ``center^2`` (the mean of a term); the result is never below the plug-in variance.

    Args:
        terms_direct: ``d_i``, the direct part of each term (0 for IPS and SNIPS), (n,).
        residual: ``r_i - b_i`` at the logged model, (n,).
        a: The logged model index per request, (n,).
        ratio: ``pi^2 / mu`` per request and model (0 where ``mu`` is 0), (n, m).
        pi: The target's probabilities, (n, m).
        center: The mean of a term (the estimate for IPS and DR, 0 for SNIPS's linearised terms).
        plug_in_var: The sample variance of the terms.
    """
    n, m = ratio.shape
    counts = np.bincount(a, minlength=m)
    seen = counts > 0
    e = np.where(seen, np.bincount(a, weights=residual, minlength=m) / np.maximum(counts, 1), 0.0)
    v = np.bincount(a, weights=residual**2, minlength=m) / np.maximum(counts, 1)
    v = np.where(seen, v, v[seen].max())  # conservative for a model the log never shows
    second = terms_direct**2 + 2 * terms_direct * (pi @ e) + ratio @ v
    var = max(float(second.mean()) - center**2, plug_in_var, 0.0)
    return float(np.sqrt(var / n))


def estimate(
    choice: Any,
    propensity: Any,
    reward: Any,
    target: Any,
    predicted: Any = None,
    *,
    logging_probabilities: Any = None,
    interval: str = "auto",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    resamples: np.ndarray | None = None,
    reward_range: tuple[float | None, float | None] = (None, None),
) -> OffPolicyEstimate:
    """Estimate a target policy's mean reward from logged decisions (see the module docstring).

    Args:
        choice: The logged model index per request, shape (n,).
        propensity: The logging policy's probability of that choice, shape (n,), each in (0, 1].
        reward: The observed reward (a score, or a cost) per request, shape (n,); NaN = unknown (left out, which
            keeps the estimate unbiased when what is known does not depend on the choice, e.g. a random shadow
            sample).
        target: The target policy: model indices (n,) or probabilities (n, m).
        predicted: Reward model ``rhat`` (n, m) for DR (None: no DR).
        logging_probabilities: The logging policy's full probabilities (n, m): needed for ``design`` intervals and
            the ``unsupported`` diagnostic.
        interval: ``design``, ``bootstrap`` or ``auto`` (design when ``logging_probabilities`` is given).
        n_resamples, seed: The bootstrap (ignored when ``resamples`` is given, or for design intervals).
        level: Interval level.
        resamples: Resample counts (B, n) from :func:`evals.stats.resample_counts` over the requests kept, to pair
            several bootstrap estimates on one draw.
        reward_range: The smallest and largest reward possible (None: unbounded), e.g. ``(0, 1)`` for a grade:
            interval ends are clipped to it (the target's mean reward cannot lie outside, so no coverage is lost).
            The estimates themselves are not clipped (an IPS value outside the range says its weights are wild).

    Raises:
        ValueError: for mismatched shapes, propensities outside (0, 1], no request with a known reward, an unknown
            interval kind, or design intervals without the logging probabilities.
    """
    if interval not in INTERVAL_METHODS:
        raise ValueError(f"interval must be one of {', '.join(INTERVAL_METHODS)}, got {interval!r}")
    if interval == "auto":
        interval = "design" if logging_probabilities is not None else "bootstrap"
    if interval == "design" and logging_probabilities is None:
        raise ValueError("design intervals need logging_probabilities (the logging policy's probability of every "
                         "model per request); pass them, or interval='bootstrap'")
    a = np.asarray(choice, dtype=int).reshape(-1)
    p = np.asarray(propensity, dtype=float).reshape(-1)
    r = np.asarray(reward, dtype=float).reshape(-1)
    n_all = len(a)
    if len(p) != n_all or len(r) != n_all:
        raise ValueError(f"choice, propensity and reward need one entry per request: {n_all}, {len(p)}, {len(r)}")
    if not (np.isfinite(p) & (p > 0) & (p <= 1)).all():
        raise ValueError("every logged propensity must be in (0, 1]")
    target_arr = np.asarray(target)
    m = (
        target_arr.shape[1] if target_arr.ndim == 2
        else np.asarray(predicted).shape[1] if predicted is not None
        else np.asarray(logging_probabilities).shape[1] if logging_probabilities is not None
        else int(max(a.max(initial=0), target_arr.max(initial=0))) + 1
    )
    pi = target_probabilities(target_arr, n_all, m)
    if (a < 0).any() or (a >= m).any():
        raise ValueError(f"logged choice has an index outside [0, {m})")
    mu = None
    if logging_probabilities is not None:
        mu = np.asarray(logging_probabilities, dtype=float)
        if mu.shape != (n_all, m):
            raise ValueError(f"logging probabilities have shape {mu.shape}, expected {(n_all, m)}")
    known = ~np.isnan(r)
    n = int(known.sum())
    if n == 0:
        raise ValueError("no logged request has a known reward")
    a, p, r, pi = a[known], p[known], r[known], pi[known]
    rows = np.arange(n)
    w = pi[rows, a] / p
    wr = w * r
    sw = float(w.sum())
    rhat = None
    if predicted is not None:
        rhat = np.asarray(predicted, dtype=float)
        if rhat.shape != (n_all, m):
            raise ValueError(f"predicted rewards have shape {rhat.shape}, expected {(n_all, m)}")
        rhat = rhat[known]
    ips_value = float(wr.mean())
    snips_value = float(wr.sum() / sw) if sw > 0 else None
    direct = None if rhat is None else (pi * rhat).sum(axis=1)
    dr_terms = None if rhat is None else direct + w * (r - rhat[rows, a])
    if interval == "bootstrap":
        W = resamples if resamples is not None else resample_counts(n, n_resamples, seed)
        if W.shape[1] != n:
            raise ValueError(f"resamples are over {W.shape[1]} requests, but {n} have a known reward")
        with np.errstate(divide="ignore", invalid="ignore"):
            snips_draws = (W @ wr) / (W @ w)
        ips = Interval(ips_value, *_bounds(W @ wr / n, level), n)
        snips = Interval(snips_value, *_bounds(snips_draws, level), n)
        dr = None if dr_terms is None else Interval(float(dr_terms.mean()), *_bounds(W @ dr_terms / n, level), n)
    else:
        mu_k = mu[known]  # type: ignore[index]
        supported = mu_k > 0  # unsupported mass is reported as `unsupported`; it carries no variance term here
        ratio = np.where(supported, pi**2 / np.where(supported, mu_k, 1.0), 0.0)
        zero = np.zeros(n)
        ips_se = _design_se(zero, r, a, ratio, pi, ips_value, float(wr.var()))
        ips = _normal_interval(ips_value, ips_se, n, level)
        if snips_value is None:
            snips = Interval(None, None, None, n)
        else:
            # Linearised: SNIPS - truth ~ mean_i w_i (r_i - value) / mean(w).
            lin = w * (r - snips_value)
            snips_se = _design_se(zero, r - snips_value, a, ratio, pi, 0.0, float(lin.var())) / (sw / n)
            snips = _normal_interval(snips_value, snips_se, n, level)
        dr = None
        if dr_terms is not None:
            dr_value = float(dr_terms.mean())
            dr_se = _design_se(direct, r - rhat[rows, a], a, ratio, pi, dr_value, float(dr_terms.var()))
            dr = _normal_interval(dr_value, dr_se, n, level)
    ips, snips = _clip(ips, reward_range), _clip(snips, reward_range)
    dr = None if dr is None else _clip(dr, reward_range)
    unsupported = None
    if mu is not None:
        unsupported = float(np.where(mu[known] <= 0, pi, 0.0).sum(axis=1).mean())
    ess = float(sw**2 / (w**2).sum()) if sw > 0 else 0.0
    return OffPolicyEstimate(ips, snips, dr, n, n_all - n, ess, float(w.max()), unsupported, interval)


@dataclass(frozen=True)
class LoggedDecisions:
    """The routed requests of a decision log as arrays, in one model order.

    Built from records by :meth:`from_records`; the logging policy's full probabilities are recomputed from each
    record's candidates, operating point and epsilon (and checked against the logged propensity).
    """

    models: tuple[str, ...]
    """Model order of every (n, m) array."""
    request_ids: tuple[str, ...]
    """The requests, in log order."""
    choice: np.ndarray
    """Index of the model the logging policy chose, (n,)."""
    propensity: np.ndarray
    """Its logged propensity, (n,)."""
    predicted_quality: np.ndarray
    """Candidates' predicted quality, (n, m)."""
    predicted_cost: np.ndarray
    """Candidates' predicted cost, (n, m)."""
    cost: np.ndarray
    """Observed cost in dollars, (n,); NaN where unknown."""
    quality: np.ndarray
    """Observed quality (a grade), (n,); NaN where ungraded."""
    logging_probabilities: np.ndarray | None
    """The logging policy's probability of every model, (n, m), when every record carries its operating point."""

    @classmethod
    def from_records(
        cls,
        records: Iterable[DecisionRecord],
        *,
        quality: Mapping[str, float] | None = None,
        models: Sequence[str] | None = None,
    ) -> tuple[LoggedDecisions, Counter[str]]:
        """The routed records with a propensity, and a count of the records left out by reason.

        Args:
            records: Decision records (e.g. :func:`evals.production.log_reader.read_log`'s).
            quality: Grade per request id (from shadow grading or feedback); others get NaN.
            models: Model order (default: the first routed record's candidates).

        Left out: ``not_routed`` (no chosen model: passthrough or refused), ``no_candidates``,
        ``other_models`` (candidates differ from ``models``), ``control_arm`` (served by the rollout's control
        model, not the policy), ``propensity_mismatch`` (the logged propensity disagrees with the one recomputed
        from the record: the log cannot be trusted for that request).
        """
        skipped: Counter[str] = Counter()
        quality = quality or {}
        order: tuple[str, ...] | None = tuple(models) if models is not None else None
        rows: list[DecisionRecord] = []
        for rec in records:
            if rec.chosen is None or rec.propensity is None:
                skipped["not_routed"] += 1
            elif not rec.candidates:
                skipped["no_candidates"] += 1
            elif rec.arm == "control":
                skipped["control_arm"] += 1
            else:
                names = tuple(c.model for c in rec.candidates)
                order = order or names
                if set(names) != set(order):
                    skipped["other_models"] += 1
                else:
                    rows.append(rec)
        if order is None or not rows:
            raise ValueError(f"no routed record with candidates and a propensity in the log (left out: "
                             f"{dict(skipped) or 'none'})")
        col = {name: j for j, name in enumerate(order)}
        n, m = len(rows), len(order)
        qhat, chat = np.zeros((n, m)), np.zeros((n, m))
        eligible = np.ones((n, m), dtype=bool)
        for i, rec in enumerate(rows):
            for c in rec.candidates:
                j = col[c.model]
                qhat[i, j], chat[i, j], eligible[i, j] = c.predicted_quality, c.predicted_cost, c.eligible
        choice = np.array([col[r.chosen] for r in rows])  # type: ignore[index]
        prop = np.array([r.propensity for r in rows], dtype=float)
        mu = None
        if all(r.lam is not None for r in rows):
            mu = _grouped_propensities(rows, qhat, chat, eligible)
            ok = np.isclose(mu[np.arange(n), choice], prop, rtol=1e-6, atol=1e-9)
            skipped["propensity_mismatch"] += int((~ok).sum())
            if not ok.all():
                keep = np.flatnonzero(ok)
                rows = [rows[i] for i in keep]
                qhat, chat, choice, prop, mu = qhat[keep], chat[keep], choice[keep], prop[keep], mu[keep]
        if not rows:
            raise ValueError("every routed record's propensity disagrees with its candidates, lam and epsilon")
        cost = np.array([np.nan if r.cost_usd is None else r.cost_usd for r in rows], dtype=float)
        grade = np.array([quality.get(r.request_id, np.nan) for r in rows], dtype=float)
        skipped = Counter({k: v for k, v in skipped.items() if v})
        return cls(order, tuple(r.request_id for r in rows), choice, prop, qhat, chat, cost, grade, mu), skipped

    def __len__(self) -> int:
        return len(self.choice)


def _grouped_propensities(
    rows: list[DecisionRecord], qhat: np.ndarray, chat: np.ndarray, eligible: np.ndarray
) -> np.ndarray:
    """Logging probabilities for many records: one vectorised call per (lam, epsilon) pair."""
    mu = np.zeros(qhat.shape)
    keys = np.array([f"{r.lam!r}/{r.epsilon!r}" for r in rows])
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        lam, eps = rows[idx[0]].lam, rows[idx[0]].epsilon
        mu[idx] = propensity_matrix(qhat[idx], chat[idx], float(lam), eps, eligible[idx])  # type: ignore[arg-type]
    return mu


def estimate_policy(
    logged: LoggedDecisions,
    target: Any,
    *,
    interval: str = "auto",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    quality_range: tuple[float | None, float | None] = (0.0, 1.0),
) -> dict[str, OffPolicyEstimate]:
    """A target policy's mean ``cost`` and ``quality`` on the logged traffic; DR uses the logged predictions.

    Cost intervals are clipped at 0, quality intervals to ``quality_range`` (RouteLab's grades are in [0, 1];
    pass ``(None, None)`` for rewards on another scale, e.g. judge deltas in [-1, 1]).

    Intervals are ``design`` ones when the log carries every record's operating point (so the logging policy's
    probabilities of every model are known), else bootstrap ones (``interval`` overrides; see :func:`estimate`).

    Raises:
        ValueError: as :func:`estimate`; ``quality`` is left out (not raised) when no request is graded.
    """
    out: dict[str, OffPolicyEstimate] = {}
    for name, reward, predicted, bounds in (
        ("cost", logged.cost, logged.predicted_cost, (0.0, None)),
        ("quality", logged.quality, logged.predicted_quality, quality_range),
    ):
        if np.isnan(reward).all():
            continue
        out[name] = estimate(
            logged.choice, logged.propensity, reward, target, predicted,
            logging_probabilities=logged.logging_probabilities, interval=interval, n_resamples=n_resamples,
            seed=seed, level=level, reward_range=bounds,
        )
    return out
