"""Experiments: MLflow evaluation runs of a task set side by side (params, metrics, frontiers overlaid)."""

from __future__ import annotations

import streamlit as st

from app import services
from evals.exceptions import WorkbenchError

st.title("Experiments")
uri = services.tracking_uri()
st.caption(
    f"MLflow runs in {services.tracking_label()} (set `MLFLOW_TRACKING_URI` to use a tracking server). "
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
st.dataframe(
    services.display_frame(evals_),
    hide_index=True,
    width="stretch",
    key="exp_runs",
    column_order=(
        "started",
        "run_name",
        "routers",
        "n_test",
        "best_single_quality",
        "oracle_quality",
        "margin",
        "split.seed",
        "cost_estimated",
        "status",
    ),
    column_config={
        "routers": st.column_config.TextColumn("routers", width="large"),
        "best_single_quality": st.column_config.NumberColumn("best model quality", format="%.3f"),
        "oracle_quality": st.column_config.NumberColumn("oracle quality", format="%.3f"),
    },
)
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
st.caption(
    "Savings in percent of the best single model's cost, as on the Compare page: **at parity** is read off "
    "the test frontier; **test savings** is at the operating point chosen on validation, measured on test."
)
st.dataframe(
    services.router_runs_table(children),
    hide_index=True,
    width="stretch",
    key="exp_children",
    column_config={
        "savings_at_parity_%": None,  # shown with its interval in the next column
        "parity_reached_%": st.column_config.NumberColumn("parity reached", format="%.0f%%"),
        "aiq": st.column_config.NumberColumn("AIQ", format="%.4f"),
        "test $ / 1k": st.column_config.NumberColumn("test $ / 1k", format="$%.4f"),
        "run_id": st.column_config.TextColumn("run id", width="small"),
        "parent_run_id": None,
    },
)

st.subheader("Frontiers overlaid")
st.caption("Each router keeps its colour from the Compare page; line dashes tell the evaluations apart.")
curves = {}
for r in children.itertuples():
    frame = services.run_frontier(r.run_id)
    if not frame.empty:
        curves[f"{r.router} @ {r.evaluation} ({r.parent_run_id[:6]})"] = (r.router, r.parent_run_id, frame)
if curves:
    st.plotly_chart(services.overlay_figure(curves), key="exp_overlay", width="stretch")
else:
    st.info("These runs logged no frontier tables.")
