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

from evals.figures import frontier_figure  # the one frontier figure; also importable from here, as before
from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval

__all__ = [
    "NON_INFERIOR_EXPLAINED",
    "TARGETS_EXPLAINED",
    "cost_provenance",
    "frontier_figure",
    "report_tables",
    "write_report",
]

#: What "non-inferior" means, said wherever it appears next to gates (the report and ``routelab eval``).
NON_INFERIOR_EXPLAINED = (
    "non-inferior = the 95% paired interval of the quality difference vs the best single model stays above "
    "-margin (a statistical test); the gates compare point estimates with their limits, so a router can pass "
    "its gates and still not be shown non-inferior"
)


#: What the per-target table shows, said above it.
TARGETS_EXPLAINED = (
    f"Savings are {POINT_VALIDATION_CHOSEN}. 'held on test' = the target is met by the test means (quality "
    "targets against the best single model's test quality). A risk-controlled target takes a point whose "
    "one-sided validation-bootstrap lower bound meets it (with the stated confidence), instead of one whose "
    "validation mean does (the plain choice); 'saving the guarantee cost' = the plain choice's test saving "
    "minus the risk-controlled one's."
)


def _fmt(x: Any, digits: int = 3, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:.1%}" if pct else f"{x:.{digits}f}"


def _ci(iv: dict[str, Any] | Any, *, pct: bool = False, digits: int = 3) -> str:
    return format_interval(iv, pct=pct, digits=None if pct else digits)


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
    rows, cal_rows, target_rows = [], [], []
    for r in s["routers"]:
        row = {
            "router": r["label"],
            "AIQ": _fmt(r["aiq"], 4),
            "AIQ, common range": _fmt(r.get("aiq_common"), 4),
            "savings@parity, test frontier [95% CI]": format_interval(
                r["savings_at_parity"], *r["savings_at_parity_ci"], pct=True
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
                "savings, val-chosen point [95% CI]": _ci(at["savings"], pct=True),
                f"non-inferior (margin {s['margin']:.3f})": (
                    f"{'yes' if ni['non_inferior'] else 'no'} (p={ni['p_value']:.3g})"
                ),
                "held on test": _yes_no(cal.get("held_on_test")),
                "n val / test": f"{cal['validation']['n']} / {cal['test']['n']}",
            }
        )
        for t in r.get("targets", []):
            tc, ta = t["calibrated"], t["at_point"]
            risk = bool(tc["target"].get("risk_control"))
            target_rows.append(
                {
                    "router": r["label"],
                    "target": t["target"],
                    "met on val": _yes_no(tc["met"]),
                    "test quality [95% CI]": _ci(ta["quality"]),
                    "Δ quality vs best [95% CI]": _ci(ta["quality_diff"]),
                    "savings, val-chosen point [95% CI]": _ci(ta["savings"], pct=True),
                    "held on test": _yes_no(t["held_on_test"]),
                    "plain choice: savings [95% CI]": _ci(t["plain_savings"], pct=True) if risk else "—",
                    "saving the guarantee cost": _points(t["guarantee_cost"]) if risk else "—",
                }
            )
    return {
        "references": refs,
        "routers": pd.DataFrame(rows),
        "calibration": pd.DataFrame(cal_rows),
        "targets": pd.DataFrame(target_rows),
    }


def _yes_no(flag: Any) -> str:
    return "—" if flag is None else ("yes" if flag else "NO")


def _points(x: Any) -> str:
    """A difference of two savings, in points of saving."""
    return "—" if x is None or not np.isfinite(x) else f"{x * 100:+.1f} points"


def _show_targets(result: Any) -> bool:
    """The per-target table is shown when it says more than the calibration table: several targets, or one
    that is risk-controlled (then the plain choice and what the guarantee cost are in it)."""
    targets = result.config.targets
    return len(targets) > 1 or any(t.risk_control for t in targets)


def cost_provenance(table: Any) -> str:
    """How the table's costs were obtained, in words, from the table itself: estimated or measured (per row,
    the ``cost_estimated`` column) and the method its source states (the card's ``cost_note``)."""
    frame = table.frame
    n = len(frame)
    n_est = int(frame["cost_estimated"].sum()) if n else 0
    if n_est == 0:
        head = "Costs are measured per request"
    elif n_est == n:
        head = "**Costs are estimated**, not measured"
    else:
        head = f"**Costs are partly estimated** ({n_est:,} of {n:,} rows), the rest measured"
    note = (table.card.cost_note or "").strip()
    # Source cards often open with a label the head already says ("ESTIMATED: ...", "MEASURED: ...").
    for label in ("estimated:", "measured:"):
        if note.lower().startswith(label):
            note = note[len(label) :].strip()
    if not note:
        return f"{head} (the source states no method)."
    return f"{head}; the source's method: {note.rstrip('.')}."


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
    card = result.table.card
    warnings = [f"**Warning:** {w}" for w in getattr(result, "warnings", [])]
    notes = [f"**Note:** {n}" for n in getattr(result, "notes", [])]
    origin = getattr(result, "split_origin", "seeded")
    if origin == "column":
        how = "split by the file's 'split' column"
    elif origin == "test_source":
        how = f"test from {cfg.test_source}; train/validation split {list(cfg.fractions)[:2]}, seed {cfg.split_seed}"
    else:
        how = f"split {list(cfg.fractions)}, seed {cfg.split_seed}"
    aiq_range = getattr(result, "aiq_range", None)
    aiq_common = (
        ""
        if aiq_range is None
        else f" AIQ, common range: the same area over one cost range for every router, "
        f"${aiq_range[0]:.4g} to ${aiq_range[1]:.4g} per 1k requests (the cheapest to the dearest point of "
        f"any router or single model; quality 0 where a router cannot operate), so it ranks them; the single "
        f"models' hull scores {_fmt(getattr(result, 'aiq_single_hull', None), 4)} on it."
    )
    return [
        *warnings,
        f"Dataset **{result.dataset}** ({card.source or cfg.source}); models: {', '.join(result.models)}.",
        f"Samples: train {result.n_train}, validation {result.n_validation}, test {result.n_test} "
        f"({how}{', stratified by category' if cfg.stratify and origin != 'column' else ''}).",
        *notes,
        cost_provenance(result.table),
        f"Every number is on the test split; intervals are 95% paired bootstrap over test samples "
        f"({cfg.n_resamples} resamples, seed {cfg.seed}). Parity = quality not below the best single model's "
        f"by more than {cfg.margin:.3f}. Savings are given at two points: savings@parity are "
        f"{POINT_TEST_FRONTIER} (the cheapest test point within the margin; optimistic, since the point is "
        f"picked with test outcomes); the calibrated point's savings are {POINT_VALIDATION_CHOSEN} (what an "
        "export of that point gets).",
        "AIQ: area under the router's non-decreasing convex hull over its own cost range, divided by "
        "the range "
        f"(RouterBench).{aiq_common} APGR/CPT (RouteLLM) are shown when exactly two models are compared.",
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
    gate_note = f"Note: {NON_INFERIOR_EXPLAINED}."
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
    if _show_targets(result):
        md += ["## Targets (each chosen on validation from the same fit, measured on test)", "", TARGETS_EXPLAINED, ""]
        md += [_md_table(tables["targets"]), ""]
    if gates:
        md += ["## Gates", "", *gates, "", gate_note, ""]
    md += ["## Per category (at the calibrated point, vs the best single model)", ""]
    for r in result.routers:
        md += [f"### {r.label}", "", _md_table(_category_frame(r)), ""]
    md += ["Frontier plot: see report.html.", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    parity = (
        float(result.best_single["quality"]) - result.config.margin,
        f"parity: {result.best_single['name']} - margin",
    )
    fig = frontier_figure(
        [r.frontier for r in result.routers], title=f"{result.dataset}: quality vs cost", parity=parity
    )
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
    if _show_targets(result):
        parts += [
            "<h2>Targets (each chosen on validation from the same fit, measured on test)</h2>",
            f"<p>{html.escape(TARGETS_EXPLAINED)}</p>",
            table_html(tables["targets"]),
        ]
    if gates:
        parts += ["<h2>Gates</h2><ul>", *(f"<li>{html.escape(g[2:])}</li>" for g in gates), "</ul>"]
        parts.append(f"<p>{html.escape(gate_note)}</p>")
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
