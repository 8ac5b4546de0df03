"""Drill down: per category and per prompt, where each router sent it, what each model answered, the grade."""

from __future__ import annotations

import streamlit as st

from app import services

st.title("Drill down")
state = st.session_state.get("cmp_state")
if not state or state["source"] != services.current_source():
    st.info("Run a comparison first: the drill-down reads the routers fitted on the **Compare** page.")
    st.page_link("app_pages/compare.py", label="Go to Compare", icon=":material/arrow_forward:")
    st.stop()

result = services.run_compare(state["source"], state["specs"], state["settings"])  # cached: no refit
test = services.test_table(state["source"], state["settings"])
labels = [r.label for r in result.routers]

point = st.radio(
    "Operating point",
    ["calibrated", "parity"],
    horizontal=True,
    key="dd_point",
    format_func={
        "calibrated": "calibrated on validation (what you would deploy)",
        "parity": "cheapest point at parity on test",
    }.get,
)
est = " (ESTIMATED)" if result.cost_estimated else ""

# ------------------------------------------------------------------------------------------ per category
st.subheader("Per category")
cats = services.category_breakdown(result, test, point)
router = st.selectbox("Router", labels, key="dd_router")
st.caption(
    f"At the {point} operating point of each router, on the test split. `ref_*` = the best single model "
    f"({result.best_single['name']}) on the same samples; `savings` = share of its cost saved, in percent{est}."
)
st.dataframe(
    cats[cats["router"] == router].drop(columns="router").assign(savings=lambda f: 100 * f["savings"]),
    hide_index=True,
    width="stretch",
    key="dd_categories",
    column_config={
        c: st.column_config.NumberColumn(c, format="%.3f")
        for c in ("quality", "ref_quality", "quality_diff", "oracle_quality")
    }
    | {"savings": st.column_config.NumberColumn("savings", format="%.1f%%")}
    | {c: st.column_config.NumberColumn(c, format="%.4f") for c in ("cost_per_1k", "ref_cost_per_1k")},
)

# ------------------------------------------------------------------------------------------ per prompt
st.subheader("Per prompt")
dec = services.decisions(result, test, point)
c1, c2 = st.columns([1, 2])
wrong_only = c1.checkbox(f"Only prompts **{router}** got wrong that the best model got right", key="dd_wrong")
categories = sorted(set(dec["category"]))
picked_cats = c2.multiselect("Categories", categories, default=[], key="dd_cats", placeholder="all categories")
view = dec
if wrong_only:
    view = view[(view[f"{router}: score"] < view["best_model_score"])]
if picked_cats:
    view = view[view["category"].isin(picked_cats)]
st.caption(f"{len(view):,} of {len(dec):,} test prompts.")
shown = view.assign(prompt=view["prompt"].str.slice(0, 160))
# Each router's choice first (the point of the page), the references next, the long prompt last.
router_cols = [f"{lb}: {what}" for lb in labels for what in ("model", "score")]
order = ["sample_id", "category", *router_cols, "best_model_score", "oracle_model", "oracle_score", "prompt"]
st.dataframe(
    shown[order],
    hide_index=True,
    width="stretch",
    key="dd_prompts",
    height=320,
    column_config={"prompt": st.column_config.TextColumn("prompt", width="large")}
    | {c: st.column_config.TextColumn(c, width="medium") for c in router_cols if c.endswith(": model")},
)

if len(view):
    sid = st.selectbox("Prompt to inspect", view["sample_id"].astype(str).tolist(), key="dd_sample")
    row = dec[dec["sample_id"].astype(str) == sid].iloc[0]
    st.markdown(f"**Category**: {row['category'] or '(none)'}")
    st.text_area("Prompt", row["prompt"], height=200, disabled=True, key="dd_prompt_text")
    reference = test.samples.set_index(test.samples["sample_id"].astype(str)).loc[sid, "reference"]
    if reference:
        st.markdown(f"**Reference answer**: `{reference}`")
    detail = services.sample_detail(test, sid)
    detail.insert(1, "routed here by", services.routed_by(row, labels, list(detail["model"])))
    # The models a router chose first, so the rows that matter are on top.
    detail = detail.sort_values("routed here by", key=lambda c: c == "—", kind="stable")
    st.dataframe(
        detail,
        hide_index=True,
        width="stretch",
        key="dd_detail",
        column_config={
            "routed here by": st.column_config.TextColumn("routed here by", width="medium"),
            "response": st.column_config.TextColumn("response", width="large"),
        },
    )
else:
    st.success("No prompt matches the filter.")
