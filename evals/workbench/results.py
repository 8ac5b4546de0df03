"""What an evaluation measured: one :class:`RouterResult` per router inside an :class:`EvaluationResult`.

Savings appear at two different points, and every surface says which (see :mod:`evals.formatting`):

* **at parity, read off the test frontier** (``parity``, ``parity_ci``): the cheapest *test* point within the
  margin of the best single model; descriptive and optimistic, since the point was picked with test outcomes;
* **at the point chosen on validation** (``at_calibrated``): the operating point calibrated on validation for
  the config's target, then measured on test; what a deployment of that point (``routelab export``) gets.

A config may name several targets (``[[targets]]``); each is a :class:`TargetResult` of every router, chosen
on validation from the same fit and measured on test, with whether it held there and, for a risk-controlled
target, how much saving the guarantee cost against the plain choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evals import metrics, stats
from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval
from evals.outcomes import OutcomeTable
from evals.workbench.calibration import Calibrated
from evals.workbench.config import ExperimentConfig
from evals.workbench.frontier import Frontier

__all__ = [
    "MIN_TEST_SAMPLES",
    "EvaluationResult",
    "RouterResult",
    "TargetResult",
    "coverage_warnings",
    "savings_text",
    "size_warnings",
]

#: Below this many test samples, intervals are too wide for a conclusion: every surface warns up front.
MIN_TEST_SAMPLES = 100


def savings_text(interval: Any) -> str:
    """A savings interval as every surface prints it: ``88.2% [87.7%, 88.8%]``."""
    return format_interval(interval, pct=True)


@dataclass
class TargetResult:
    """One target of one router: the point chosen on validation, measured on test."""

    calibrated: Calibrated
    """The chosen point (and, when risk-controlled, the plain choice beside it)."""
    at_point: dict[str, stats.Interval]
    """Quality, cost, quality difference and savings at the point on test, with paired intervals."""
    plain_savings: stats.Interval | None = None
    """Risk-controlled targets: savings of the plain choice on test, with its interval (else None)."""

    @property
    def held(self) -> bool | None:
        """Whether the target held on test at the chosen point."""
        return self.calibrated.held

    @property
    def guarantee_cost(self) -> float | None:
        """Savings of the plain choice minus the risk-controlled one's, on test (None: not risk-controlled)."""
        if self.plain_savings is None or self.plain_savings.value is None:
            return None
        chosen = self.at_point["savings"].value
        return None if chosen is None else float(self.plain_savings.value - chosen)

    def to_json(self) -> dict[str, Any]:
        """JSON-able: ``target``, ``calibrated``, ``at_point``, ``held_on_test``, ``plain_savings``, ..."""
        return {
            "target": self.calibrated.target.describe(),
            "calibrated": self.calibrated.to_dict(),
            "at_point": {k: v.to_dict() for k, v in self.at_point.items()},
            "point": POINT_VALIDATION_CHOSEN,
            "held_on_test": self.held,
            "plain_savings": None if self.plain_savings is None else self.plain_savings.to_dict(),
            "guarantee_cost": self.guarantee_cost,
        }


@dataclass
class RouterResult:
    """Everything measured for one router on the test split."""

    label: str
    """Unique label in this evaluation."""
    spec: dict[str, Any]
    """``{"name", "params"}`` as given to :func:`routers.make_router`."""
    frontier: Frontier
    """Its frontier on test (with oracle, single models and random mix)."""
    aiq: float
    """RouterBench AIQ over its own cost range."""
    parity: metrics.ParityPoint | None
    """Cheapest test point within the margin of the best single model (None: never)."""
    parity_ci: stats.Interval
    """Savings at parity with its paired interval (point re-chosen per resample)."""
    parity_reach: float
    """Share of resamples in which the router reaches parity at all."""
    at95: metrics.ParityPoint | None
    """Cheapest point at 95% of the best single model's quality."""
    at99: metrics.ParityPoint | None
    """Cheapest point at 99% of it."""
    two_model: dict[str, Any] | None
    """APGR, CPT(50%), CPT(80%) when exactly two models are compared, else None."""
    calibrated: Calibrated
    """The operating point chosen on validation, and what it does on validation and test."""
    at_calibrated: dict[str, stats.Interval]
    """Quality, cost, quality difference and savings at the calibrated point on test, with intervals."""
    non_inferiority: stats.NonInferiority
    """Paired test of no quality loss at the calibrated point."""
    categories: pd.DataFrame
    """Per-category breakdown at the calibrated point."""
    seconds: dict[str, float]
    """Wall time of ``fit``, ``score`` (policies) and ``sweep``."""
    targets: list[TargetResult] = field(default_factory=list)
    """One result per config target, in config order (the first is the calibrated point above)."""
    aiq_common: float | None = None
    """RouterBench AIQ over the cost range shared by every router and single model of the evaluation (ranks
    routers; :attr:`EvaluationResult.aiq_range`)."""

    def to_json(self) -> dict[str, Any]:
        """The summary fields of ``routelab eval --json``."""
        p = self.parity
        return {
            "name": self.spec["name"],
            "label": self.label,
            "params": self.spec.get("params", {}),
            "aiq": self.aiq,
            "aiq_common": self.aiq_common,
            "savings_at_parity": None if p is None else p.savings,
            "savings_at_parity_ci": [self.parity_ci.low, self.parity_ci.high],
            "savings_at_parity_point": POINT_TEST_FRONTIER,
            "parity_reached_share": self.parity_reach,
            "quality_at_parity": None if p is None else p.quality,
            "cost_per_1k_at_parity": None if p is None else p.cost,
            "savings_at_95pct": None if self.at95 is None else self.at95.savings,
            "savings_at_99pct": None if self.at99 is None else self.at99.savings,
            "two_model": self.two_model,
            "calibrated": self.calibrated.to_dict(),
            "at_calibrated": {k: v.to_dict() for k, v in self.at_calibrated.items()},
            "at_calibrated_point": POINT_VALIDATION_CHOSEN,
            "non_inferiority": self.non_inferiority.to_dict(),
            "targets": [t.to_json() for t in self.targets],
            "n_points": len(self.frontier.router),
            "seconds": self.seconds,
        }


@dataclass
class EvaluationResult:
    """The outcome of :func:`~evals.workbench.experiment.run_experiment`."""

    config: ExperimentConfig
    """The config it ran."""
    dataset: str
    """Dataset name (the table's card name)."""
    table: OutcomeTable
    """The (selected) outcome table that was split."""
    n_train: int
    """Samples in train."""
    n_validation: int
    """Samples in validation."""
    n_test: int
    """Samples in test (every reported number is over these)."""
    models: tuple[str, ...]
    """Models compared."""
    best_single: dict[str, Any]
    """``{"name", "quality", "cost_per_1k", "quality_ci"}`` of the best single model on test."""
    oracle: dict[str, Any]
    """``{"quality", "cost_per_1k", "quality_ci"}`` of the oracle on test."""
    cheapest_single: dict[str, Any]
    """``{"name", "quality", "cost_per_1k"}`` of the cheapest model on test."""
    routers: list[RouterResult]
    """One result per router, in config order."""
    cost_estimated: bool
    """True when the table's costs are estimates."""
    seconds: float = 0.0
    """Total wall time."""
    warnings: list[str] = field(default_factory=list)
    """Reasons the numbers cannot support a conclusion (a tiny test split, models missing from most samples);
    every surface (CLI, report, app) states them before any number."""
    notes: list[str] = field(default_factory=list)
    """Facts about the data worth stating but not blocking a conclusion (samples dropped because some model
    did not answer them, sample ids found in both the training and the test data)."""
    incomplete_samples_dropped: int = 0
    """Samples left out because some model had no row for them (the sources' count plus the config's)."""
    split_origin: str = "seeded"
    """How the split was made: ``seeded`` (fractions and seed), ``column`` (the file's ``split`` column) or
    ``test_source`` (test from ``[dataset] test_source``)."""
    aiq_range: tuple[float, float] | None = None
    """The shared cost range ($ per 1k requests) of :attr:`RouterResult.aiq_common`."""
    aiq_single_hull: float | None = None
    """AIQ of the single models' hull over the same range (what a router must beat)."""

    def router(self, label: str) -> RouterResult:
        """The result of the router with this label."""
        for r in self.routers:
            if r.label == label:
                return r
        raise KeyError(f"no router labelled {label!r}; have: {', '.join(r.label for r in self.routers)}")

    def to_json(self) -> dict[str, Any]:
        """The ``routelab eval --json`` document (fractions in [0, 1], costs in dollars per 1k requests)."""
        return _jsonable(
            {
                "dataset": self.dataset,
                "config": self.config.path,
                "n_train": self.n_train,
                "n_validation": self.n_validation,
                "n_test": self.n_test,
                "warnings": list(self.warnings),
                "notes": list(self.notes),
                "incomplete_samples_dropped": self.incomplete_samples_dropped,
                "split_origin": self.split_origin,
                "cost_note": self.table.card.cost_note,
                "aiq_range": None if self.aiq_range is None else list(self.aiq_range),
                "aiq_single_hull": self.aiq_single_hull,
                "targets": [t.describe() for t in self.config.targets],
                "models": list(self.models),
                "cost_estimated": self.cost_estimated,
                "margin": self.config.margin,
                "best_single_model": self.best_single,
                "cheapest_model": self.cheapest_single,
                "oracle": self.oracle,
                "routers": [r.to_json() for r in self.routers],
                "gates": {k: v for k, v in self.config.gates.items()},
            }
        )

    def summary_frame(self) -> pd.DataFrame:
        """One row per router: the table ``routelab eval`` prints.

        The two savings columns name their point: ``savings@parity (test frontier)`` is read off the test
        frontier, ``savings (val-chosen point)`` is at the operating point chosen on validation.
        """
        rows = []
        for r in self.routers:
            c = r.calibrated
            rows.append(
                {
                    "router": r.label,
                    "aiq": r.aiq,
                    "aiq (common range)": r.aiq_common,
                    "savings@parity (test frontier)": savings_text(r.parity_ci) if r.parity else "never",
                    "quality@parity": None if r.parity is None else r.parity.quality,
                    "$/1k@parity": None if r.parity is None else r.parity.cost,
                    "target": c.target.describe(),
                    "val quality": c.validation.quality,
                    "val $/1k": c.validation.cost_per_1k,
                    "test quality": format_interval(r.at_calibrated["quality"], digits=3),
                    "test $/1k": format_interval(r.at_calibrated["cost_per_1k"], digits=3),
                    "savings (val-chosen point)": savings_text(r.at_calibrated["savings"]),
                    "non-inferior": "yes" if r.non_inferiority.non_inferior else "no",
                    "held on test": _yes_no(c.held),
                }
            )
        return pd.DataFrame(rows)

    def targets_frame(self) -> pd.DataFrame:
        """One row per (router, target): saving at the point chosen on validation with its interval, whether
        the target held on test, and for a risk-controlled target the plain choice's saving and the difference
        (what the guarantee cost)."""
        rows = []
        for r in self.routers:
            for t in r.targets:
                rows.append(
                    {
                        "router": r.label,
                        "target": t.calibrated.target.describe(),
                        "met on val": _yes_no(t.calibrated.met),
                        "test quality": format_interval(t.at_point["quality"], digits=3),
                        "savings (val-chosen point)": savings_text(t.at_point["savings"]),
                        "held on test": _yes_no(t.held),
                        "plain choice savings": "—" if t.plain_savings is None else savings_text(t.plain_savings),
                        "saving the guarantee cost": _points(t.guarantee_cost),
                    }
                )
        return pd.DataFrame(rows)


def _points(x: float | None) -> str:
    """A difference of two savings, in points of saving (``+11.3 points``)."""
    return "—" if x is None or not np.isfinite(x) else f"{x * 100:+.1f} points"


def _yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "NO")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def coverage_warnings(table: OutcomeTable) -> list[str]:
    """A warning when most samples were left out because some model did not answer them.

    Sources keep only the samples every model answered (:meth:`OutcomeTable.complete`, which records how many
    it dropped in the card); when that is most of them, a model is missing from most samples.
    """
    dropped = int(table.card.extra.get("incomplete_samples_dropped", 0) or 0)
    total = dropped + table.n_samples
    if dropped <= table.n_samples:
        return []
    return [
        f"{dropped:,} of {total:,} samples ({dropped / total:.0%}) were left out because some model did not answer "
        "them: a model is missing from most samples; compare fewer models ([dataset] models) to keep more samples"
    ]


def size_warnings(n_test: int) -> list[str]:
    """A warning when the test split is below :data:`MIN_TEST_SAMPLES` (no conclusion can be drawn)."""
    if n_test >= MIN_TEST_SAMPLES:
        return []
    return [
        f"the test split has only {n_test} sample{'s' if n_test != 1 else ''} (minimum {MIN_TEST_SAMPLES} for a "
        "conclusion): intervals are too wide or missing, so no saving or quality difference here can be "
        "trusted; use more data"
    ]

