"""What the Compare and Experiments pages draw and rank: thinned operating points with intervals, single
models with intervals, the ranking table, and the frontier figure (:func:`evals.figures.frontier_figure`).

Units: every savings number the app shows is a percentage (``savings_at_parity_%`` and friends, 0-100), on
Compare, Experiments and Export alike; each router keeps one colour (:func:`evals.figures.router_color`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.services.compare import CompareSettings, _evaluate_cached, prepared_table
from app.services.sources import stamp
from app.services.specs import spec_key
from evals.figures import CurveData, References, curves_from_frame, frontier_figure, references_from_frame
from evals.formatting import format_interval, format_number, format_pct

__all__ = [
    "compare_figure",
    "display_frame",
    "overlay_figure",
    "percent_columns",
    "point_table",
    "ranking_frame",
    "router_runs_table",
    "single_model_points",
]

#: Logged metrics that are fractions of the reference cost: shown as percentages everywhere in the app.
SAVINGS_METRICS = (
    "savings_at_parity",
    "savings_at_parity_ci_low",
    "savings_at_parity_ci_high",
    "parity_reached_share",
    "test_savings",
    "test_savings_ci_low",
    "test_savings_ci_high",
    "savings_at_95pct",
    "savings_at_99pct",
)


def point_table(source: str, spec: dict[str, Any], settings: CompareSettings, max_points: int = 80) -> pd.DataFrame:
    """A router's distinct operating points on test with a paired 95% interval of quality (cached).

    Columns: ``lam, cost_per_1k, quality, q_low, q_high, n, split`` (top models' traffic shares as text),
    plus ``share_<model>``.
    """
    return _points_cached(source, stamp(source), spec_key(spec), settings, max_points)


@st.cache_resource(max_entries=64, show_spinner=False)
def _points_cached(
    source: str, file_stamp: float, key: str, settings: CompareSettings, max_points: int
) -> pd.DataFrame:
    from evals import stats

    result = _evaluate_cached(source, file_stamp, key, settings)
    fr = result.routers[0].frontier
    curve = fr.router
    # Keep the points where the curve moves, thinned evenly to at most max_points (hover stays readable).
    moved = np.r_[True, (np.abs(np.diff(curve.cost)) > 1e-15) | (np.abs(np.diff(curve.quality)) > 1e-15)]
    idx = np.flatnonzero(moved)
    if len(idx) > max_points:
        idx = idx[np.unique(np.linspace(0, len(idx) - 1, max_points).round().astype(int))]
    lams = curve.lam[idx]
    _, _, score = fr.per_sample(lams)
    n = score.shape[0]
    W = stats.resample_counts(n, settings.n_resamples, 0)
    draws = W @ score / n
    lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
    share = curve.share[idx]
    models = fr.models
    split = []
    for row in share:
        top = np.argsort(-row)[:3]
        split.append(", ".join(f"{models[j]} {row[j]:.0%}" for j in top if row[j] > 0.005))
    out = pd.DataFrame(
        {
            "lam": lams,
            "cost_per_1k": curve.cost_per_1k[idx],
            "quality": curve.quality[idx],
            "q_low": lo,
            "q_high": hi,
            "n": n,
            "split": split,
        }
    )
    for j, m in enumerate(models):
        out[f"share_{m}"] = share[:, j]
    return out


def single_model_points(source: str, settings: CompareSettings) -> pd.DataFrame:
    """Every single model on the test split: cost per 1k, quality with a paired 95% interval, n (cached)."""
    return _singles_cached(source, stamp(source), settings)


@st.cache_resource(max_entries=16, show_spinner=False)
def _singles_cached(source: str, file_stamp: float, settings: CompareSettings) -> pd.DataFrame:
    from evals import stats

    config = settings.config(source, [{"name": "single"}])
    test = (
        prepared_table(source, settings)
        .split(config.fractions, random_state=config.split_seed, stratify=config.stratify)
        .test
    )
    q, c = test.quality, test.cost
    W = stats.resample_counts(q.shape[0], settings.n_resamples, 0)
    rows = []
    for j, m in enumerate(test.models):
        iv = stats.mean_interval(q[:, j], W)
        rows.append(
            {
                "model": m,
                "cost_per_1k": float(c[:, j].mean() * 1000.0),
                "quality": iv.value,
                "q_low": iv.low,
                "q_high": iv.high,
                "n": iv.n,
            }
        )
    return pd.DataFrame(rows)


def _pct(x: Any) -> float:
    """A fraction as a percentage number; NaN (an empty cell, never "None") when undefined."""
    return float("nan") if x is None or not np.isfinite(float(x)) else 100.0 * float(x)


def ranking_frame(result: Any) -> pd.DataFrame:
    """Routers ranked by savings at parity, best first; every savings number in percent.

    Numeric columns (NaN where undefined, e.g. parity never reached): ``router``, ``savings_at_parity_%``,
    ``ci_low_%``, ``ci_high_%``, ``reached_in_%_of_resamples``, ``quality_at_parity``,
    ``cost_per_1k_at_parity``, ``savings_at_95%_quality_%``, ``savings_at_99%_quality_%``, ``aiq``, ``n``.
    Text columns for display (``—`` where undefined, never an empty "None" cell): ``savings_at_parity_95ci``
    (``"88.2% [87.7%, 88.8%]"`` via :func:`evals.formatting.format_interval`), ``quality_at_parity_text``,
    ``cost_per_1k_at_parity_text``, ``savings_at_95_text``, ``savings_at_99_text``.
    """
    rows = []
    for r in result.routers:
        p, ci = r.parity, r.parity_ci
        at95 = None if r.at95 is None else r.at95.savings
        at99 = None if r.at99 is None else r.at99.savings
        rows.append(
            {
                "router": r.label,
                "savings_at_parity_%": _pct(None if p is None else p.savings),
                "savings_at_parity_95ci": format_interval(None if p is None else p.savings, ci.low, ci.high, pct=True),
                "ci_low_%": _pct(ci.low),
                "ci_high_%": _pct(ci.high),
                "reached_in_%_of_resamples": 100 * r.parity_reach,
                "quality_at_parity": np.nan if p is None else p.quality,
                "quality_at_parity_text": format_number(None if p is None else p.quality, 3),
                "cost_per_1k_at_parity": np.nan if p is None else p.cost,
                "cost_per_1k_at_parity_text": "—" if p is None else f"${p.cost:.4f}",
                "savings_at_95%_quality_%": _pct(at95),
                "savings_at_95_text": format_pct(at95),
                "savings_at_99%_quality_%": _pct(at99),
                "savings_at_99_text": format_pct(at99),
                "aiq": r.aiq,
                "n": ci.n,
            }
        )
    out = pd.DataFrame(rows)
    key = out["savings_at_parity_%"].astype(float).fillna(-np.inf)
    return out.iloc[np.argsort(-key.to_numpy(), kind="stable")].reset_index(drop=True)


def display_frame(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A copy for display where no cell reads "None": missing values become ``—``.

    Columns without a missing value are left as they are (numbers stay numbers, so they sort and take
    number formats); a numeric column with a gap becomes text with ``digits`` decimals.
    """
    out = frame.copy()
    for col in out.columns:
        missing = out[col].isna()
        if not missing.any():
            continue
        if pd.api.types.is_numeric_dtype(out[col]):
            out[col] = [format_number(x, digits) for x in out[col]]
        else:
            out[col] = out[col].astype(object).where(~missing, "—")
    return out


def percent_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Logged savings metrics (fractions in MLflow) as percentages, renamed ``<metric>_%``."""
    out = frame.copy()
    for col in SAVINGS_METRICS:
        if col in out:
            out[f"{col}_%"] = pd.to_numeric(out.pop(col), errors="coerce") * 100.0
    return out


def router_runs_table(children: pd.DataFrame) -> pd.DataFrame:
    """The Experiments page's table of logged router runs, in the Compare page's units.

    Savings and reach in percent (``savings_at_parity_%``, ``parity_reached_%``, ``test_savings_%``), each
    interval as one text cell formatted by :func:`evals.formatting.format_interval` (``—`` for a missing
    bound), then the router's params; the ids stay (``run_id``) for picking runs.
    """

    def col(name: str) -> pd.Series:
        return (
            pd.to_numeric(children[name], errors="coerce")
            if name in children
            else pd.Series(np.nan, index=children.index)
        )

    def interval(name: str, pct: bool, digits: int | None = None) -> list[str]:
        v, lo, hi = col(name), col(f"{name}_ci_low"), col(f"{name}_ci_high")
        return [format_interval(a, b, c, pct=pct, digits=digits) for a, b, c in zip(v, lo, hi, strict=True)]

    out = pd.DataFrame(
        {
            "evaluation": children["evaluation"],
            "router": children["router"],
            "savings_at_parity_%": col("savings_at_parity") * 100.0,
            "savings at parity [95% CI]": interval("savings_at_parity", pct=True),
            "parity_reached_%": col("parity_reached_share") * 100.0,
            "aiq": col("aiq"),
            "test quality [95% CI]": interval("test_quality", pct=False),
            "test $ / 1k": col("test_cost_per_1k"),
            "test savings [95% CI]": interval("test_savings", pct=True),
        }
    )
    # The router's own params, logged flat as ``params.<key>`` (name and label are in the columns already).
    params = children[[c for c in children.columns if c.startswith("param.params.")]]
    params = params.rename(columns=lambda c: c[len("param.params.") :])
    out = pd.concat([out, params, children[["run_id", "parent_run_id"]]], axis=1)
    return display_frame(out)


def compare_figure(result: Any, points: dict[str, pd.DataFrame], singles: pd.DataFrame) -> Any:
    """The Compare page's frontier: every router's thinned curve with interval and traffic hover detail,
    single models with intervals, the oracle, the random mix, and the parity line.

    Args:
        result: The combined evaluation (references come from its first router's frontier).
        points: Router label -> :func:`point_table` frame.
        singles: :func:`single_model_points` frame.
    """
    fr = result.routers[0].frontier
    refs = References(
        models=list(singles["model"]),
        single_cost_per_1k=singles["cost_per_1k"].to_numpy(dtype=float),
        single_quality=singles["quality"].to_numpy(dtype=float),
        single_low=singles["q_low"].to_numpy(dtype=float),
        single_high=singles["q_high"].to_numpy(dtype=float),
        single_n=singles["n"].to_numpy(),
        oracle_cost_per_1k=fr.oracle.cost_per_1k,
        oracle_quality=fr.oracle.quality,
        random_cost_per_1k=fr.random.cost_per_1k,
        random_quality=fr.random.quality,
        n_samples=fr.n_samples,
        cost_estimated=bool(result.cost_estimated),
    )
    curves = []
    for r in result.routers:
        pts = points[r.label]
        curves.append(
            CurveData(
                label=r.label,
                cost_per_1k=pts["cost_per_1k"].to_numpy(dtype=float),
                quality=pts["quality"].to_numpy(dtype=float),
                lam=pts["lam"].to_numpy(dtype=float),
                detail=pts,
            )
        )
    best = result.best_single
    parity = (best["quality"] - result.config.margin, f"parity: {best['name']} - {result.config.margin:g}")
    return frontier_figure(curves, refs, parity=parity)


_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def overlay_figure(curves: dict[str, tuple[str, str, pd.DataFrame]]) -> Any:
    """Router frontiers logged by several runs on one plot, single models labelled.

    Args:
        curves: Legend name -> ``(router label, evaluation, frontier table)``; a router keeps its colour
            across runs, and runs are told apart by the line dash.
    """
    runs = list(dict.fromkeys(ev for _, ev, _ in curves.values()))
    data = []
    for name, (label, evaluation, frame) in curves.items():
        dash = _DASHES[runs.index(evaluation) % len(_DASHES)]
        data += curves_from_frame(frame, label=label, name=name, dash=dash)
    first = next(iter(curves.values()), None)
    refs = references_from_frame(first[2]) if first is not None else None
    return frontier_figure(data, refs, height=560)
