"""Start: the task set in use, its models, prices and quality; pick another task set or upload outcomes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import services
from evals.exceptions import WorkbenchError

st.title("RouteLab")
st.markdown(
    "Which model should answer each request? Pick a **task set** of graded model outcomes, then compare "
    "routers on the **Compare** page: how much each one saves at the quality of the best single model."
)

# ------------------------------------------------------------------------------------------ choose the data
choices = services.available_sources()
current = services.current_source()
if current not in choices:
    choices = [current, *choices]
left, right = st.columns([2, 3])
with left:
    picked = st.selectbox(
        "Task set",
        choices,
        index=choices.index(current),
        key="start_source",
        format_func=services.source_label,
        help="Built-in task sets are read from the public-data folder; no network or API key needed.",
    )
    if picked != current:
        services.set_source(picked)
        current = picked
with right:
    upload = st.file_uploader(
        f"...or upload your own outcome file (long format, at most {services.MAX_UPLOAD_MB} MB)",
        type=["parquet", "csv", "jsonl", "ndjson", "json"],
        key="start_upload",
        help="One row per (sample, model). Required columns: sample_id, model, score (0..1), cost_usd. "
        "Optional: task, category, prompt, reference, provider, response, cost_estimated, input_tokens, "
        "output_tokens, latency_s, grader.",
    )
    if upload is not None:
        data = upload.getvalue()
        # Validate fully in memory first; only a valid table is written (to the user cache).
        try:
            uploaded = services.parse_outcome_file(upload.name, data)
        except WorkbenchError as exc:
            st.error(f"**Upload rejected**: {exc}", icon=":material/error:")
        else:
            path = str(services.save_upload(uploaded, data, upload.name))
            if path != current:
                services.set_source(path)
                current = path
            st.success(f"Loaded {upload.name}: {uploaded.n_samples:,} samples x {uploaded.n_models} models.")

# ------------------------------------------------------------------------------------------ the task set card
try:
    table = services.load_table(current)
except WorkbenchError as exc:
    st.error(f"**Could not load task set {services.source_label(current)!r}**: {exc}", icon=":material/error:")
    st.stop()

card = table.card
st.header(f"Task set: {card.name}")
cols = st.columns(4)
cols[0].metric("Samples", f"{table.n_samples:,}")
cols[1].metric("Models", table.n_models)
cols[2].metric("Categories", len(set(table.categories) - {""}) or "none")
cols[3].metric("Costs", "ESTIMATED" if table.cost_estimated else "measured")

if table.cost_estimated:
    # The card's note may itself start with "ESTIMATED:"; say it once.
    note = card.cost_note or "the source gives no billed usage; costs come from text lengths and prices"
    note = note.removeprefix("ESTIMATED:").removeprefix("Estimated:").strip().rstrip(". ")
    st.warning(
        f"**Costs are ESTIMATED**, not measured: {note}. Savings are only as good as this estimate.",
        icon=":material/warning:",
    )
else:
    st.info("Costs are **measured** (billed usage of each call x the price table).", icon=":material/paid:")

with st.expander("Dataset card", expanded=False):
    for label, value in (
        ("Source", card.source),
        ("License", card.license),
        ("What the task is", card.description),
        ("Grading", card.grading),
        ("Cost", card.cost_note),
    ):
        if value:
            st.markdown(f"**{label}**: {value}")
    if card.extra:
        st.json(card.extra, expanded=False)

# ------------------------------------------------------------------------------------------ the models
st.subheader("Models")
overview = services.overview_of(current)
st.caption(
    f"Mean quality over n samples with a 95% confidence interval (CI low, CI high); cost per 1,000 requests in US$ "
    f"({'ESTIMATED' if table.cost_estimated else 'measured'}); list prices per 1M tokens from "
    "datasets/prices.csv."
)
# No "None" cells (a model without a list price shows "—"); narrow columns so nothing is cut off.
shown = services.display_frame(overview, digits=3)


def _num(col: str, label: str, fmt: str) -> object:
    """A number column, or a text one when display_frame turned gaps into "—"."""
    if pd.api.types.is_numeric_dtype(shown[col]):
        return st.column_config.NumberColumn(label, format=fmt, width="small")
    return st.column_config.TextColumn(label, width="small")


st.dataframe(
    shown,
    key="start_models",
    hide_index=True,
    width="stretch",
    column_config={
        "model": st.column_config.TextColumn("model", width="medium"),
        "n": st.column_config.NumberColumn("n", width="small"),
        "quality": _num("quality", "quality", "%.3f"),
        "ci_low": _num("ci_low", "CI low", "%.3f"),
        "ci_high": _num("ci_high", "CI high", "%.3f"),
        "cost_per_1k_usd": _num("cost_per_1k_usd", "$ / 1k", "%.4f"),
        "cost": st.column_config.TextColumn("cost", width="small"),
        "provider": st.column_config.TextColumn("provider", width="small"),
        "input_per_1m_usd": _num("input_per_1m_usd", "$ / 1M in", "%.3f"),
        "output_per_1m_usd": _num("output_per_1m_usd", "$ / 1M out", "%.3f"),
        "price_source": st.column_config.TextColumn("price source", width="medium"),
    },
)

cats = services.category_counts(table)
if len(cats) > 1:
    with st.expander(f"Categories ({len(cats)})"):
        st.bar_chart(cats, horizontal=True)

st.page_link("app_pages/compare.py", label="Compare routers on this task set", icon=":material/arrow_forward:")
