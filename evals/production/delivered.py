"""What a serving router delivered, from its decision log: cost against the control arm, quality against the reference.

Pure log maths (no export, no router), used by ``routelab logs report`` and the app's *Production* page:

- **Cost, A/B** (:func:`cost_ab`): with a staged rollout (``[rollout] share``) routed requests are split at random
  between the router's arm and the control model's arm, so the mean cost per request of each arm, and the saving
  ``1 - router / control``, are an unconfounded A/B comparison. Intervals: 95% percentile bootstrap, the two arms
  resampled independently (they are independent samples). Costs are what the proxy logged: usage times the
  export's price table; requests without a cost are left out and counted.
- **Quality against the reference** (:func:`graded_rows`, :func:`verdict_summary`): shadow grades say whether the
  answer won, tied or lost against the reference model's answer to the same prompt. Shares get Wilson intervals;
  the **quality delta** (``win share - loss share`` for pairwise-judge grades, ``answer - reference correctness``
  for exact grades; the same number when grading is by correctness) estimates what the export's offline
  ``quality_diff`` measured (router quality minus the reference model's), so the two can be set side by side.
- **Over time** (:func:`bucket_of`): hour or day buckets (UTC) of either.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evals.production.records import DecisionRecord, GradeRecord
from evals.stats import DEFAULT_RESAMPLES, Interval, mean_interval, resample_counts, wilson_interval

__all__ = [
    "BUCKETS",
    "GradedRow",
    "bucket_of",
    "choose_bucket",
    "cost_ab",
    "graded_rows",
    "grouped",
    "quality_delta",
    "verdict_summary",
]

#: Time bucket widths, in seconds.
BUCKETS = {"hour": 3600, "day": 86400}


def bucket_of(t: float, width: str) -> str:
    """The UTC bucket label of Unix time ``t``: ``2026-12-02T07`` (hour) or ``2026-12-02`` (day)."""
    if width not in BUCKETS:
        raise ValueError(f"time bucket must be one of {', '.join(BUCKETS)}, got {width!r}")
    return time.strftime("%Y-%m-%dT%H" if width == "hour" else "%Y-%m-%d", time.gmtime(t))


def choose_bucket(times: Sequence[float]) -> str:
    """``hour`` for a log spanning up to three days, else ``day`` (a readable number of buckets either way)."""
    return "hour" if not times or max(times) - min(times) <= 3 * 86400 else "day"


def _arm_of(rec: DecisionRecord) -> str:
    """``router`` for the router's decisions (with or without a rollout), ``control`` for the control arm."""
    return "control" if rec.arm == "control" else "router"


def cost_ab(decisions: Iterable[DecisionRecord], *, n_resamples: int = DEFAULT_RESAMPLES,
            seed: int = 0) -> dict[str, Any]:
    """Mean cost per request of the router's arm and the control arm, and the saving, with bootstrap intervals.

    Only routed requests count (those the policy decided: ``chosen`` set); passthrough and refused requests are
    not part of the comparison. Returns a JSON-able dict::

        {"router": {"n", "n_cost_unknown", "cost_per_request": Interval dict, "cost_per_1k": ...},
         "control": {...} or None, "saving": Interval dict or None}

    ``saving`` is ``1 - mean router cost / mean control cost`` (None without a control arm or without costs).
    """
    costs: dict[str, list[float]] = {"router": [], "control": []}
    unknown: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for rec in decisions:
        if rec.chosen is None:
            continue
        arm = _arm_of(rec)
        seen[arm] += 1
        if rec.cost_usd is None:
            unknown[arm] += 1
        else:
            costs[arm].append(float(rec.cost_usd))
    out: dict[str, Any] = {"router": None, "control": None, "saving": None}
    draws: dict[str, np.ndarray] = {}
    for k, (arm, values) in enumerate(costs.items()):
        if not seen[arm]:
            continue
        block: dict[str, Any] = {"n": seen[arm], "n_cost_unknown": unknown[arm], "cost_per_request": None,
                                 "cost_per_1k": None}
        if values:
            x = np.asarray(values)
            W = resample_counts(len(x), n_resamples, seed + 7919 * k)  # independent draws per arm
            iv = mean_interval(x, W)
            draws[arm] = W @ x / len(x)
            block["cost_per_request"] = iv.to_dict()
            block["cost_per_1k"] = _scaled(iv, 1000.0).to_dict()
        out[arm] = block
    if "router" in draws and "control" in draws and out["control"]["cost_per_request"]["value"] > 0:
        r, c = out["router"]["cost_per_request"]["value"], out["control"]["cost_per_request"]["value"]
        with np.errstate(divide="ignore", invalid="ignore"):
            saving_draws = 1.0 - draws["router"] / draws["control"]
        d = np.where(np.isnan(saving_draws), -np.inf, saving_draws)  # an undefined draw counts as the worst
        lo, hi = np.quantile(d, 0.025, method="lower"), np.quantile(d, 0.975, method="higher")
        n = out["router"]["n"] + out["control"]["n"]
        out["saving"] = Interval(1.0 - r / c, _finite(lo), _finite(hi), n).to_dict()
    return out


def _finite(x: Any) -> float | None:
    return float(x) if np.isfinite(x) else None


def _scaled(iv: Interval, k: float) -> Interval:
    return Interval(*(None if v is None else v * k for v in (iv.value, iv.low, iv.high)), iv.n)


def quality_delta(grade: GradeRecord) -> float:
    """The grade as an estimate of ``answer quality - reference quality``, in [-1, 1].

    Exact grades: the difference of the two correctness scores. Pairwise-judge grades (reference at 0.5): twice
    the answer's distance from a tie, so a clear win is +1, a tie 0 and a clear loss -1.
    """
    if grade.grader.startswith("judge"):
        return 2.0 * (grade.answer_score - grade.reference_score)
    return grade.answer_score - grade.reference_score


@dataclass(frozen=True)
class GradedRow:
    """One graded shadow pair joined to its decision: what :func:`verdict_summary` and drift flags read."""

    request_id: str
    time: float
    """When the request arrived (the decision's time; the grade's when the decision is not in the log)."""
    category: str
    """The category header ("" when none)."""
    arm: str
    """``router`` or ``control``."""
    answered_by: str
    reference: str
    grader: str
    verdict: str
    delta: float
    """:func:`quality_delta` of the grade."""
    answer_score: float
    reference_score: float
    explored: bool = False
    """Whether the decision was an exploration pick (not the router's own choice)."""


def graded_rows(decisions: Iterable[DecisionRecord], grades: Iterable[GradeRecord],
                grader: str | None = None) -> list[GradedRow]:
    """One row per graded request: its grade joined to its decision (arm, time, category).

    A request graded more than once (online and offline, or by two graders) counts once: ``grader`` picks the
    label when given; otherwise exact grades are preferred to a judge's, and the latest grade of a label wins.
    """
    by_id = {d.request_id: d for d in decisions}
    chosen: dict[str, GradeRecord] = {}
    for g in grades:
        if grader is not None and g.grader != grader:
            continue
        old = chosen.get(g.request_id)
        if old is None or _rank(g) > _rank(old):
            chosen[g.request_id] = g
    rows = []
    for rid, g in chosen.items():
        d = by_id.get(rid)
        rows.append(GradedRow(
            request_id=rid, time=d.time if d is not None else g.time,
            category=(d.category if d is not None else g.category) or "",
            arm=_arm_of(d) if d is not None else "router", answered_by=g.answered_by, reference=g.reference,
            grader=g.grader, verdict=g.verdict, delta=quality_delta(g), answer_score=g.answer_score,
            reference_score=g.reference_score, explored=bool(d is not None and d.explored),
        ))
    rows.sort(key=lambda r: r.time)
    return rows


def _rank(g: GradeRecord) -> tuple[int, float]:
    return (1 if g.grader == "exact" else 0, g.time)


def verdict_summary(rows: Sequence[GradedRow], *, n_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0) -> dict[str, Any]:
    """Win/tie/loss shares (Wilson 95% intervals) and the mean quality delta (bootstrap interval) of graded rows.

    Returns ``{"n", "win", "tie", "loss", "quality_delta", "answer_quality", "reference_quality"}`` with each share
    an Interval dict; ``answer_quality``/``reference_quality`` (mean correctness) only when every row is an exact
    grade (a judge's scores are relative, not a quality). Empty rows give ``{"n": 0}``.
    """
    n = len(rows)
    if n == 0:
        return {"n": 0}
    counts = Counter(r.verdict for r in rows)
    out: dict[str, Any] = {"n": n}
    for v in ("win", "tie", "loss"):
        lo, hi = wilson_interval(counts[v], n)
        out[v] = Interval(counts[v] / n, lo, hi, n).to_dict()
    W = resample_counts(n, n_resamples, seed)
    out["quality_delta"] = mean_interval(np.array([r.delta for r in rows]), W).to_dict()
    exact = all(r.grader == "exact" for r in rows)
    out["answer_quality"] = mean_interval(np.array([r.answer_score for r in rows]), W).to_dict() if exact else None
    out["reference_quality"] = (mean_interval(np.array([r.reference_score for r in rows]), W).to_dict()
                                if exact else None)
    out["graders"] = dict(Counter(r.grader for r in rows))
    return out


def grouped(rows: Sequence[Any], key: Any) -> dict[str, list[Any]]:
    """``rows`` grouped by ``key(row)``, groups in first-seen order."""
    out: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return dict(out)
