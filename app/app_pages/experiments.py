"""Experiments: MLflow evaluation runs of a task set side by side (params, metrics, frontiers overlaid)."""

from __future__ import annotations

import streamlit as st

from app import services
from evals.exceptions import WorkbenchError

st.title("Experiments")
uri = services.tracking_uri()
st.caption(
    f"MLflow tracking URI: `{uri}` (set `MLFLOW_TRACKING_URI` to use a tracking server). "
    "Runs come from `routelab eval` and from the Compare page."
)

try:
    exps = services.list_experiments()
except Exception as exc:  # noqa: BLE001 - MLflow raises many types for an unreachable store
    st.error(f"**Cannot read MLflow at {uri}**: {exc}")
    st.stop()
if exps.empty:
    st.info("No RouteLab runs yet. Run a comparison on the **Compare** page, or `routelab eval <config>`.")
    st.stop()

names = exps["name"].tolist()
try:  # open on the experiment of the task set in use, when it has one
    wanted = f"routelab/{services.load_table(services.current_source()).card.name}"
except WorkbenchError:
    wanted = ""
exp_name = st.selectbox(
    "Task set (MLflow experiment)",
    names,
    index=names.index(wanted) if wanted in names else 0,
    key="exp_experiment",
)
exp_id = exps.loc[exps["name"] == exp_name, "experiment_id"].iat[0]

try:
    evals_ = services.list_evaluations(exp_id)
except WorkbenchError as exc:
    st.error(str(exc))
    st.stop()
if evals_.empty:
    st.info("This experiment has no evaluation runs.")
    st.stop()

st.subheader("Evaluations")
st.dataframe(evals_, hide_index=True, width="stretch", key="exp_runs")
options = evals_["run_id"].tolist()
labels = {r.run_id: f"{r.run_name} - {r.started} ({r.routers})" for r in evals_.itertuples()}
picked = st.multiselect(
    "Runs to compare",
    options,
    default=options[: min(2, len(options))],
    format_func=labels.get,
    key="exp_pick",
)
if not picked:
    st.stop()

children = services.router_runs(picked)
if children.empty:
    st.info("The chosen runs have no router runs.")
    st.stop()

st.subheader("Routers side by side")
metric_cols = [
    c
    for c in (
        "savings_at_parity",
        "savings_at_parity_ci_low",
        "savings_at_parity_ci_high",
        "parity_reached_share",
        "aiq",
        "test_quality",
        "test_quality_ci_low",
        "test_quality_ci_high",
        "test_cost_per_1k",
        "test_savings",
    )
    if c in children
]
param_cols = [c for c in children.columns if c.startswith("param.")]
st.dataframe(
    children[["evaluation", "router", *metric_cols, *param_cols]],
    hide_index=True,
    width="stretch",
    key="exp_children",
)

st.subheader("Frontiers overlaid")
curves = {}
for r in children.itertuples():
    frame = services.run_frontier(r.run_id)
    if not frame.empty:
        curves[f"{r.router} @ {r.evaluation} ({r.parent_run_id[:6]})"] = frame
if curves:
    st.plotly_chart(services.overlay_figure(curves), key="exp_overlay", width="stretch")
else:
    st.info("These runs logged no frontier tables.")
