"""Experiments page: Compare-page runs are logged to MLflow and shown side by side, frontiers overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_fixtures import APP, TIMEOUT, frame_with, run_compare  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest


def test_no_runs_yet(app_env: Path, mlflow_store: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    assert "No RouteLab runs yet" in at.info[0].value
    # the store in the working folder is named as such (its absolute path would be a temporary folder here)
    assert "`mlflow.db` in the working folder" in at.caption[0].value


@pytest.mark.slow
def test_logged_runs_side_by_side(app_env: Path, mlflow_store: Path) -> None:
    at = run_compare(["category", "random-mix"], log=True)
    assert any("Logged to MLflow run" in c.value for c in at.caption)
    at.multiselect(key="cmp_routers").set_value(["single"]).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception, at.exception

    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="exp_experiment").value == "routelab/toy"
    runs = frame_with(at, "best_single_quality")
    assert len(runs) == 2 and set(runs["n_test"]) == {24}
    # the two newest runs are preselected: three router runs side by side
    children = frame_with(at, "aiq")
    assert sorted(children["router"]) == ["category", "random-mix", "single"]
    assert set(children["evaluation"]) == {"app-toy"}
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t["name"] for t in spec["data"]]
    curves = [n for n in names if n.startswith(("category @", "random-mix @", "single @"))]
    assert len([n for n in curves if not n.endswith(" hull")]) == 3  # one curve (and its hull) per router run
    assert "single models" in names

    # narrowing to one run narrows the table
    at.multiselect(key="exp_pick").set_value([runs["run_id"].iloc[0]]).run()
    assert frame_with(at, "aiq")["router"].tolist() == ["single"]
