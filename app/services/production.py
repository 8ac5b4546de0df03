"""The *Production* page's glue: build the promised-vs-delivered report of a decision log, as tables and figures.

The report itself is :func:`evals.workbench.production_report.build_report` (the same one ``routelab logs report``
prints); this module turns it into what the page shows: a figure of the promised and delivered saving with their
intervals (overall and per time bucket), per-category and per-bucket tables, drift flags and off-policy estimates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from evals.formatting import format_interval

__all__ = [
    "LOG_DIR_ENV",
    "EXPORT_ENV",
    "default_paths",
    "drift_frame",
    "offpolicy_frame",
    "production_report",
    "saving_figure",
    "slice_frame",
]

#: Environment variables the page pre-fills its two folders from.
LOG_DIR_ENV = "ROUTELAB_APP_LOG_DIR"
EXPORT_ENV = "ROUTELAB_APP_EXPORT"


def default_paths() -> tuple[str, str]:
    """``(log dir, export folder)`` from :data:`LOG_DIR_ENV` / :data:`EXPORT_ENV` ("" when unset)."""
    return os.environ.get(LOG_DIR_ENV, ""), os.environ.get(EXPORT_ENV, "")


def _stamp(folder: str) -> tuple[float, int]:
    """What changes when a log grows: the newest modification time and the number of files (cache key)."""
    p = Path(folder)
    files = [f for f in p.iterdir() if f.is_file()] if p.is_dir() else []
    return (max((f.stat().st_mtime for f in files), default=0.0), len(files))


@st.cache_resource(max_entries=8, show_spinner="Reading the log and building the report...")
def _cached(log_dir: str, export: str, lams: tuple[float, ...], compare: tuple[str, ...], bucket: str | None,
            stamp: tuple[float, int]) -> Any:
    from evals.workbench.production_report import build_report

    return build_report(log_dir, export, lams=lams, compare=compare, bucket=bucket, n_resamples=500)


def production_report(log_dir: str, export: str, *, lams: Sequence[float] = (), compare: Sequence[str] = (),
                      bucket: str | None = None) -> Any:
    """The report of ``log_dir`` served by ``export`` (cached until the log changes).

    Raises:
        DataNotFoundError / ExportError: for a missing log, a log without decisions, or an export that does not load.
    """
    return _cached(str(log_dir), str(export), tuple(float(x) for x in lams), tuple(str(c) for c in compare), bucket,
                   _stamp(str(log_dir)))


def _pct(iv: Mapping[str, Any] | None) -> str:
    return "—" if not iv or iv.get("value") is None else format_interval(iv, pct=True)


def _num(iv: Mapping[str, Any] | None, digits: int = 3) -> str:
    return "—" if not iv or iv.get("value") is None else format_interval(iv, digits=digits)


def slice_frame(block: Mapping[str, Mapping[str, Any]], name: str = "category") -> pd.DataFrame:
    """One row per category (or time bucket; ``name`` is the first column's title): requests, cost per 1k of each
    arm, saving against control, verdicts against the reference, quality delta."""
    rows = []
    for label, s in block.items():
        cost, q = s["cost"], s["quality"]
        router, control = cost.get("router") or {}, cost.get("control") or {}
        rows.append({
            name: label, "requests": s["requests"],
            "router $/1k": _num(router.get("cost_per_1k"), 4), "router n": router.get("n", 0),
            "control $/1k": _num(control.get("cost_per_1k"), 4), "control n": control.get("n", 0),
            "saving vs control": _pct(cost.get("saving")),
            "graded": q.get("n", 0),
            "win": _pct(q.get("win")), "tie": _pct(q.get("tie")), "loss": _pct(q.get("loss")),
            "quality delta": _num(q.get("quality_delta")),
        })
    return pd.DataFrame(rows)


def drift_frame(report: Any) -> pd.DataFrame:
    """One row per category checked for drift: live delta, offline interval, flagged, confirmed, since."""
    return pd.DataFrame([{
        "category": f["category"], "graded": f["n"], "live quality delta": _num(f["live"]),
        "offline quality diff": _num(f["offline"]), "offline numbers": f["offline_source"],
        "flagged": f["flagged"], "confirmed": f["confirmed"], "since": f["since"] or "",
    } for f in report.drift])


def telemetry_frame(report: Any) -> pd.DataFrame:
    """One row per upstream with logged telemetry: snapshots, last and worst moving latency and error rate."""
    def ms(x: Any) -> str:
        return "—" if x is None else f"{1000 * x:,.0f} ms"

    def share(x: Any) -> str:
        return "—" if x is None else f"{100 * x:.1f}%"

    return pd.DataFrame([{
        "upstream": name, "snapshots": t["snapshots"], "attempts": t["attempts"],
        "last latency": ms(t["latency_s"]), "last error rate": share(t["error_rate"]),
        "worst latency": ms(t["worst_latency_s"]), "worst error rate": share(t["worst_error_rate"]),
    } for name, t in report.telemetry.items()])


def offpolicy_frame(report: Any) -> pd.DataFrame:
    """One row per (target policy, metric): the logged policy's value and the IPS, SNIPS and DR estimates."""
    rows = []
    for e in report.offpolicy:
        for metric, b in e["estimates"].items():
            served = e["served"].get(metric)
            rows.append({"target": e["label"], "metric": metric,
                         "served (logged)": "—" if served is None else f"{served:.4g}",
                         "IPS": _num(b["ips"], 4), "SNIPS": _num(b["snips"], 4), "DR": _num(b["dr"], 4),
                         "effective n": f"{b['effective_n']:,.0f} of {b['n']:,}"})
    return pd.DataFrame(rows)


def _bar(label: str, iv: Mapping[str, Any] | None, color: str) -> go.Scatter | None:
    if not iv or iv.get("value") is None:
        return None
    lo, hi = iv.get("low"), iv.get("high")
    err = {} if lo is None or hi is None else {"error_x": {"type": "data", "symmetric": False,
                                                            "array": [100 * (hi - iv["value"])],
                                                            "arrayminus": [100 * (iv["value"] - lo)]}}
    return go.Scatter(x=[100 * iv["value"]], y=[label], mode="markers", marker={"size": 12, "color": color},
                      name=label, hovertemplate=f"{label}: {_pct(iv)}<extra></extra>", **err)


def saving_figure(report: Any) -> go.Figure:
    """Saving in percent with 95% intervals: promised (export), delivered overall, and per time bucket."""
    fig = go.Figure()
    promised = report.promised.get("savings")
    points = [("promised (export, offline)", promised, "#636efa"),
              ("delivered (live, vs control)", report.delivered["cost"].get("saving"), "#00cc96")]
    points += [(f"{label}", s["cost"].get("saving"), "#ab63fa") for label, s in report.by_time.items()]
    for label, iv, color in points:
        trace = _bar(label, iv, color)
        if trace is not None:
            fig.add_trace(trace)
    if promised and promised.get("low") is not None:
        fig.add_vrect(x0=100 * promised["low"], x1=100 * promised["high"], fillcolor="#636efa", opacity=0.12,
                      line_width=0, annotation_text="promised interval", annotation_position="top left")
    fig.update_layout(showlegend=False, xaxis_title="saving (%)", height=120 + 28 * len(fig.data),
                      margin={"l": 10, "r": 10, "t": 30, "b": 40})
    fig.update_yaxes(autorange="reversed")
    return fig
