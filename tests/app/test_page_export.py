"""Export page: pick a router and an operating point, write the folder, show files and README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_fixtures import APP, TIMEOUT, frame_with, run_compare  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest

from app import services


def test_without_a_comparison_it_points_to_compare(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/export.py").run()
    assert not at.exception, at.exception
    assert "Run a comparison" in at.info[0].value


@pytest.mark.slow
def test_export_from_comparison_matches_measured_decisions(app_env: Path) -> None:
    at = run_compare(["category", "random-mix"])
    at.switch_page("app_pages/export.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="exp_router").set_value("category").run()
    at.radio(key="exp_point").set_value("custom").run()
    at.select_slider(key="exp_custom").set_value(0).run()
    metrics = {m.label: m.value for m in at.metric}
    assert "$ per 1k requests (ESTIMATED)" in metrics
    # the tiles hold short values (a long "value [low, high]" was cut off); the intervals are in a table below
    assert all(len(v) <= 8 and "[" not in v for v in metrics.values()), metrics
    table = next(m.value for m in at.markdown if "value [95% CI]" in m.value)
    assert f"| quality | {metrics['Quality']} [" in table and "% [" in table
    out = app_env / "exports" / "cat"
    at.text_input(key="exp_dir").set_value(str(out)).run()
    at.button(key="exp_go").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == [f"Wrote {out}"]
    files = set(frame_with(at, "bytes")["file"])
    assert {"router.json", "arrays.npz", "runtime.py", "README.md"} <= files
    manifest = json.loads((out / "router.json").read_text())
    assert manifest["router"]["name"] == "category"
    assert manifest["measurement"]["n_test"] == 24 and manifest["measurement"]["cost_estimated"] is True
    assert any("Exported router" in m.value for m in at.markdown)  # the README is shown

    # the exported module routes the test prompts exactly as measured at that operating point
    from routers.export import load_exported

    exported = load_exported(out)
    lam = manifest["operating_point"]["lam"]

    state = at.session_state["cmp_state"]
    result = services.run_compare(state["source"], state["specs"], state["settings"])
    test = services.test_table(state["source"], state["settings"])
    measured, _, _ = result.router("category").frontier.policy.outcomes(lam)
    routed = exported.route(list(test.prompts), lam, categories=[str(c) for c in test.categories])
    assert routed == [test.models[i] for i in measured]

    # exporting again to the same folder needs the overwrite box
    at.button(key="exp_go").click().run()
    assert "already exists" in at.error[0].value
    at.checkbox(key="exp_overwrite").check().run()
    at.button(key="exp_go").click().run()
    assert not at.error


@pytest.mark.slow
def test_export_from_mlflow_run(app_env: Path, mlflow_store: Path) -> None:
    run_compare(["category"], log=True)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)  # a new session: only MLflow knows the run
    at.run()
    at.switch_page("app_pages/export.py").run()
    at.radio(key="exp_origin").set_value("mlflow").run()
    assert not at.exception, at.exception
    assert any("the same router" in s.value for s in at.success)
    out = app_env / "from-run"
    at.text_input(key="exp_dir").set_value(str(out)).run()
    at.button(key="exp_go").click().run()
    assert not at.exception, at.exception
    assert (out / "router.json").is_file()
