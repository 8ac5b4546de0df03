"""One evaluation, end to end: load outcomes, split, fit routers, replay, measure, calibrate, gate.

The pieces live beside this module, one concept each:

* :mod:`evals.workbench.config`: :class:`ExperimentConfig`, :func:`load_config`, :func:`config_from_dict`
  (the TOML layout, every field checked);
* :mod:`evals.workbench.results`: :class:`RouterResult`, :class:`EvaluationResult` (what was measured);
* :mod:`evals.workbench.gates`: :data:`GATES` and :func:`check_gates` (a table from gate name to check);
* :mod:`evals.workbench.splits`: seeded split, the file's ``split`` column, or ``[dataset] test_source``;
* here: :func:`load_table` and :func:`run_experiment`.

Every config target (``[target]`` or ``[[targets]]``) is calibrated from one fit and one scoring per router.

The names above stay importable from this module, so ``from evals.workbench.experiment import
run_experiment, load_config`` keeps working. :func:`check_gates` raises :class:`~evals.exceptions.GateFailed`
naming every gate that failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from evals import metrics, sources, stats
from evals.outcomes import OutcomeTable, Split
from evals.workbench.calibration import Target, calibrate
from evals.workbench.config import ExperimentConfig, config_from_dict, load_config
from evals.workbench.frontier import PER_1K, Frontier, compute_frontier, oracle_choice
from evals.workbench.gates import GATE_CHECKS, GATES, check_gates
from evals.workbench.results import (
    MIN_TEST_SAMPLES,
    EvaluationResult,
    RouterResult,
    TargetResult,
    coverage_warnings,
    size_warnings,
)
from evals.workbench.splits import SplitPlan, split_table
from routers.base import Policy, Router
from routers.registry import make_router

__all__ = [
    "GATES",
    "GATE_CHECKS",
    "MIN_TEST_SAMPLES",
    "EvaluationResult",
    "ExperimentConfig",
    "RouterResult",
    "check_gates",
    "config_from_dict",
    "load_config",
    "load_table",
    "plan_split",
    "run_experiment",
]


_DROPPED = "incomplete_samples_dropped"


def _dropped(table: OutcomeTable) -> int:
    return int(table.card.extra.get(_DROPPED, 0) or 0)


def _complete(table: OutcomeTable) -> OutcomeTable:
    """``table.complete()``, keeping the count of samples the source already dropped (complete() restarts it)."""
    before = _dropped(table)
    out = table.complete()
    out.card = replace(out.card, extra={**out.card.extra, _DROPPED: before + _dropped(out)})
    return out


def _load(config: ExperimentConfig, data_dir: str | None) -> tuple[OutcomeTable, list[str]]:
    """The config's table (see :func:`load_table`) and a warning when most samples lacked some model."""
    table = sources.load(config.source, data_dir=data_dir)
    warnings = coverage_warnings(table)  # as loaded: what the source's own completion left out
    if config.models or config.categories:
        table = table.select(models=config.models, categories=config.categories)
    table = _complete(table)
    if config.max_samples and table.n_samples > config.max_samples:
        rng = np.random.default_rng(config.split_seed)
        ids = table.sample_ids
        keep = ids[np.sort(rng.choice(len(ids), size=config.max_samples, replace=False))]
        table = table.select(sample_ids=keep)
    return table, warnings


def load_table(config: ExperimentConfig, data_dir: str | None = None) -> OutcomeTable:
    """The config's outcome table: loaded, restricted to its models/categories, completed, subsampled.

    Its card's ``incomplete_samples_dropped`` counts every sample left out because some model had no row for
    it: those the source dropped plus those the config's model selection dropped.
    """
    return _load(config, data_dir)[0]


def plan_split(config: ExperimentConfig, table: OutcomeTable, data_dir: str | None = None) -> SplitPlan:
    """The config's split of ``table``, the one ``routelab eval`` and ``routelab export`` both fit on.

    By ``[dataset] test_source``, else by the table's ``split`` column, else seeded
    (:mod:`evals.workbench.splits`).
    """
    test = None
    if config.test_source:
        test = sources.load(config.test_source, data_dir=data_dir)
        if config.categories:
            test = test.select(categories=config.categories)
        if set(table.models) <= set(test.models):  # else split_table names the models test_source lacks
            test = test.select(models=list(table.models))
        test = _complete(test)
    plan = split_table(
        table,
        config.fractions,
        seed=config.split_seed,
        stratify=config.stratify,
        test=test,
        test_source=config.test_source or "",
    )
    plan.incomplete_test_dropped = 0 if test is None else _dropped(test)
    return plan


@dataclass(frozen=True)
class _References:
    """What every router of one evaluation is measured against, on the same test samples."""

    split: Split
    """Train / validation / test."""
    W: np.ndarray
    """Bootstrap resample counts over the test samples (shared: intervals are paired)."""
    ref_q: np.ndarray
    """The best single model's per-sample score on test."""
    ref_c: np.ndarray
    """Its per-sample cost."""
    oracle_q: np.ndarray
    """The oracle's per-sample score on test."""
    best: int
    """Column of the best single model."""
    cheap: int
    """Column of the cheapest model."""


@dataclass(frozen=True)
class _Fitted:
    """One router after fitting and scoring, ready to be measured."""

    label: str
    spec: dict[str, Any]
    router: Router
    frontier: Frontier
    val_policy: Policy
    test_policy: Policy
    seconds: dict[str, float]


def run_experiment(
    config: ExperimentConfig,
    *,
    table: OutcomeTable | None = None,
    data_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Run one evaluation (no tracking, no files; see :mod:`evals.tracking` and :mod:`evals.report`).

    Args:
        config: The parsed config.
        table: The outcome table (default: loaded from ``config.source``).
        data_dir: Data folder for named sources.
        progress: Optional callable ``progress(message)`` told about each step.
    """
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if table is None:
        table, warnings = _load(config, data_dir)
    else:
        warnings = coverage_warnings(table)
    plan = plan_split(config, table, data_dir)
    split = plan.split
    warnings = plan.warnings + warnings
    dropped = _dropped(table) + plan.incomplete_test_dropped
    notes = [] if not dropped else [
        f"{dropped:,} sample(s) were left out because some model had no row for them (only samples every "
        "model answered are compared)"
    ]
    test = split.test
    models = test.models
    Q, C = test.quality, test.cost
    n = test.n_samples
    warnings = size_warnings(n) + warnings
    W = stats.resample_counts(n, config.n_resamples, config.seed)

    s_qual, s_cost = Q.mean(axis=0), C.mean(axis=0)
    top = s_qual >= s_qual.max() - 1e-12
    best = int(np.where(top, s_cost, np.inf).argmin())
    cheap = int(np.lexsort((-s_qual, s_cost))[0])
    rows = np.arange(n)
    oc = oracle_choice(Q, C)
    refs = _References(split, W, Q[:, best], C[:, best], Q[rows, oc], best, cheap)
    o_c = C[rows, oc]
    best_single = {
        "name": models[best],
        "quality": float(s_qual[best]),
        "cost_per_1k": float(s_cost[best] * PER_1K),
        "quality_ci": stats.mean_interval(refs.ref_q, W).to_dict(),
    }
    oracle = {
        "quality": float(refs.oracle_q.mean()),
        "cost_per_1k": float(o_c.mean() * PER_1K),
        "quality_ci": stats.mean_interval(refs.oracle_q, W).to_dict(),
    }
    cheapest = {"name": models[cheap], "quality": float(s_qual[cheap]), "cost_per_1k": float(s_cost[cheap] * PER_1K)}

    results = []
    for label, spec in zip(config.labels(), config.routers, strict=True):
        say(f"{label}: fitting on {split.train.n_samples} samples")
        results.append(_measure(config, refs, _fit_and_sweep(config, split, label, spec, say)))
        say(f"{label}: done")
    aiq_range, aiq_single = _aiq_common(results)
    return EvaluationResult(
        config=config,
        dataset=table.card.name,
        table=table,
        n_train=split.train.n_samples,
        n_validation=split.validation.n_samples,
        n_test=n,
        models=models,
        best_single=best_single,
        oracle=oracle,
        cheapest_single=cheapest,
        routers=results,
        cost_estimated=table.cost_estimated,
        seconds=time.perf_counter() - t_start,
        warnings=warnings,
        notes=notes,
        incomplete_samples_dropped=dropped,
        split_origin=plan.origin,
        aiq_range=aiq_range,
        aiq_single_hull=aiq_single,
    )


_SINGLES = "single models"


def _aiq_common(results: list[RouterResult]) -> tuple[tuple[float, float] | None, float | None]:
    """Fill each router's AIQ over one cost range shared by all routers and single models (RouterBench).

    Returns the range ($ per 1k requests) and the single models' hull AIQ on it.
    """
    if not results:
        return None, None
    singles = results[0].frontier.singles
    curves = {_SINGLES: (singles.cost_per_1k, singles.quality)}
    curves.update({r.label: (r.frontier.router.cost_per_1k, r.frontier.router.quality) for r in results})
    lo = min(float(np.min(c)) for c, _ in curves.values())
    hi = max(float(np.max(c)) for c, _ in curves.values())
    values = metrics.aiq_common(curves, cost_range=(lo, hi))
    for r in results:
        r.aiq_common = values[r.label]
    return (lo, hi), values[_SINGLES]


def _fit_and_sweep(
    config: ExperimentConfig, split: Split, label: str, spec: dict[str, Any], say: Callable[[str], None]
) -> _Fitted:
    """Fit one router on train, score validation and test once, and sweep its test frontier."""
    router = make_router({"name": spec["name"], "params": spec.get("params", {})})
    t0 = time.perf_counter()
    router.fit(split.train)
    t1 = time.perf_counter()
    say(f"{label}: scoring validation and test")
    val_policy = router.policy(split.validation)
    test_policy = router.policy(split.test)
    t2 = time.perf_counter()
    frontier = compute_frontier(router, split.test, n_points=config.n_points, name=label, policy=test_policy)
    t3 = time.perf_counter()
    return _Fitted(
        label=label,
        spec={"name": spec["name"], "params": spec.get("params", {})},
        router=router,
        frontier=frontier,
        val_policy=val_policy,
        test_policy=test_policy,
        seconds={"fit": t1 - t0, "score": t2 - t1, "sweep": t3 - t2},
    )


def _measure(config: ExperimentConfig, refs: _References, fitted: _Fitted) -> RouterResult:
    """Every number of one router: its frontier summaries on test, and its calibrated point with intervals."""
    frontier, test = fitted.frontier, refs.split.test
    curve = frontier.router
    rq, rc_1k = float(refs.ref_q.mean()), float(refs.ref_c.mean()) * PER_1K
    cost_1k = curve.cost_per_1k

    def at(**threshold: float) -> metrics.ParityPoint | None:
        return metrics.savings_at_parity(cost_1k, curve.quality, ref_cost=rc_1k, ref_quality=rq, **threshold)

    _, ps_cost, ps_score = frontier.per_sample()
    parity_ci, reach = stats.parity_interval(
        ps_cost, ps_score, refs.W, ref_cost=refs.ref_c, ref_score=refs.ref_q, margin=config.margin
    )
    two_model = None
    if len(frontier.models) == 2 and refs.best != refs.cheap:
        qw, qs = float(frontier.singles.quality[refs.cheap]), float(frontier.singles.quality[refs.best])
        share = curve.share[:, refs.best]
        two_model = {
            "weak": frontier.models[refs.cheap],
            "strong": frontier.models[refs.best],
            "apgr": metrics.apgr(share, curve.quality, qw, qs),
            "cpt50": metrics.cpt(share, curve.quality, qw, qs, 0.5),
            "cpt80": metrics.cpt(share, curve.quality, qw, qs, 0.8),
        }
    targets = [_measure_target(config, refs, fitted, t) for t in config.targets]
    cal = targets[0].calibrated
    _, c_cost, c_score = fitted.test_policy.outcomes(cal.lam)
    return RouterResult(
        label=fitted.label,
        spec=fitted.spec,
        frontier=frontier,
        aiq=metrics.aiq(cost_1k, curve.quality),
        parity=at(margin=config.margin),
        parity_ci=parity_ci,
        parity_reach=reach,
        at95=at(fraction=0.95),
        at99=at(fraction=0.99),
        two_model=two_model,
        calibrated=cal,
        at_calibrated=targets[0].at_point,
        non_inferiority=stats.non_inferiority(c_score, refs.W, ref_score=refs.ref_q, margin=config.margin),
        categories=metrics.per_category(
            test.categories, c_cost, c_score, ref_cost=refs.ref_c, ref_score=refs.ref_q, oracle_score=refs.oracle_q
        ),
        seconds=fitted.seconds,
        targets=targets,
    )


def _measure_target(config: ExperimentConfig, refs: _References, fitted: _Fitted, target: Target) -> TargetResult:
    """One target of one router: its point chosen on validation, measured on test with paired intervals."""
    cal = calibrate(
        fitted.router,
        refs.split.validation,
        refs.split.test,
        target,
        n_points=config.n_points,
        val_policy=fitted.val_policy,
        test_policy=fitted.test_policy,
        n_resamples=config.n_resamples,
        seed=config.seed,
    )

    def intervals(lam: float) -> dict[str, stats.Interval]:
        _, cost, score = fitted.test_policy.outcomes(lam)
        return stats.point_intervals(cost, score, refs.W, ref_cost=refs.ref_c, ref_score=refs.ref_q)

    at_point = intervals(cal.lam)
    plain = None if cal.plain is None else intervals(cal.plain.lam)["savings"]
    return TargetResult(calibrated=cal, at_point=at_point, plain_savings=plain)
