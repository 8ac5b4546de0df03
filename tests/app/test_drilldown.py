"""Drill-down page: per-category table, per-prompt decisions, the 'router wrong, best model right' filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_fixtures import APP, TIMEOUT, frame_with, run_compare  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest


def test_without_a_comparison_it_points_to_compare(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/drilldown.py").run()
    assert not at.exception, at.exception
    assert "Run a comparison first" in at.info[0].value


def test_categories_prompts_and_filter(app_env: Path) -> None:
    at = run_compare(["category", "random-mix"])
    at.switch_page("app_pages/drilldown.py").run()
    assert not at.exception, at.exception

    cats = frame_with(at, "ref_quality")
    assert sorted(cats["category"]) == ["(all)", "history", "law", "math"]
    total = cats.set_index("category").loc["(all)"]
    assert total["n"] == 24 and total["n"] == cats[cats["category"] != "(all)"]["n"].sum()

    prompts = frame_with(at, "category: model")
    assert len(prompts) == 24
    assert set(prompts["category: model"]) <= {"small-llm", "mid-llm", "big-llm", "huge-llm"}
    assert {"random-mix: model", "best_model_score", "oracle_score"} <= set(prompts.columns)

    # the filter keeps exactly the prompts the chosen router got wrong and the best model got right
    expected = int((prompts["category: score"] < prompts["best_model_score"]).sum())
    at.selectbox(key="dd_router").set_value("category").run()
    at.checkbox(key="dd_wrong").check().run()
    assert not at.exception, at.exception
    filtered = frame_with(at, "category: model")
    assert len(filtered) == expected
    assert (filtered["category: score"] == 0).all() and (filtered["best_model_score"] == 1).all()
    assert f"{expected:,} of 24 test prompts." in [c.value for c in at.caption]

    if expected:
        sid = at.selectbox(key="dd_sample").value
        detail = frame_with(at, "routed here by")
        assert sorted(detail["model"]) == ["big-llm", "huge-llm", "mid-llm", "small-llm"]
        row = filtered[filtered["sample_id"] == sid].iloc[0]
        routed = detail.set_index("model").loc[row["category: model"], "routed here by"]
        assert "category" in routed
        assert all(r.startswith(m) for m, r in zip(detail["model"], detail["response"], strict=True))


@pytest.mark.slow
def test_category_filter_and_parity_point(app_env: Path) -> None:
    at = run_compare(["category"])
    at.switch_page("app_pages/drilldown.py").run()
    at.multiselect(key="dd_cats").set_value(["math"]).run()
    at.radio(key="dd_point").set_value("parity").run()
    assert not at.exception, at.exception
    prompts = frame_with(at, "category: model")
    assert len(prompts) == 8 and set(prompts["category"]) == {"math"}
