"""Export: write the deployable module of a router at an operating point, and show what was written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from app import services
from evals.exceptions import WorkbenchError
from evals.formatting import format_interval, format_number, format_pct

st.title("Export a router")
st.markdown(
    "Writes a self-contained folder: the router's spec and fitted arrays (JSON + `.npz`, no pickle), a small "
    "runtime with `route(prompt) -> model`, an OpenAI-compatible proxy config and an MLflow pyfunc. It makes "
    "exactly the decisions measured here."
)

origin = st.radio(
    "Router from",
    ["comparison", "mlflow"],
    horizontal=True,
    key="exp_origin",
    format_func={"comparison": "this session's comparison", "mlflow": "an MLflow run"}.get,
)

result = None
if origin == "comparison":
    state = st.session_state.get("cmp_state")
    if not state:
        st.info("Run a comparison on the **Compare** page first, or pick an MLflow run.")
        st.page_link("app_pages/compare.py", label="Go to Compare", icon=":material/arrow_forward:")
        st.stop()
    result = services.run_compare(state["source"], state["specs"], state["settings"])
else:
    try:
        exps = services.list_experiments()
    except Exception as exc:  # noqa: BLE001 - an unreachable store
        st.error(f"**Cannot read MLflow at {services.tracking_uri()}**: {exc}")
        st.stop()
    if exps.empty:
        st.info(f"No RouteLab runs at {services.tracking_uri()}.")
        st.stop()
    exp_name = st.selectbox("Task set", exps["name"].tolist(), key="exp_x_experiment")
    runs = services.list_evaluations(exps.loc[exps["name"] == exp_name, "experiment_id"].iat[0])
    if runs.empty:
        st.info("No evaluation runs in this experiment.")
        st.stop()
    parent = st.selectbox(
        "Evaluation run",
        runs["run_id"].tolist(),
        key="exp_x_run",
        format_func={r.run_id: f"{r.run_name} - {r.started} ({r.routers})" for r in runs.itertuples()}.get,
    )
    children = services.router_runs([parent])
    child = st.selectbox(
        "Router run",
        children["run_id"].tolist(),
        key="exp_x_child",
        format_func=dict(zip(children["run_id"], children["router"], strict=True)).get,
    )
    try:
        source, settings = services.settings_from_run(parent)
        spec = services.spec_from_run(child)
        with st.spinner("Refitting the run's router on its task set and split..."):
            result = services.run_compare(source, [spec], settings)
    except WorkbenchError as exc:
        st.error(f"**Cannot rebuild this run's router**: {exc}")
        st.stop()
    logged = children.set_index("run_id").loc[child]
    if "aiq" in logged and np.isfinite(logged["aiq"]):
        same = bool(np.isclose(logged["aiq"], result.routers[0].aiq, rtol=1e-6, atol=1e-9))
        (st.success if same else st.warning)(
            f"Refitted router AIQ {result.routers[0].aiq:.5f} vs logged {logged['aiq']:.5f}: "
            + ("the same router." if same else "DIFFERENT (data or code changed since the run).")
        )

exportable = [r for r in result.routers if getattr(services.router_class(r.spec["name"]), "exportable", True)]
if not exportable:
    st.error("None of these routers can be exported (the oracle needs the answers it routes).")
    st.stop()
labels = [r.label for r in exportable]
label = st.selectbox("Router", labels, key="exp_router")
rr = exportable[labels.index(label)]

# ------------------------------------------------------------------------------------------ operating point
kind = st.radio(
    "Operating point",
    ["calibrated", "parity", "custom"],
    horizontal=True,
    key="exp_point",
    format_func={
        "calibrated": "calibrated on validation",
        "parity": "cheapest at parity on test",
        "custom": "pick on the frontier",
    }.get,
)
curve = rr.frontier.router
if kind == "custom":
    idx = st.select_slider(
        "Point on the frontier",
        options=list(range(len(curve))),
        value=len(curve) // 2,
        key="exp_custom",
        format_func=lambda i: f"${curve.cost_per_1k[i]:.4f}/1k, quality {curve.quality[i]:.3f}",
    )
    lam = float(curve.lam[idx])
else:
    if kind == "parity" and rr.parity is None:
        st.warning("This router never reaches parity on test; using the calibrated point.")
    lam = services.operating_lam(rr, kind)

summary = services.point_summary(result, rr, lam, kind)
est = " (ESTIMATED)" if summary["cost_estimated"] else ""
reference = summary["reference_model"]


def _iv(key: str, *, pct: bool = False, digits: int | None = None) -> str:
    return format_interval(summary[key], pct=pct, digits=digits)


# Short values in the metric tiles (a long "value [low, high]" is cut off there); the intervals below.
cols = st.columns(3)
cols[0].metric("Quality", format_number(summary["quality"]["value"], 3), help=f"95% CI: {_iv('quality')}")
cols[1].metric(
    f"$ per 1k requests{est}",
    format_number(summary["cost_per_1k_usd"]["value"], 4),
    help=f"95% CI: {_iv('cost_per_1k_usd', digits=4)}",
)
cols[2].metric(
    f"Savings vs {reference}", format_pct(summary["savings"]["value"]), help=f"95% CI: {_iv('savings', pct=True)}"
)
st.markdown(
    f"| {summary['point']} | value [95% CI] |\n|---|---|\n"
    f"| quality | {_iv('quality')} |\n"
    f"| $ per 1k requests{est} | {_iv('cost_per_1k_usd', digits=4)} |\n"
    f"| savings vs {reference} | {_iv('savings', pct=True)} |"
)
st.caption(
    f"lam = {lam:.4g} $/request per +1 quality; n = {summary['n_test']:,} test prompts; traffic: "
    + ", ".join(f"{m} {s:.0%}" for m, s in sorted(summary["traffic_share"].items(), key=lambda x: -x[1]))
)

# ------------------------------------------------------------------------------------------ write
default_dir = str(Path.cwd() / "exports" / f"{rr.spec['name']}-{result.dataset}")
out_dir = st.text_input("Output folder", default_dir, key="exp_dir")
overwrite = st.checkbox("Replace an existing export in that folder", False, key="exp_overwrite")
if st.button("Export", type="primary", key="exp_go"):
    try:
        with st.spinner("Writing the export..."):
            folder = services.export(rr, result, lam, out_dir, overwrite=overwrite, point=kind)
    except WorkbenchError as exc:
        st.error(f"**Export failed**: {exc}", icon=":material/error:")
    else:
        st.session_state["exp_written"] = str(folder)

written = st.session_state.get("exp_written")
if written and Path(written).is_dir():
    folder = Path(written)
    st.success(f"Wrote {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    st.dataframe(
        [{"file": str(p.relative_to(folder)), "bytes": p.stat().st_size} for p in files],
        hide_index=True,
        key="exp_files",
    )
    st.code(
        f"from routers.export import load_exported\nrouter = load_exported({str(folder)!r})\n"
        "router.route(['What is 2 + 2?'])",
        language="python",
    )
    readme = folder / "README.md"
    if readme.is_file():
        with st.expander("README.md", expanded=True):
            st.markdown(readme.read_text(encoding="utf-8"))
