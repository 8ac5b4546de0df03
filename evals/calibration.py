"""Choose an operating point on the validation split for a target, then measure it on the test split.

Targets (one of):

- ``quality_floor``: the cheapest point whose quality is at least an absolute floor (e.g. 0.70);
- ``parity``: the cheapest point not below the best single model's validation quality minus a margin;
- ``budget``: the best point costing at most so many dollars per 1,000 requests;
- ``strong_share``: the best point sending at most a share of traffic to the strong model (RouteLLM's
  calibration; the strong model defaults to the best single model on validation).

The operating point ``lam`` chosen on validation is then replayed unchanged on test, and both are reported,
so users see how well a target transfers to unseen traffic.

Example:
    >>> target = Target.from_config({"kind": "budget", "value": 2.0})
    >>> result = calibrate(router, split.validation, split.test, target)   # doctest: +SKIP
    >>> result.validation.cost_per_1k, result.test.cost_per_1k               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evals.exceptions import ConfigError
from evals.frontier import PER_1K, _best_index

__all__ = ["KINDS", "Calibrated", "PointSummary", "Target", "calibrate", "choose_point"]

#: Target kind -> what ``value`` means.
KINDS = {
    "quality_floor": "minimum mean quality in [0, 1]",
    "parity": "allowed quality loss vs the best single model (0.005 = 0.5 points)",
    "budget": "maximum dollars per 1,000 requests",
    "strong_share": "maximum share of traffic sent to the strong model, in [0, 1]",
}


@dataclass(frozen=True)
class Target:
    """What the operating point must achieve on validation."""

    kind: str
    """One of :data:`KINDS`."""
    value: float
    """The floor, margin, budget or share (see :data:`KINDS`)."""
    strong_model: str | None = None
    """For ``strong_share``: the strong model (default: the best single model on validation)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown calibration target {self.kind!r}; valid: {', '.join(KINDS)}")
        v = self.value
        if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise ConfigError(f"target {self.kind!r} needs a number >= 0 as value, got {v!r}")
        if self.kind in ("quality_floor", "strong_share") and v > 1:
            raise ConfigError(f"target {self.kind!r} value must be in [0, 1], got {v!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> Target:
        """Parse ``{"kind": ..., "value": ..., "strong_model": ...}`` (default: parity with margin 0.005)."""
        if not cfg:
            return cls("parity", 0.005)
        unknown = sorted(set(cfg) - {"kind", "value", "strong_model"})
        if unknown:
            raise ConfigError(f"[target] has unknown key(s) {unknown}; valid: kind, value, strong_model")
        if "kind" not in cfg:
            raise ConfigError(f"[target] needs a 'kind' ({', '.join(KINDS)})")
        value = cfg.get("value", 0.005 if cfg["kind"] == "parity" else None)
        if value is None:
            raise ConfigError(
                f"[target] of kind {cfg['kind']!r} needs a 'value': {KINDS.get(cfg['kind'], '')}"
            )
        return cls(str(cfg["kind"]), float(value), cfg.get("strong_model"))

    def describe(self) -> str:
        """One line for tables and reports."""
        return {
            "quality_floor": f"quality >= {self.value:.3f}",
            "parity": f"quality >= best single - {self.value:.3f}",
            "budget": f"cost <= ${self.value:.4g} per 1k requests",
            "strong_share": f"strong-model share <= {self.value:.0%}"
            + (f" ({self.strong_model})" if self.strong_model else ""),
        }[self.kind]

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
    """Whether the target was met on validation (if not, the closest point was taken)."""
    strong_model: str
    """The model counted as strong."""
    validation: PointSummary
    """What it achieves on validation."""
    test: PointSummary
    """What it achieves on test."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``target``, ``lam``, ``met``, ``validation``, ``test``)."""
        return {
            "target": {**self.target.to_dict(), "description": self.target.describe()},
            "lam": self.lam,
            "met": self.met,
            "strong_model": self.strong_model,
            "validation": self.validation.to_dict(),
            "test": self.test.to_dict(),
        }


def choose_point(
    cost_per_1k: np.ndarray,
    quality: np.ndarray,
    strong_share: np.ndarray,
    target: Target,
    *,
    best_single_quality: float | None = None,
) -> tuple[int, bool]:
    """Index of the operating point that meets ``target`` best, and whether it meets it at all.

    Floors (``quality_floor``, ``parity``) take the cheapest point that reaches the floor, else the best
    point. Ceilings (``budget``, ``strong_share``) take the best point within the ceiling (cheapest among
    equals), else the cheapest (resp. least-strong) point.
    """
    c = np.asarray(cost_per_1k, float)
    q = np.asarray(quality, float)
    s = np.asarray(strong_share, float)
    if target.kind in ("quality_floor", "parity"):
        if target.kind == "parity":
            if best_single_quality is None:
                raise ValueError("a parity target needs the best single model's quality")
            floor = best_single_quality - target.value
        else:
            floor = target.value
        ok = np.flatnonzero(q >= floor - 1e-12)
        if len(ok):
            return int(ok[np.lexsort((-q[ok], c[ok]))[0]]), True
        return int(np.lexsort((c, -q))[0]), False
    limit = c if target.kind == "budget" else s
    ok = np.flatnonzero(limit <= target.value + 1e-12)
    if len(ok):
        return int(ok[np.lexsort((c[ok], -q[ok]))[0]]), True
    return int(np.lexsort((-q, limit))[0]), False


def _summary(policy: Any, lam: float, strong: int) -> PointSummary:
    choice, cost, score = policy.outcomes(lam)
    return PointSummary(
        float(score.mean()), float(cost.mean() * PER_1K), float((choice == strong).mean()), int(len(choice))
    )


def calibrate(
    router: Any,
    validation: Any,
    test: Any,
    target: Target,
    *,
    n_points: int = 200,
    val_policy: Any = None,
    test_policy: Any = None,
) -> Calibrated:
    """Choose the operating point on ``validation`` for ``target`` and replay it on ``test``.

    Args:
        router: A fitted router (used only for the policies not given).
        validation, test: OutcomeTables of the two splits.
        target: The target.
        n_points: Size of the validation grid searched.
        val_policy, test_policy: Policies already built on the two tables (skip scoring again).
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
    lams = np.asarray(vp.grid(n_points), float)
    cost, quality, share = vp.curve(lams)
    i, met = choose_point(
        cost * PER_1K, quality, share[:, strong], target, best_single_quality=float(q_single[best])
    )
    lam = float(lams[i])
    return Calibrated(target, lam, met, models[strong], _summary(vp, lam, strong), _summary(tp, lam, strong))
