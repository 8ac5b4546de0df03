"""The Export page: what a router does at an operating point (with intervals), refitting it, writing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app.services.compare import CompareSettings, prepared_table, test_table
from app.services.sources import load_prices, stamp
from app.services.specs import spec_key
from evals.exceptions import SchemaError
from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN

__all__ = ["export", "fitted_router", "point_summary"]


def point_summary(
    result: Any, router_result: Any, lam: float, point: str = "calibrated", n_resamples: int = 1000
) -> dict[str, Any]:
    """What a router does at operating point ``lam`` on the test split, with paired 95% intervals.

    Built by :func:`routers.export.measure_point`, the one schema of ``router.json``'s ``measurement``
    block (the same as ``routelab export``).

    Args:
        point: How ``lam`` was chosen: ``calibrated`` (on validation: :data:`POINT_VALIDATION_CHOSEN`), or
            ``parity`` / ``custom`` (read off the test frontier: :data:`POINT_TEST_FRONTIER`).

    Returns:
        The measurement block as a dict: ``quality``, ``cost_per_1k_usd``, ``quality_diff``, ``savings`` (each
        ``{"value", "low", "high"}``), ``n_test``, ``reference_model``, ``traffic_share``, ``point``, ...
    """
    from evals import stats
    from routers.export import measure_point

    fr = router_result.frontier
    choice, cost, score = fr.policy.outcomes(float(lam))
    test = test_table(result.config.source, CompareSettings.of_result(result))
    t = test if test.models == fr.models else test.select(models=list(fr.models))
    best = list(fr.models).index(result.best_single["name"])
    measurement = measure_point(
        cost,
        score,
        ref_cost=t.cost[:, best],
        ref_score=t.quality[:, best],
        W=stats.resample_counts(len(score), n_resamples, 0),
        point=POINT_VALIDATION_CHOSEN if point == "calibrated" else POINT_TEST_FRONTIER,
        choice=choice,
        models=list(fr.models),
        reference_model=result.best_single["name"],
        operating_point={
            "calibrated": "calibrated on validation",
            "parity": "cheapest point at parity on test",
        }.get(point, "picked on the test frontier in the app"),
        lam=float(lam),
        dataset=result.dataset,
        n_train=int(result.n_train),
        cost_estimated=bool(result.cost_estimated),
        extra={"router": router_result.label},
    )
    return measurement.to_dict()


def fitted_router(source: str, spec: dict[str, Any], settings: CompareSettings) -> Any:
    """The router of ``spec`` fitted on the same train split as its evaluation (cached).

    :class:`evals.workbench.experiment.RouterResult` does not keep the fitted router, so it is refitted here;
    fitting is deterministic (same train rows, same ``random_state``), and :func:`export` checks that the
    refit router makes the measured decisions on every test prompt before writing anything.
    """
    return _fitted_cached(source, stamp(source), spec_key(spec), settings)


@st.cache_resource(max_entries=16, show_spinner="Fitting the router on the train split...")
def _fitted_cached(source: str, file_stamp: float, key: str, settings: CompareSettings) -> Any:
    from routers.registry import make_router

    config = settings.config(source, [json.loads(key)])
    split = prepared_table(source, settings).split(
        config.fractions, random_state=config.split_seed, stratify=config.stratify
    )
    return make_router(json.loads(key)).fit(split.train)


def export(
    router_result: Any, result: Any, lam: float, out_dir: str, overwrite: bool = False, point: str = "calibrated"
) -> Path:
    """Write the deployable folder of a router at ``lam`` (via :func:`routers.export.export_router`).

    Raises:
        WorkbenchError: (ExportError) for a non-exportable router or a bad folder; SchemaError if the refit
            router's decisions on the test split differ from the measured ones (nothing is written then).
    """
    from routers.export import export_router

    settings = CompareSettings.of_result(result)
    router = fitted_router(result.config.source, router_result.spec, settings)
    measured, _, _ = router_result.frontier.policy.outcomes(float(lam))
    again, _, _ = router.policy(test_table(result.config.source, settings)).outcomes(float(lam))
    if not np.array_equal(measured, again):
        raise SchemaError(
            f"refitting {router_result.label} did not reproduce the measured decisions on "
            f"{int((measured != again).sum())} of {len(measured)} test prompts; not exporting"
        )
    return export_router(
        router,
        out_dir,
        lam=float(lam),
        table_card=result.table.card,
        prices=load_prices(),
        measurement=point_summary(result, router_result, lam, point),
        overwrite=overwrite,
    )
