"""Compare: fit routers on the train split, sweep them on test, rank them by savings at parity."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from app import services
from evals.exceptions import WorkbenchError
from evals.formatting import format_interval

st.title("Compare routers")
source = services.current_source()
try:
    table = services.load_table(source)
except WorkbenchError as exc:
    st.error(f"**Could not load task set**: {exc}")
    st.stop()
st.caption(
    f"Task set **{table.card.name}**: {table.n_samples:,} samples x {table.n_models} models. Routers are "
    f"fitted on {services.SPLIT_FRACTIONS[0]:.0%} of the samples and measured on a held-out "
    f"{services.SPLIT_FRACTIONS[2]:.0%} "
    "(the same split and metrics as `routelab eval`)."
)
if table.cost_estimated:
    st.warning(
        "Costs in this task set are **ESTIMATED** (not billed usage); so are the savings below.",
        icon=":material/warning:",
    )


def _param_widget(router: str, param: str, default: Any, models: tuple[str, ...]) -> Any:
    """One input per constructor parameter, typed from its default value."""
    key = f"cmp_p_{router}_{param}"
    if param == "encoder" and isinstance(default, str):
        choices = services.encoder_choices()
        choices = choices if default in choices else [default, *choices]
        return st.selectbox(
            param,
            choices,
            index=choices.index(default),
            key=key,
            format_func=lambda n: f"{n}: {services.ENCODER_NOTES[n]}" if n in services.ENCODER_NOTES else n,
        )
    if isinstance(default, bool):
        return st.checkbox(param, default, key=key)
    if isinstance(default, int):
        return int(st.number_input(param, value=default, step=1, key=key))
    if isinstance(default, float):
        return float(st.number_input(param, value=default, format="%g", key=key))
    if default is None and param in services.MODEL_PARAMS:
        picked = st.selectbox(param, ["(default)", *models], key=key)
        return None if picked == "(default)" else picked
    if isinstance(default, str):
        return st.text_input(param, default, key=key)
    text = st.text_input(f"{param} (JSON; empty = default)", "" if default is None else json.dumps(default), key=key)
    if not text.strip():
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a plain string (a path, a name)


# ------------------------------------------------------------------------------------------ choose routers
names = [n for n in services.router_names() if n != "oracle"]  # the oracle is drawn as a reference anyway
defaults = [n for n in services.default_routers() if n in names]
chosen = st.multiselect(
    "Routers",
    names,
    default=defaults,
    key="cmp_routers",
    help="Every registered router. The oracle, single models and a random mix are always drawn. Embedding "
    "routers use the fast `minilm-static` encoder unless you pick another in their parameters.",
)

with st.expander("Settings: models, samples, split, parity margin", expanded=False):
    models = st.multiselect("Models", list(table.models), default=list(table.models), key="cmp_models")
    c1, c2, c3, c4 = st.columns(4)
    max_samples = int(c1.number_input("Max samples (0 = all)", 0, table.n_samples, 0, step=500, key="cmp_max"))
    seed = int(c2.number_input("Split seed", 0, 10**6, 0, key="cmp_seed"))
    margin = float(
        c3.number_input("Parity margin (quality points)", 0.0, 0.2, 0.005, step=0.001, format="%.3f", key="cmp_margin")
    )
    n_resamples = int(c4.number_input("Bootstrap resamples", 100, 5000, 1000, step=100, key="cmp_resamples"))
    log_runs = st.checkbox("Log each run to MLflow (like `routelab eval`)", True, key="cmp_log")

specs: list[dict[str, Any]] = []
for name in chosen:
    defaults_p = services.router_defaults(name)
    with st.expander(f"{name}: {services.router_description(name)}", expanded=False):
        params = {p: _param_widget(name, p, v, tuple(models)) for p, v in sorted(defaults_p.items())}
    specs.append(services.make_spec(name, params))

if len(models) < 2:
    st.error("Pick at least two models to route between.")
    st.stop()
settings = services.CompareSettings(
    models=None if list(models) == list(table.models) else tuple(models),
    max_samples=max_samples or None,
    split_seed=seed,
    margin=margin,
    n_resamples=n_resamples,
)


def _request_stop() -> None:
    st.session_state["cmp_stopped"] = True


# ------------------------------------------------------------------------------------------ run
if st.session_state.pop("cmp_stopped", False):
    st.warning(
        "Stopped. Routers evaluated before the stop and every prompt already embedded are cached: "
        "the next run continues from there.",
        icon=":material/stop_circle:",
    )
if st.button("Run comparison", type="primary", key="cmp_run", disabled=not specs):
    bar = st.progress(0.0, text="Starting...")
    # Clicking Stop reruns the page; Streamlit interrupts this run at its next progress update.
    st.button("Stop", key="cmp_stop", icon=":material/stop:", on_click=_request_stop)
    try:
        result = services.run_compare(source, specs, settings, progress=bar.progress)
    except WorkbenchError as exc:
        bar.empty()
        st.error(f"**Comparison failed**: {exc}", icon=":material/error:")
        st.stop()
    bar.empty()
    st.session_state["cmp_state"] = {
        "source": source,
        "specs": specs,
        "settings": settings,
        "run_id": None,
        "log_pending": log_runs,
    }

state = st.session_state.get("cmp_state")
if not state or state["source"] != source:
    st.info("Choose routers and press **Run comparison**. Fitted routers are cached, so re-runs are instant.")
    st.stop()

# ------------------------------------------------------------------------------------------ show
# Everything below reads cached results: redraws do not refit or rescore.
result = services.run_compare(state["source"], state["specs"], state["settings"])
points = {r.label: services.point_table(state["source"], r.spec, state["settings"]) for r in result.routers}
singles = services.single_model_points(state["source"], state["settings"])
best = result.best_single
for warning in services.result_warnings(result):
    st.warning(warning, icon=":material/warning:")
st.markdown(
    f"Test split: **n = {result.n_test:,}** samples (train {result.n_train:,}, validation "
    f"{result.n_validation:,}). Best single model **{best['name']}**: quality "
    f"{format_interval(best['quality_ci'])} at ${best['cost_per_1k']:.4f} "
    f"per 1k requests{' (ESTIMATED)' if result.cost_estimated else ''}; "
    f"oracle quality {result.oracle['quality']:.3f}."
)
logged = st.empty()
if state.get("run_id"):
    logged.caption(f"Logged to MLflow run `{state['run_id']}` in {services.tracking_label()}.")

st.plotly_chart(services.compare_figure(result, points, singles), key="cmp_frontier", width="stretch")

st.subheader("Savings at parity")
st.caption(
    "Read off the test frontier: the share of the best single model's cost saved at the cheapest operating "
    f"point whose quality is within {result.config.margin:g} of it, in percent, with a paired-bootstrap 95% "
    "interval over the n test samples (the parity point is re-chosen in every resample; `—` where a bound "
    "does not exist because parity is often missed)."
)
st.dataframe(
    services.ranking_frame(result),
    key="cmp_ranking",
    hide_index=True,
    width="stretch",
    column_order=(
        "router",
        "savings_at_parity_95ci",
        "reached_in_%_of_resamples",
        "quality_at_parity_text",
        "cost_per_1k_at_parity_text",
        "savings_at_95_text",
        "savings_at_99_text",
        "aiq",
        "n",
    ),
    column_config={
        # Narrow columns with short headers (the help says the rest), so the table fits the page's width.
        "router": st.column_config.TextColumn("router", width="medium"),
        "savings_at_parity_95ci": st.column_config.TextColumn(
            "savings at parity [95% CI]", width="medium", help="read off the test frontier"
        ),
        "reached_in_%_of_resamples": st.column_config.NumberColumn(
            "reached", format="%.0f%%", width="small", help="share of bootstrap resamples that reach parity"
        ),
        "quality_at_parity_text": st.column_config.TextColumn("quality", width="small", help="at parity"),
        "cost_per_1k_at_parity_text": st.column_config.TextColumn(
            "$ / 1k", width="small", help="cost per 1,000 requests at parity"
        ),
        "savings_at_95_text": st.column_config.TextColumn(
            "@95%", width="small", help="savings at 95% of the best model's quality"
        ),
        "savings_at_99_text": st.column_config.TextColumn(
            "@99%", width="small", help="savings at 99% of the best model's quality"
        ),
        "aiq": st.column_config.NumberColumn(
            "AIQ", format="%.4f", width="small", help="average improvement in quality over the cost range"
        ),
        "n": st.column_config.NumberColumn("n", format="%d", width="small", help="test samples"),
    },
)
with st.expander("At the operating point chosen on validation (what a deployment should expect)"):
    st.dataframe(services.display_frame(result.summary_frame()), hide_index=True, width="stretch", key="cmp_summary")

# Logged last, so that the chart is on screen before MLflow (whose first use creates its database) runs.
if state.get("log_pending"):
    state["log_pending"] = False
    try:
        with st.spinner("Logging the runs to MLflow..."):
            state["run_id"] = services.log_to_mlflow(result)
    except WorkbenchError as exc:
        st.warning(f"Not logged to MLflow: {exc}")
    else:
        logged.caption(f"Logged to MLflow run `{state['run_id']}` in {services.tracking_label()}.")
