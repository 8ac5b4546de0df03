"""Markdown rendering of a :class:`~evals.workbench.production_report.ProductionReport` (promised vs delivered).

Every figure prints with its interval and sample size (:func:`evals.formatting.format_interval`); costs say where
they come from and when the export's offline costs were estimated.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from evals.formatting import format_interval, format_pct

__all__ = ["render_markdown"]


def _iv(block: Mapping[str, Any] | None, *, pct: bool = False, digits: int | None = None) -> str:
    if not block or block.get("value") is None:
        return "—"
    return format_interval(block, pct=pct, digits=digits)


def _n(block: Mapping[str, Any] | None) -> str:
    return f" (n={block['n']:,})" if block and block.get("n") is not None else ""


def _cost1k(arm: Mapping[str, Any] | None) -> str:
    if not arm or not arm.get("cost_per_1k"):
        return "—"
    return f"${_iv(arm['cost_per_1k'], digits=4)} (n={arm['n']:,})"


def _wtl(q: Mapping[str, Any]) -> str:
    if not q.get("n"):
        return "—"
    return " / ".join(format_pct(q[v]["value"]) for v in ("win", "tie", "loss")) + f" (n={q['n']:,})"


def _when(t: float | None) -> str:
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def render_markdown(report: Any) -> str:
    """The report as Markdown (see the module docstring)."""
    p, d, log = report.promised, report.delivered, report.log
    out = [f"# Production report: {p.get('router') or '?'} (export `{report.export}`)", ""]
    out.append(f"Log `{report.log_dir}`: {log['summary']}; from {_when(log['start'])} to {_when(log['end'])}; "
               f"arms {log['arms']}; exploration epsilon {log['epsilon'] or [0]}; {log['explored']:,} explored.")
    out += ["", "## Promised vs delivered", ""]
    cost, q = d["cost"], d["quality"]
    est = " (offline costs ESTIMATED from text lengths)" if p.get("cost_estimated") else ""
    n_test = f" (n_test={p['n_test']:,})" if p.get("n_test") else ""
    router_n = (cost.get("router") or {}).get("n", 0)
    control_n = (cost.get("control") or {}).get("n", 0)
    out += [
        "| | promised (export, offline test split) | delivered (live) |",
        "|---|---|---|",
        f"| saving | {_iv(p.get('savings'), pct=True)} vs best single {p.get('reference_model') or '?'}{n_test} "
        f"| {_iv(cost.get('saving'), pct=True)} vs the control arm (router n={router_n:,}, control n={control_n:,}) |",
        f"| quality vs reference | difference {_iv(p.get('quality_diff'))}{n_test} | delta "
        f"{_iv(q.get('quality_delta'))}{_n(q.get('quality_delta'))}; win / tie / loss {_wtl(q)} |",
        f"| cost per 1k requests (USD) | {_iv(p.get('cost_per_1k_usd'), digits=4)}{est} | router "
        f"{_cost1k(cost.get('router'))}; control {_cost1k(cost.get('control'))} |",
    ]
    inside = d.get("saving_inside_promise")
    if inside is not None:
        own = d.get("saving_own_choices")
        what = "Delivered saving of the router's own choices" if own else "Delivered saving"
        out += ["", f"**{what} {format_pct(d['saving_compared']['value'])} is "
                    f"{'inside' if inside else 'OUTSIDE'} the promised interval "
                    f"[{format_pct(p['savings']['low'])}, {format_pct(p['savings']['high'])}].**"
                + (f" With its {d['explored_picks']:,} exploration picks the router arm saved "
                   f"{format_pct(cost['saving']['value'])} (the price of exploring)." if own else "")]
    if q.get("answer_quality"):
        out.append(f"Live correctness (exact grades): answers {_iv(q['answer_quality'])}, reference "
                   f"{_iv(q['reference_quality'])}; promised quality {_iv(p.get('quality'))}.")
    cq = d.get("control_quality") or {}
    if cq.get("n"):
        out.append(f"Control arm against the reference: win / tie / loss {_wtl(cq)}.")
    out.append("Live costs: usage reported by each upstream x the export's price table, as the proxy logged it. "
               "Intervals: 95% bootstrap (arms resampled independently); shares: Wilson 95%.")
    out += ["", "### Promised (the export's measurement)", ""] + [f"- {line}" for line in p.get("lines") or
                                                                 ["(no measurement block)"]]
    for title, block in (("Per category", report.by_category), (f"Over time (per {report.bucket}, UTC)",
                                                                 report.by_time)):
        out += ["", f"## {title}", "", "| | requests | router $/1k | control $/1k | saving vs control | "
                "win / tie / loss | quality delta |", "|---|---|---|---|---|---|---|"]
        for label, s in block.items():
            c, qq = s["cost"], s["quality"]
            out.append(f"| {label} | {s['requests']:,} | {_cost1k(c.get('router'))} | {_cost1k(c.get('control'))} "
                       f"| {_iv(c.get('saving'), pct=True)} | {_wtl(qq)} | {_iv(qq.get('quality_delta'))} |")
    out += ["", "## Drift flags", ""]
    flagged = [f for f in report.drift if f["flagged"]]
    if not report.drift:
        out.append("No category could be compared (no graded router-arm requests, or no offline interval).")
    elif not flagged:
        out.append(f"None: every category's live quality delta is at or above the lower end of its offline "
                   f"interval ({len(report.drift)} categories checked).")
    if report.drift:
        sources = sorted({f["offline_source"] for f in report.drift})
        out.append(f"(Offline interval per category: {', '.join(sources)}"
                   + ("; pass the evaluation's outcomes (--offline) for per-category intervals" if sources ==
                      ["overall"] else "") + ".)")
    for f in flagged:
        how = (" (confirmed: the whole live interval is below)" if f["confirmed"] else
               " (not confirmed: the live interval still reaches the offline one; watch it)")
        out.append(f"- **{f['category']}**: live delta {_iv(f['live'])} (n={f['n']:,}) below the offline "
                   f"{f['offline_source']} interval {_iv(f['offline'])}{how}"
                   f"{'; since ' + f['since'] if f['since'] else ''}")
    if report.offpolicy:
        out += ["", "## Off-policy estimates on the logged traffic (router arm)", "",
                "| target | metric | served (logged policy) | IPS | SNIPS | DR | effective n | unsupported |",
                "|---|---|---|---|---|---|---|---|"]
        for e in report.offpolicy:
            for metric, b in e["estimates"].items():
                served = e["served"].get(metric)
                out.append(f"| {e['label']} | {metric} | {'—' if served is None else f'{served:.4g}'} | "
                           f"{_iv(b['ips'], digits=4)} | {_iv(b['snips'], digits=4)} | {_iv(b['dr'], digits=4)} | "
                           f"{b['effective_n']:,.0f} of {b['n']:,} | "
                           f"{'—' if b['unsupported'] is None else format_pct(b['unsupported'])} |")
        methods = sorted({str(b[k].get("interval_method") or "bootstrap") for e in report.offpolicy
                          for b in e["estimates"].values() for k in ("ips", "snips", "dr") if isinstance(b[k], dict)})
        how = {"design": "design intervals (variance from the known logging propensities over every logged request, "
                         "clipped to the reward's range)",
               "bootstrap": "percentile bootstrap over logged requests"}
        out.append("Cost is dollars per request; quality is " + report.offpolicy[0]["quality_reward"] +
                   ". Intervals: 95%, " + "; ".join(how.get(m, m) for m in methods) + ".")
    out += _telemetry_table(getattr(report, "telemetry", None) or {})
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def _telemetry_table(telemetry: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The upstream telemetry section: per upstream, its snapshots and their last and worst values."""
    if not telemetry:
        return []

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{1000 * v:,.0f} ms"

    def share(v: float | None) -> str:
        return "—" if v is None else format_pct(v)

    first = min(t["first"] for t in telemetry.values())
    last = max(t["last"] for t in telemetry.values())
    out = ["", "## Upstream telemetry", "",
           f"The proxy's moving averages (EWMA) of each upstream's latency and error rate, as snapshotted in the log "
           f"from {_when(first)} to {_when(last)}.", "",
           "| upstream | snapshots | last latency | last error rate | worst error rate | worst latency | attempts |",
           "|---|---|---|---|---|---|---|"]
    for name, t in telemetry.items():
        out.append(f"| {name} | {t['snapshots']:,} | {ms(t['latency_s'])} | {share(t['error_rate'])} | "
                   f"{share(t['worst_error_rate'])} | {ms(t['worst_latency_s'])} | {t['attempts']:,} |")
    return out
