"""Across pages: warnings where no conclusion can be drawn, one unit for savings, one colour per router."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from app_fixtures import APP, TIMEOUT, frame_with, make_table, run_compare  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest

from evals.figures import router_color


def _warnings(at: AppTest) -> str:
    return " | ".join(w.value for w in at.warning)


def test_small_test_split_is_warned_on_compare(app_env: Path) -> None:
    at = run_compare(["category"])
    # the toy table's test split has 24 samples, below the documented minimum of 100
    assert "the test split has only 24 samples (minimum 100" in _warnings(at)
    assert at.get("plotly_chart")  # still drawn: the warning says how far to trust it


@pytest.mark.slow
def test_model_missing_from_most_samples_is_warned(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = make_table(n_samples=150).frame
    # a fifth model that answered only 40 of the 150 samples: most samples must be left out to compare it
    rare = frame[(frame["model"] == "mid-llm") & (frame["sample_id"] < "s0040")].assign(model="rare-llm")
    path = tmp_path / "gappy.csv"
    pd.concat([frame, rare], ignore_index=True).to_csv(path, index=False)
    monkeypatch.setenv("ROUTELAB_APP_DEFAULT_SOURCE", str(path))
    at = run_compare(["category"])
    text = _warnings(at)
    assert "110 of 150 samples (73%) were left out" in text and "missing from most samples" in text


@pytest.mark.slow
def test_savings_unit_and_router_colours_agree_across_pages(app_env: Path, mlflow_store: Path) -> None:
    routers = ["category", "random-mix"]
    at = run_compare(routers, log=True)
    ranking = frame_with(at, "savings_at_parity_95ci").set_index("router")
    compare_spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    compare_colours = {t["name"]: t["line"]["color"] for t in compare_spec["data"] if t.get("name") in routers}
    assert compare_colours == {r: router_color(r) for r in routers}
    assert len(set(compare_colours.values())) == len(routers)

    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    logged = frame_with(at, "savings at parity [95% CI]").set_index("router")
    for r in routers:
        # one unit (percent) and one format: the same interval text on both pages for the same run
        assert logged.loc[r, "savings at parity [95% CI]"] == ranking.loc[r, "savings_at_parity_95ci"]
        numbers = re.findall(r"-?\d+(?:\.\d+)?%?", ranking.loc[r, "savings_at_parity_95ci"])
        assert all(n.endswith("%") for n in numbers), numbers
    overlay = json.loads(at.get("plotly_chart")[0].proto.spec)
    for t in overlay["data"]:
        name = t.get("name", "")
        if " @ " in name and not name.endswith(" hull"):
            assert t["line"]["color"] == compare_colours[name.split(" @ ")[0]], name
    # single models are labelled on Experiments too (annotations, readable over the curves)
    labels = sorted(a["text"] for a in overlay["layout"]["annotations"])
    assert labels == ["big-llm", "huge-llm", "mid-llm", "small-llm"]


@pytest.mark.slow
def test_no_literal_none_in_tables(app_env: Path) -> None:
    at = run_compare(["category", "random-mix", "single"])
    for frame in at.dataframe:
        visible = list(frame.proto.column_order) or list(frame.value.columns)  # what the page shows
        shown = frame.value[visible]
        assert not shown.isna().to_numpy().any(), shown  # a missing value is drawn as "None" by Streamlit
        assert not shown.astype(str).isin(["None", "nan"]).to_numpy().any(), shown


@pytest.mark.slow
def test_log_cost_axis_has_decade_labels(app_env: Path) -> None:
    at = run_compare(["category"])
    axis = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["xaxis"]
    # the toy costs span 0.16 to 24 $ per 1k: a log axis with one labelled tick per decade
    assert axis["type"] == "log" and axis["dtick"] == 1 and "log scale" in axis["title"]["text"]


def test_before_any_run_it_says_so_on_every_reading_page(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    for page in ("app_pages/drilldown.py", "app_pages/export.py"):
        at.switch_page(page).run()
        assert not at.exception, at.exception
        assert "Run a comparison" in at.info[0].value
