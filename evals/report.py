"""The evaluation report: Markdown and a self-contained HTML page with an interactive frontier plot.

The plot shows every router's curve (and its non-decreasing hull, dashed), every single model as a point,
the oracle (curve and point) and the random mix, on (cost per 1k requests, quality) axes. Tables give every
headline number with its 95% paired-bootstrap interval and sample count, and say when costs are estimated.

Example:
    >>> md_path, html_path = write_report(result, Path("report"))   # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evals.metrics import nondecreasing_hull

__all__ = ["frontier_figure", "report_tables", "write_report"]

_PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
]


def frontier_figure(
    frontiers: Sequence[Any], *, title: str = "Quality vs cost", cost_estimated: bool | None = None
):
    """A plotly figure of one or more :class:`~evals.frontier.Frontier` on the same axes.

    The references (oracle, single models, random mix) are drawn once, from the first frontier (all
    frontiers of one evaluation share the same test samples).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    ref = frontiers[0]
    est = ref.cost_estimated if cost_estimated is None else cost_estimated
    for i, fr in enumerate(frontiers):
        color = _PALETTE[i % len(_PALETTE)]
        cv = fr.router
        text = [f"lam={lam:.3g}" for lam in cv.lam]
        fig.add_trace(
            go.Scatter(
                x=cv.cost_per_1k,
                y=cv.quality,
                mode="lines+markers",
                name=fr.name,
                legendgroup=fr.name,
                line={"color": color},
                marker={"size": 4},
                text=text,
                hovertemplate="%{text}<br>$%{x:.4f}/1k<br>quality %{y:.4f}",
            )
        )
        hc, hq = nondecreasing_hull(cv.cost_per_1k, cv.quality)
        fig.add_trace(
            go.Scatter(
                x=hc,
                y=hq,
                mode="lines",
                name=f"{fr.name} hull",
                legendgroup=fr.name,
                showlegend=False,
                line={"color": color, "dash": "dash", "width": 1},
            )
        )
    o = ref.oracle
    fig.add_trace(
        go.Scatter(
            x=o.cost_per_1k,
            y=o.quality,
            mode="lines",
            name="oracle sweep",
            line={"color": "black", "dash": "dot", "width": 1},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=o.cost_per_1k[-1:],
            y=o.quality[-1:],
            mode="markers",
            name="oracle",
            marker={"symbol": "star", "size": 14, "color": "black"},
        )
    )
    r = ref.random
    fig.add_trace(
        go.Scatter(
            x=r.cost_per_1k,
            y=r.quality,
            mode="lines",
            name="random mix",
            line={"color": "grey", "dash": "dashdot", "width": 1},
        )
    )
    s = ref.singles
    fig.add_trace(
        go.Scatter(
            x=s.cost_per_1k,
            y=s.quality,
            mode="markers+text",
            name="single models",
            text=list(ref.models),
            textposition="top center",
            textfont={"size": 9},
            marker={"symbol": "diamond", "size": 9, "color": "#444"},
        )
    )
    costs = np.concatenate([s.cost_per_1k, o.cost_per_1k] + [f.router.cost_per_1k for f in frontiers])
    pos = costs[costs > 0]
    log_x = len(pos) > 0 and pos.max() / pos.min() > 20
    fig.update_layout(
        title=title + (" (costs estimated)" if est else ""),
        xaxis_title="$ per 1,000 requests"
        + (" (estimated)" if est else "")
        + (" (log scale)" if log_x else ""),
        yaxis_title=f"mean quality (n = {ref.n_samples})",
        template="plotly_white",
        height=620,
        legend={"orientation": "v"},
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def _fmt(x: Any, digits: int = 3, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:.1%}" if pct else f"{x:.{digits}f}"


def _ci(iv: dict[str, Any] | Any, *, pct: bool = False, digits: int = 3) -> str:
    d = iv if isinstance(iv, dict) else iv.to_dict()
    return f"{_fmt(d['value'], digits, pct)} [{_fmt(d['low'], digits, pct)}, {_fmt(d['high'], digits, pct)}]"


def report_tables(result: Any) -> dict[str, pd.DataFrame]:
    """The report's tables: ``references``, ``routers``, ``calibration`` (strings, ready to print)."""
    s = result.to_json()
    n = s["n_test"]
    est = " (est.)" if result.cost_estimated else ""
    b, o, c = s["best_single_model"], s["oracle"], s["cheapest_model"]
    refs = pd.DataFrame(
        [
            {
                "reference": f"best single: {b['name']}",
                "quality [95% CI]": _ci(b["quality_ci"]),
                f"$/1k{est}": _fmt(b["cost_per_1k"], 4),
                "n": n,
            },
            {
                "reference": f"cheapest: {c['name']}",
                "quality [95% CI]": _fmt(c["quality"]),
                f"$/1k{est}": _fmt(c["cost_per_1k"], 4),
                "n": n,
            },
            {
                "reference": "oracle",
                "quality [95% CI]": _ci(o["quality_ci"]),
                f"$/1k{est}": _fmt(o["cost_per_1k"], 4),
                "n": n,
            },
        ]
    )
    rows, cal_rows = [], []
    for r in s["routers"]:
        row = {
            "router": r["label"],
            "AIQ": _fmt(r["aiq"], 4),
            "savings@parity [95% CI]": (
                _fmt(r["savings_at_parity"], pct=True) + f" [{_fmt(r['savings_at_parity_ci'][0], pct=True)}, "
                f"{_fmt(r['savings_at_parity_ci'][1], pct=True)}]"
            ),
            "quality@parity": _fmt(r["quality_at_parity"]),
            f"$/1k@parity{est}": _fmt(r["cost_per_1k_at_parity"], 4),
            "savings@95%": _fmt(r["savings_at_95pct"], pct=True),
            "savings@99%": _fmt(r["savings_at_99pct"], pct=True),
            "n": n,
        }
        if r["two_model"]:
            row.update(
                {
                    "APGR": _fmt(r["two_model"]["apgr"]),
                    "CPT(50%)": _fmt(r["two_model"]["cpt50"], pct=True),
                    "CPT(80%)": _fmt(r["two_model"]["cpt80"], pct=True),
                }
            )
        rows.append(row)
        cal, at, ni = r["calibrated"], r["at_calibrated"], r["non_inferiority"]
        cal_rows.append(
            {
                "router": r["label"],
                "target": cal["target"]["description"],
                "met on val": "yes" if cal["met"] else "NO",
                "val quality": _fmt(cal["validation"]["quality"]),
                f"val $/1k{est}": _fmt(cal["validation"]["cost_per_1k"], 4),
                "test quality [95% CI]": _ci(at["quality"]),
                f"test $/1k{est} [95% CI]": _ci(at["cost_per_1k"], digits=4),
                "Δ quality vs best [95% CI]": _ci(at["quality_diff"]),
                "savings [95% CI]": _ci(at["savings"], pct=True),
                f"non-inferior (margin {s['margin']:.3f})": (
                    f"{'yes' if ni['non_inferior'] else 'no'} (p={ni['p_value']:.3g})"
                ),
                "n val / test": f"{cal['validation']['n']} / {cal['test']['n']}",
            }
        )
    return {"references": refs, "routers": pd.DataFrame(rows), "calibration": pd.DataFrame(cal_rows)}


def _md_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row.tolist()) + " |")
    return "\n".join(lines)


def _category_frame(r: Any) -> pd.DataFrame:
    cats = r.categories.copy()
    for col in ("quality", "ref_quality", "quality_diff", "oracle_quality"):
        if col in cats:
            cats[col] = cats[col].map(lambda v: _fmt(v))
    for col in ("cost_per_1k", "ref_cost_per_1k"):
        cats[col] = cats[col].map(lambda v: _fmt(v, 4))
    cats["savings"] = cats["savings"].map(lambda v: _fmt(v, pct=True))
    return cats


def _preamble(result: Any) -> list[str]:
    cfg = result.config
    cost_note = (
        "**Costs are estimated** (from text lengths and a price table), not measured."
        if result.cost_estimated
        else "Costs are measured per request by the source."
    )
    card = result.table.card
    return [
        f"Dataset **{result.dataset}** ({card.source or cfg.source}); models: {', '.join(result.models)}.",
        f"Samples: train {result.n_train}, validation {result.n_validation}, test {result.n_test} "
        f"(split {list(cfg.fractions)}, seed {cfg.split_seed}"
        f"{', stratified by category' if cfg.stratify else ''}).",
        cost_note + (f" {card.cost_note}" if card.cost_note else ""),
        f"Every number is on the test split; intervals are 95% paired bootstrap over test samples "
        f"({cfg.n_resamples} resamples, seed {cfg.seed}). Parity = quality not below the best single model's "
        f"by more than {cfg.margin:.3f}. Savings at parity pick the cheapest test point "
        "(optimistic: chosen on "
        "test); the calibrated point is chosen on validation and measured on test (honest).",
        "AIQ: area under the router's non-decreasing convex hull over its own cost range, divided by "
        "the range "
        "(RouterBench). APGR/CPT (RouteLLM) are shown when exactly two models are compared.",
    ]


def write_report(
    result: Any, out_dir: str | Path, *, gate_lines: Sequence[str] = (), gate_error: str | None = None
) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` (plotly inlined) into ``out_dir``.

    Returns:
        ``(markdown_path, html_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = report_tables(result)
    title = f"RouteLab evaluation: {result.config.name or result.dataset}"
    gates = [f"- FAILED: {gate_error}"] if gate_error else []
    gates += [f"- {line}" for line in gate_lines]
    md = [
        f"# {title}",
        "",
        *(f"{p}\n" for p in _preamble(result)),
        "## References",
        "",
        _md_table(tables["references"]),
        "",
        "## Routers (test split)",
        "",
        _md_table(tables["routers"]),
        "",
        "## Calibrated operating point (chosen on validation, measured on test)",
        "",
        _md_table(tables["calibration"]),
        "",
    ]
    if gates:
        md += ["## Gates", "", *gates, ""]
    md += ["## Per category (at the calibrated point, vs the best single model)", ""]
    for r in result.routers:
        md += [f"### {r.label}", "", _md_table(_category_frame(r)), ""]
    md += ["Frontier plot: see report.html.", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    fig = frontier_figure([r.frontier for r in result.routers], title=f"{result.dataset}: quality vs cost")
    plot = fig.to_html(include_plotlyjs=True, full_html=False)

    def table_html(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, escape=True, border=0, classes="t")

    parts = [
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(p).replace('**', '')}</p>" for p in _preamble(result)),
        plot,
        "<h2>References</h2>",
        table_html(tables["references"]),
        "<h2>Routers (test split)</h2>",
        table_html(tables["routers"]),
        "<h2>Calibrated operating point (chosen on validation, measured on test)</h2>",
        table_html(tables["calibration"]),
    ]
    if gates:
        parts += ["<h2>Gates</h2><ul>", *(f"<li>{html.escape(g[2:])}</li>" for g in gates), "</ul>"]
    parts.append("<h2>Per category (at the calibrated point)</h2>")
    for r in result.routers:
        parts.append(
            f"<details><summary>{html.escape(r.label)}</summary>{table_html(_category_frame(r))}</details>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table.t{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "table.t td,table.t th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path
