"""Production: promised vs delivered for a router that is serving (a decision log and the export that served it)."""

from __future__ import annotations

import streamlit as st

from app import services
from evals.exceptions import WorkbenchError
from evals.formatting import format_interval, format_pct

st.title("Production")
st.caption(
    "What the export promised (its measured saving and quality on the test split) beside what its decision log "
    "shows live: cost per request against the control arm of a rollout, win/tie/loss against the reference "
    "model from shadow grades, per category and over time, drift flags and off-policy estimates. The same "
    "report as `routelab logs report LOGDIR --export EXPORT`."
)
log_default, export_default = services.production_default_paths()
c1, c2 = st.columns(2)
log_dir = c1.text_input("Decision-log directory", value=log_default, key="prod_log",
                        help="the [log] dir of `routelab serve` (segments decisions-*.jsonl, grades-*.jsonl)")
export = c2.text_input("Export folder that served it", value=export_default, key="prod_export")
c3, c4, c5 = st.columns(3)
lams_text = c3.text_input("Other operating points to estimate (lam, comma-separated)", value="", key="prod_lams")
compare_text = c4.text_input("Other export folders to estimate (comma-separated)", value="", key="prod_compare")
bucket = c5.selectbox("Time buckets", ["auto", "hour", "day"], key="prod_bucket")
if not log_dir or not export:
    st.info("Enter a decision-log directory and the export folder that served it.")
    st.stop()
try:
    lams = [float(x) for x in lams_text.split(",") if x.strip()]
except ValueError:
    st.error(f"Operating points must be numbers separated by commas, got {lams_text!r}")
    st.stop()
compare = [x.strip() for x in compare_text.split(",") if x.strip()]
try:
    report = services.production_report(log_dir, export, lams=lams, compare=compare,
                                        bucket=None if bucket == "auto" else bucket)
except (WorkbenchError, ValueError) as exc:  # a missing folder, an empty log, an export that does not load
    st.error(str(exc))
    st.stop()

p, d = report.promised, report.delivered
st.caption(report.log["summary"])
m1, m2, m3, m4 = st.columns(4)
m1.metric("Promised saving", format_pct(p["savings"]["value"]) if p.get("savings") else "—")
m2.metric("Delivered saving", format_pct((d["cost"].get("saving") or {}).get("value")))
m3.metric("Graded (router arm)", f"{d['quality'].get('n', 0):,}")
m4.metric("Drift flags", sum(f["flagged"] for f in report.drift))
saving = d["cost"].get("saving")
promise = p.get("savings") or {}
rows = [
    "| | promised (export) | delivered (live) |", "|---|---|---|",
    f"| saving | {format_interval(promise, pct=True) if promise else '—'} "
    f"| {format_interval(saving, pct=True) if saving else '—'} |",
    f"| quality vs reference | {format_interval(p['quality_diff']) if p.get('quality_diff') else '—'} "
    f"| {format_interval(d['quality']['quality_delta']) if d['quality'].get('n') else '—'} |",
]
st.markdown("\n".join(rows))
if report.saving_inside_promise is not None:
    own = d.get("saving_own_choices")
    (st.success if report.saving_inside_promise else st.warning)(
        f"{'Delivered saving of the router' + chr(39) + 's own choices' if own else 'Delivered saving'} "
        f"{format_pct(d['saving_compared']['value'])} is {'inside' if report.saving_inside_promise else 'OUTSIDE'}"
        f" the promised interval [{format_pct(promise['low'])}, {format_pct(promise['high'])}]."
        + (f" With its {d['explored_picks']:,} exploration picks the router arm saved {format_pct(saving['value'])}"
           " (the price of exploring)." if own else "")
    )
st.plotly_chart(services.production_saving_figure(report), key="prod_fig")

st.subheader("Drift flags")
flagged = [f for f in report.drift if f["flagged"]]
for f in flagged:
    st.warning(f"**{f['category']}**: live quality delta {format_interval(f['live'])} (n={f['n']:,}) is below the "
               f"offline interval {format_interval(f['offline'])}" + (f"; since {f['since']}" if f["since"] else ""))
if report.drift and not flagged:
    st.success(f"No drift: every category ({len(report.drift)}) is at or above the lower end of its offline interval.")
if report.drift:
    st.dataframe(services.production_drift_frame(report), hide_index=True, key="prod_drift")

st.subheader("Per category")
st.dataframe(services.production_slice_frame(report.by_category), hide_index=True, key="prod_categories")
st.subheader(f"Over time (per {report.bucket}, UTC)")
st.dataframe(services.production_slice_frame(report.by_time, f"{report.bucket} (UTC)"), hide_index=True,
             key="prod_time")
if report.offpolicy:
    st.subheader("Off-policy estimates (router arm)")
    st.dataframe(services.production_offpolicy_frame(report), hide_index=True, key="prod_offpolicy")
if report.telemetry:
    st.subheader("Upstream telemetry (moving averages the proxy logged)")
    st.dataframe(services.production_telemetry_frame(report), hide_index=True, key="prod_telemetry")
for note in report.notes:
    st.info(note)
with st.expander("Full report (Markdown)"):
    st.markdown(report.to_markdown())
