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

Each comes with a percentile bootstrap interval over logged requests (one paired draw for all three, from
:func:`evals.stats.resample_counts`). A target policy is either a deterministic choice per request (model indices,
shape (n,)) or a probability matrix (n, m) whose rows sum to 1.

Example:
    >>> est = estimate(choice, propensity, quality, target=other_choice, predicted=quality_hat)  # doctest: +SKIP
    >>> est.dr.value, est.dr.low, est.dr.high                                                     # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evals.production.propensity import propensity_matrix
from evals.production.records import DecisionRecord
from evals.stats import DEFAULT_RESAMPLES, Interval, resample_counts

__all__ = [
    "LoggedDecisions",
    "OffPolicyEstimate",
    "estimate",
    "estimate_policy",
    "target_probabilities",
]


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


def estimate(
    choice: Any,
    propensity: Any,
    reward: Any,
    target: Any,
    predicted: Any = None,
    *,
    logging_probabilities: Any = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    resamples: np.ndarray | None = None,
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
        logging_probabilities: The logging policy's full probabilities (n, m), for the ``unsupported`` diagnostic.
        n_resamples, seed, level: The bootstrap (ignored when ``resamples`` is given).
        resamples: Resample counts (B, n) from :func:`evals.stats.resample_counts` over the requests kept, to pair
            several estimates on one draw.

    Raises:
        ValueError: for mismatched shapes, propensities outside (0, 1], or no request with a known reward.
    """
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
    known = ~np.isnan(r)
    n = int(known.sum())
    if n == 0:
        raise ValueError("no logged request has a known reward")
    a, p, r, pi = a[known], p[known], r[known], pi[known]
    rows = np.arange(n)
    w = pi[rows, a] / p
    W = resamples if resamples is not None else resample_counts(n, n_resamples, seed)
    if W.shape[1] != n:
        raise ValueError(f"resamples are over {W.shape[1]} requests, but {n} have a known reward")
    wr = w * r
    ips_draws = W @ wr / n
    with np.errstate(divide="ignore", invalid="ignore"):
        snips_draws = (W @ wr) / (W @ w)
    sw = float(w.sum())
    ips = Interval(float(wr.mean()), *_bounds(ips_draws, level), n)
    snips = Interval(float(wr.sum() / sw) if sw > 0 else None, *_bounds(snips_draws, level), n)
    dr = None
    if predicted is not None:
        rhat = np.asarray(predicted, dtype=float)
        if rhat.shape != (n_all, m):
            raise ValueError(f"predicted rewards have shape {rhat.shape}, expected {(n_all, m)}")
        rhat = rhat[known]
        terms = (pi * rhat).sum(axis=1) + w * (r - rhat[rows, a])
        dr = Interval(float(terms.mean()), *_bounds(W @ terms / n, level), n)
    unsupported = None
    if logging_probabilities is not None:
        mu = np.asarray(logging_probabilities, dtype=float)[known]
        unsupported = float(np.where(mu <= 0, pi, 0.0).sum(axis=1).mean())
    ess = float(sw**2 / (w**2).sum()) if sw > 0 else 0.0
    return OffPolicyEstimate(ips, snips, dr, n, n_all - n, ess, float(w.max()), unsupported)


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
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, OffPolicyEstimate]:
    """A target policy's mean ``cost`` and ``quality`` on the logged traffic; DR uses the logged predictions.

    Raises:
        ValueError: as :func:`estimate`; ``quality`` is left out (not raised) when no request is graded.
    """
    out: dict[str, OffPolicyEstimate] = {}
    for name, reward, predicted in (
        ("cost", logged.cost, logged.predicted_cost),
        ("quality", logged.quality, logged.predicted_quality),
    ):
        if np.isnan(reward).all():
            continue
        out[name] = estimate(
            logged.choice, logged.propensity, reward, target, predicted,
            logging_probabilities=logged.logging_probabilities, n_resamples=n_resamples, seed=seed, level=level,
        )
    return out
