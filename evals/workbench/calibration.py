"""Choose an operating point on the validation split for a target, then measure it on the test split.

Targets (one of):

- ``quality_floor``: the cheapest point whose quality is at least an absolute floor (e.g. 0.70);
- ``parity``: the cheapest point not below the best single model's validation quality minus a margin;
- ``quality_ratio``: the cheapest point with at least a share of the best single model's quality (0.99 = 99%);
- ``budget``: the best point costing at most so many dollars per 1,000 requests;
- ``strong_share``: the best point sending at most a share of traffic to the strong model (RouteLLM's
  calibration; the strong model defaults to the best single model on validation).

The operating point ``lam`` chosen on validation is then replayed unchanged on test, and both are reported,
so users see how well a target transfers to unseen traffic.

A quality target (``quality_floor``, ``parity``, ``quality_ratio``) may be **risk-controlled**
(``risk_control = "bootstrap"`` or ``"ltt"``, with ``confidence = 0.9``): instead of the cheapest point whose
validation *mean* meets the floor, take a point whose one-sided lower confidence bound does, so that the target
holds on unseen traffic with the stated confidence. The bound is a paired bootstrap over validation samples of
``quality(point) - floor`` per sample (for ``quality_ratio``: ``quality(point) - ratio * quality(best)``):

- ``bootstrap``: the cheapest point whose lower bound is >= 0;
- ``ltt``: Learn-then-Test with fixed-sequence testing: walk the points from the dearest to the cheapest and
  stop at the first whose bound is below 0; the cheapest point passed is chosen. Testing in a fixed order
  keeps the chance of choosing any point that misses the target at most ``1 - confidence`` in all (no
  correction for the number of points needed), so it is the stricter of the two.

The plain choice is kept beside it (``Calibrated.plain``), so a report can say how much saving the guarantee
cost.

Example:
    >>> target = Target.from_config({"kind": "budget", "value": 2.0})
    >>> result = calibrate(router, split.validation, split.test, target)   # doctest: +SKIP
    >>> result.validation.cost_per_1k, result.test.cost_per_1k               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evals import stats
from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.workbench.frontier import PER_1K, _best_index, per_sample_outcomes
from routers.base import Policy, Router

__all__ = [
    "KINDS",
    "RISK_CONTROLS",
    "Calibrated",
    "PointSummary",
    "Target",
    "calibrate",
    "choose_point",
    "choose_point_risk_controlled",
    "lower_bounds",
]

#: Target kind -> what ``value`` means.
KINDS = {
    "quality_floor": "minimum mean quality in [0, 1]",
    "parity": "allowed quality loss vs the best single model (0.005 = 0.5 points)",
    "quality_ratio": "minimum share of the best single model's quality, in (0, 1] (0.99 = 99%)",
    "budget": "maximum dollars per 1,000 requests",
    "strong_share": "maximum share of traffic sent to the strong model, in [0, 1]",
}


#: Target kind -> the closed range of its ``value`` (a parity margin above 1 would accept any quality).
_RANGES = {
    "quality_floor": (0.0, 1.0),
    "parity": (0.0, 1.0),
    "quality_ratio": (1e-9, 1.0),
    "budget": (0.0, float("inf")),
    "strong_share": (0.0, 1.0),
}

#: Target kinds that put a floor under quality (the others are ceilings on cost or traffic share).
QUALITY_KINDS = ("quality_floor", "parity", "quality_ratio")

#: Risk-control rule -> what it does (see the module docstring).
RISK_CONTROLS = {
    "bootstrap": "the cheapest point whose one-sided validation bootstrap lower bound meets the target",
    "ltt": "Learn-then-Test: fixed-sequence testing from the dearest point, stop at the first failure",
}

_TARGET_KEYS = ("kind", "value", "strong_model", "risk_control", "confidence")


@dataclass(frozen=True)
class Target:
    """What the operating point must achieve on validation."""

    kind: str
    """One of :data:`KINDS`."""
    value: float
    """The floor, margin, budget or share (see :data:`KINDS`)."""
    strong_model: str | None = None
    """For ``strong_share``: the strong model (default: the best single model on validation)."""
    risk_control: str | None = None
    """None (the point whose validation mean meets the target), or one of :data:`RISK_CONTROLS`."""
    confidence: float = 0.9
    """With ``risk_control``: the confidence that the target holds on unseen traffic."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown calibration target {self.kind!r}; valid: {', '.join(KINDS)}")
        v = self.value
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
            raise ConfigError(f"target {self.kind!r} value must be a number ({KINDS[self.kind]}), got {v!r}")
        low, high = _RANGES[self.kind]
        if not low <= v <= high:
            shown = f"in [{low:g}, {high:g}]" if np.isfinite(high) else f">= {low:g}"
            raise ConfigError(f"target {self.kind!r} value must be {shown} ({KINDS[self.kind]}), got {v!r}")
        if self.strong_model is not None and (not isinstance(self.strong_model, str) or not self.strong_model):
            raise ConfigError(f"target strong_model must be a model name (a string), got {self.strong_model!r}")
        if self.risk_control is not None:
            if self.risk_control not in RISK_CONTROLS:
                raise ConfigError(
                    f"target risk_control must be one of {', '.join(RISK_CONTROLS)}, got {self.risk_control!r}"
                )
            if self.kind not in QUALITY_KINDS:
                raise ConfigError(
                    f"target risk_control applies to quality targets ({', '.join(QUALITY_KINDS)}), "
                    f"not {self.kind!r}"
                )
        c = self.confidence
        if not isinstance(c, (int, float)) or isinstance(c, bool) or not 0.5 <= c < 1:
            raise ConfigError(f"target confidence must be a number in [0.5, 1) (0.9 = 90%), got {c!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None, *, where: str = "[target]") -> Target:
        """Parse ``{"kind", "value", "strong_model"?, "risk_control"?, "confidence"?}`` (default: parity 0.005).

        Args:
            cfg: The table.
            where: How the table is named in messages (``[target]``, ``[[targets]] entry 2``).
        """
        if not cfg:
            return cls("parity", 0.005)
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where} must be a table (kind = ..., value = ...), got {cfg!r}")
        unknown = sorted(set(cfg) - set(_TARGET_KEYS))
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; valid: {', '.join(_TARGET_KEYS)}")
        if "kind" not in cfg:
            raise ConfigError(f"{where} needs a 'kind' ({', '.join(KINDS)})")
        value = cfg.get("value", 0.005 if cfg["kind"] == "parity" else None)
        if value is None:
            raise ConfigError(f"{where} of kind {cfg['kind']!r} needs a 'value': {KINDS.get(cfg['kind'], '')}")
        if not isinstance(cfg["kind"], str):
            raise ConfigError(f"{where} kind must be one of {', '.join(KINDS)}, got {cfg['kind']!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(
                f"{where} value must be a number ({KINDS.get(cfg['kind'], 'see kind')}), got {value!r}"
            )
        confidence = cfg.get("confidence", 0.9)
        if "confidence" in cfg and "risk_control" not in cfg:
            raise ConfigError(f"{where} confidence needs risk_control ({', '.join(RISK_CONTROLS)})")
        try:
            return cls(cfg["kind"], float(value), cfg.get("strong_model"), cfg.get("risk_control"), confidence)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def describe(self) -> str:
        """One line for tables and reports."""
        text = {
            "quality_floor": f"quality >= {self.value:.3f}",
            "parity": f"quality >= best single - {self.value:.3f}",
            "quality_ratio": f"quality >= {self.value:.1%} of best single",
            "budget": f"cost <= ${self.value:.4g} per 1k requests",
            "strong_share": f"strong-model share <= {self.value:.0%}"
            + (f" ({self.strong_model})" if self.strong_model else ""),
        }[self.kind]
        if self.risk_control:
            text += f", {self.confidence:.0%} confidence ({self.risk_control})"
        return text

    def floor(self, best_single_quality: float) -> float:
        """The quality a point must reach for a quality target, given the best single model's quality."""
        if self.kind == "quality_floor":
            return self.value
        if self.kind == "parity":
            return best_single_quality - self.value
        if self.kind == "quality_ratio":
            return self.value * best_single_quality
        raise ValueError(f"target {self.kind!r} puts no floor under quality")

    def per_sample_floor(self, best_scores: np.ndarray) -> np.ndarray:
        """Per sample, what the point's score is compared with (paired with the best single model's score)."""
        b = np.asarray(best_scores, float)
        if self.kind == "quality_floor":
            return np.full(b.shape, self.value)
        if self.kind == "parity":
            return b - self.value
        if self.kind == "quality_ratio":
            return self.value * b
        raise ValueError(f"target {self.kind!r} puts no floor under quality")

    def holds(self, quality: float, cost_per_1k: float, strong_share: float, best_single_quality: float) -> bool:
        """Whether a point with these means meets the target (on whichever split the means are from)."""
        if self.kind in QUALITY_KINDS:
            return quality >= self.floor(best_single_quality) - 1e-12
        limit = cost_per_1k if self.kind == "budget" else strong_share
        return limit <= self.value + 1e-12

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class PointSummary:
    """What one operating point achieves on one split."""

    quality: float
    """Mean score."""
    cost_per_1k: float
    """Dollars per 1,000 requests."""
    strong_share: float
    """Share of traffic sent to the strong model."""
    n: int
    """Number of samples."""

    def to_dict(self) -> dict[str, float | int]:
        """A JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class Calibrated:
    """An operating point chosen on validation, and what it does on validation and test."""

    target: Target
    """The target it was chosen for."""
    lam: float
    """The chosen operating point."""
    met: bool
    """Whether the target was met on validation (if not, the closest point was taken); with risk control,
    whether some point's lower confidence bound met it."""
    strong_model: str
    """The model counted as strong."""
    validation: PointSummary
    """What it achieves on validation."""
    test: PointSummary
    """What it achieves on test."""
    held: bool | None = None
    """Whether the target holds on test at this point (quality targets: against the best single model's test
    quality); None when no test best-single quality was known."""
    lower_bound: float | None = None
    """With risk control: the one-sided validation lower bound of mean(quality - floor) at the chosen point."""
    plain: Calibrated | None = None
    """With risk control: the plain choice (validation mean meets the target), for what the guarantee cost."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``target``, ``lam``, ``met``, ``validation``, ``test``, ``held``, ...)."""
        out = {
            "target": {**self.target.to_dict(), "description": self.target.describe()},
            "lam": self.lam,
            "met": self.met,
            "strong_model": self.strong_model,
            "validation": self.validation.to_dict(),
            "test": self.test.to_dict(),
            "held_on_test": self.held,
        }
        if self.target.risk_control:
            out["lower_bound"] = self.lower_bound
            out["plain"] = None if self.plain is None else self.plain.to_dict()
        return out


def choose_point(
    cost_per_1k: np.ndarray,
    quality: np.ndarray,
    strong_share: np.ndarray,
    target: Target,
    *,
    best_single_quality: float | None = None,
) -> tuple[int, bool]:
    """Index of the operating point that meets ``target`` best, and whether it meets it at all.

    Floors (``quality_floor``, ``parity``, ``quality_ratio``) take the cheapest point that reaches the floor,
    else the best point. Ceilings (``budget``, ``strong_share``) take the best point within the ceiling
    (cheapest among equals), else the cheapest (resp. least-strong) point.
    """
    c = np.asarray(cost_per_1k, float)
    q = np.asarray(quality, float)
    s = np.asarray(strong_share, float)
    if target.kind in QUALITY_KINDS:
        if target.kind != "quality_floor" and best_single_quality is None:
            raise ValueError(f"a {target.kind} target needs the best single model's quality")
        floor = target.floor(float(best_single_quality or 0.0))
        ok = np.flatnonzero(q >= floor - 1e-12)
        if len(ok):
            return int(ok[np.lexsort((-q[ok], c[ok]))[0]]), True
        return int(np.lexsort((c, -q))[0]), False
    limit = c if target.kind == "budget" else s
    ok = np.flatnonzero(limit <= target.value + 1e-12)
    if len(ok):
        return int(ok[np.lexsort((c[ok], -q[ok]))[0]]), True
    return int(np.lexsort((-q, limit))[0]), False


def lower_bounds(
    scores: np.ndarray, best_scores: np.ndarray, target: Target, W: np.ndarray
) -> np.ndarray:
    """Per point, the one-sided bootstrap lower bound (at ``target.confidence``) of mean(score - floor).

    Args:
        scores: Per-sample scores at each point, shape (n, K) (validation).
        best_scores: The best single model's per-sample scores, shape (n,) (paired with ``scores``).
        target: A quality target.
        W: Resample counts (:func:`evals.stats.resample_counts`), shape (B, n).

    Returns:
        Shape (K,): a point whose bound is >= 0 meets the target with the stated confidence.
    """
    d = np.asarray(scores, float) - target.per_sample_floor(best_scores)[:, None]
    draws = W @ d / d.shape[0]  # (B, K): the mean difference in each resample
    # Order statistic (no interpolation): a bound never above what some resample showed.
    return np.quantile(draws, 1.0 - target.confidence, axis=0, method="lower")


def choose_point_risk_controlled(
    cost_per_1k: np.ndarray, quality: np.ndarray, bounds: np.ndarray, rule: str
) -> tuple[int, bool]:
    """Index of the risk-controlled point, and whether any point's bound met the target.

    ``bootstrap``: the cheapest point with ``bound >= 0`` (ties: better quality). ``ltt``: points ordered from
    the dearest (ties: better quality first); walk while ``bound >= 0``; the last point passed. With no point
    passing, the point with the highest bound (the closest to meeting it) and False.
    """
    c, q, b = (np.asarray(x, float) for x in (cost_per_1k, quality, bounds))
    if rule not in RISK_CONTROLS:
        raise ValueError(f"unknown risk control {rule!r}; valid: {', '.join(RISK_CONTROLS)}")
    passed = b >= -1e-12
    if rule == "bootstrap":
        ok = np.flatnonzero(passed)
    else:
        order = np.lexsort((-q, -c))  # dearest first
        fails = np.flatnonzero(~passed[order])
        ok = order[: fails[0]] if len(fails) else order
    if len(ok):
        return int(ok[np.lexsort((-q[ok], c[ok]))[0]]), True
    return int(np.lexsort((c, -b))[0]), False


def _summary(policy: Policy, lam: float, strong: int) -> PointSummary:
    choice, cost, score = policy.outcomes(lam)
    return PointSummary(
        float(score.mean()), float(cost.mean() * PER_1K), float((choice == strong).mean()), int(len(choice))
    )


def calibrate(
    router: Router,
    validation: OutcomeTable,
    test: OutcomeTable,
    target: Target,
    *,
    n_points: int = 200,
    val_policy: Policy | None = None,
    test_policy: Policy | None = None,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Calibrated:
    """Choose the operating point on ``validation`` for ``target`` and replay it on ``test``.

    Args:
        router: A fitted router (used only for the policies not given).
        validation, test: OutcomeTables of the two splits.
        target: The target.
        n_points: Size of the validation grid searched.
        val_policy, test_policy: Policies already built on the two tables (skip scoring again).
        n_resamples, seed: Validation bootstrap of a risk-controlled target.
    """
    vp = val_policy if val_policy is not None else router.policy(validation)
    tp = test_policy if test_policy is not None else router.policy(test)
    models = tuple(vp.models)
    vt = validation if validation.models == models else validation.select(models=list(models))
    q_single, c_single = vt.quality.mean(axis=0), vt.cost.mean(axis=0)
    best = _best_index(q_single, c_single)
    if target.strong_model is not None:
        if target.strong_model not in models:
            raise ConfigError(
                f"target strong_model {target.strong_model!r} is not one of the models: {', '.join(models)}"
            )
        strong = models.index(target.strong_model)
    else:
        strong = best
    tt = test if test.models == models else test.select(models=list(models))
    tq, tc = tt.quality.mean(axis=0), tt.cost.mean(axis=0)
    test_best_quality = float(tq[_best_index(tq, tc)])

    def point(lam: float, met: bool, **extra: Any) -> Calibrated:
        t = _summary(tp, lam, strong)
        held = target.holds(t.quality, t.cost_per_1k, t.strong_share, test_best_quality)
        return Calibrated(target, lam, met, models[strong], _summary(vp, lam, strong), t, held, **extra)

    lams = np.asarray(vp.grid(n_points), float)
    cost, quality, share = vp.curve(lams)
    i, met = choose_point(
        cost * PER_1K, quality, share[:, strong], target, best_single_quality=float(q_single[best])
    )
    plain = point(float(lams[i]), met)
    if not target.risk_control:
        return plain
    _, _, scores = per_sample_outcomes(vp, lams, vt.n_samples)
    W = stats.resample_counts(vt.n_samples, n_resamples, seed)
    bounds = lower_bounds(scores, vt.quality[:, best], target, W)
    j, met_rc = choose_point_risk_controlled(cost, quality, bounds, target.risk_control)
    return point(float(lams[j]), met_rc, lower_bound=float(bounds[j]), plain=plain)
