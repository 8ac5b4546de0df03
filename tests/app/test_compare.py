"""Compare page: choose routers and params, run, see one frontier and a ranking by savings at parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_fixtures import APP, ROUTERS, TIMEOUT, frame_with, run_compare  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest


def test_before_running_it_asks_to_run(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    assert "Run comparison" in at.info[0].value
    assert not at.get("plotly_chart")
    # every registered router but the oracle (always drawn as a reference) is offered
    options = at.multiselect(key="cmp_routers").options
    assert "category" in options and "knn" in options and "oracle" not in options


def test_run_draws_frontier_and_ranking(app_env: Path) -> None:
    at = run_compare()
    ranking = frame_with(at, "savings_at_parity_%")
    assert sorted(ranking["router"]) == sorted(ROUTERS)
    assert set(ranking["n"]) == {24}  # the test split of the 120-sample toy table
    # ranked by savings at parity, best first (routers that never reach parity last)
    sav = ranking["savings_at_parity_%"].astype(float).fillna(-1e9).to_list()
    assert sav == sorted(sav, reverse=True)
    reached = ranking.dropna(subset=["savings_at_parity_%"])
    assert (reached["ci_low_%"].isna() | (reached["ci_low_%"] <= reached["savings_at_parity_%"] + 1e-9)).all()

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t.get("name") for t in spec["data"]]
    for expected in ("single models", "oracle", "random mix", *ROUTERS):
        assert expected in names, names
    router_trace = next(t for t in spec["data"] if t.get("name") == "category")
    assert "traffic:" in router_trace["hovertemplate"] and "95% CI" in router_trace["hovertemplate"]
    assert "ESTIMATED" in spec["layout"]["xaxis"]["title"]["text"]
    singles = next(t for t in spec["data"] if t.get("name") == "single models")
    assert sorted(singles["text"]) == ["big-llm", "huge-llm", "mid-llm", "small-llm"] and "error_y" in singles
    assert "Test split: **n = 24**" in " ".join(m.value for m in at.markdown)


@pytest.mark.slow
def test_params_change_the_router_and_redraw_is_cached(app_env: Path, monkeypatch) -> None:
    at = run_compare(["category"])
    first = frame_with(at, "savings_at_parity_%")
    # a different smoothing is a different router, with its own label
    at.number_input(key="cmp_p_category_smoothing").set_value(50.0).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception, at.exception
    second = frame_with(at, "savings_at_parity_%")
    assert first["router"].tolist() == ["category"]
    assert second["router"].tolist() == ["category(smoothing=50.0)"]

    # a redraw (any widget change) reuses the cached evaluation: no router is fitted again
    from routers.base import Router

    calls = []
    original = Router.fit
    monkeypatch.setattr(Router, "fit", lambda self, t: calls.append(1) or original(self, t))
    at.run()
    assert not at.exception and calls == []
    assert frame_with(at, "savings_at_parity_%")["router"].tolist() == ["category(smoothing=50.0)"]


def test_bad_param_gives_a_clear_error(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    at.multiselect(key="cmp_routers").set_value(["rules"]).run()
    at.checkbox(key="cmp_log").uncheck().run()
    at.text_input(key="cmp_p_rules_rules").set_value('[{"bogus": 1}]').run()
    at.button(key="cmp_run").click().run()
    assert not at.exception, at.exception
    assert "Comparison failed" in at.error[0].value and "unknown key(s) ['bogus']" in at.error[0].value
    assert not at.get("plotly_chart")
