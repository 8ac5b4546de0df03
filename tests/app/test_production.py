"""Production page: pick a decision log and the export that served it; promised vs delivered, drift flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_fixtures import APP, TIMEOUT  # type: ignore[import-not-found]
from production_logs import T0, Drift, served_export  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest

from evals.formatting import format_pct


@pytest.fixture(scope="module")
def served(small_table, tmp_path_factory):
    """A knn export and 1,200 requests it served (rollout 0.5); from request 400 on, mid fails medium prompts."""
    return served_export(small_table, tmp_path_factory.mktemp("prod"), n=1200, share=0.5, epsilon=0.05,
                         shadow_rate=0.5, drift=Drift("mid", "medium", T0 + 400 * 30))


def _frame(at: AppTest, *columns: str):  # noqa: ANN202 - a DataFrame
    """The first table shown with all of ``columns``."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def _open(app_env: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/production.py").run()
    assert not at.exception, at.exception
    return at


def test_without_folders_it_asks_for_them(app_env: Path) -> None:
    at = _open(app_env)
    assert "Enter a decision-log directory" in at.info[0].value


@pytest.mark.slow
def test_it_shows_promised_vs_delivered_and_flags_the_drifting_category(app_env: Path, served) -> None:
    at = _open(app_env)
    at.text_input(key="prod_log").set_value(str(served["log"])).run()
    at.text_input(key="prod_export").set_value(str(served["folder"])).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    promised = served["measurement"].savings
    assert metrics["Promised saving"] == format_pct(promised["value"])
    assert metrics["Delivered saving"].endswith("%") and int(metrics["Drift flags"]) >= 1
    table = next(m.value for m in at.markdown if "| saving |" in m.value)
    assert format_pct(promised["low"]) in table and "quality vs reference" in table
    verdict = (at.success or at.warning)[0].value
    assert "the promised interval" in verdict
    assert any("**medium**" in w.value and "below the offline interval" in w.value for w in at.warning)
    assert not any("**easy**" in w.value for w in at.warning)
    cats = _frame(at, "category", "requests")
    assert set(cats["category"]) == {"easy", "medium", "hard"} and cats["requests"].sum() == 1200
    assert _frame(at, "hour (UTC)")["requests"].sum() == 1200
    drift = _frame(at, "flagged").set_index("category")
    assert drift.loc["medium", "flagged"] and not drift.loc["easy", "flagged"]


@pytest.mark.slow
def test_off_policy_estimates_and_bad_input(app_env: Path, served) -> None:
    at = _open(app_env)
    at.text_input(key="prod_log").set_value(str(served["log"])).run()
    at.text_input(key="prod_export").set_value(str(served["folder"])).run()
    at.text_input(key="prod_lams").set_value("0.5").run()
    assert not at.exception, at.exception
    off = _frame(at, "IPS")
    assert set(off["metric"]) == {"cost", "quality"} and off["target"].str.contains("lam = 0.5").all()
    at.text_input(key="prod_lams").set_value("cheap").run()
    assert "must be numbers" in at.error[0].value
    at.text_input(key="prod_lams").set_value("").run()
    at.text_input(key="prod_log").set_value(str(app_env / "no-such-log")).run()
    assert not at.exception and "does not exist" in at.error[0].value


@pytest.mark.slow
def test_logged_upstream_telemetry_is_tabled_per_upstream(app_env: Path, served, tmp_path: Path) -> None:
    import shutil

    from evals.production.log_reader import segment_name
    from evals.production.records import TelemetryRecord

    log = tmp_path / "log"
    shutil.copytree(served["log"], log)
    snaps = [TelemetryRecord(upstream="mid", time=T0 + 60 * k, latency_s=0.1 + 0.1 * k, error_rate=0.1 * k,
                             attempts=10 * (k + 1), answers=10 * (k + 1) - k) for k in range(3)]
    (log / segment_name(T0 + 10**6, 0)).write_text("".join(r.to_json() + "\n" for r in snaps), encoding="utf-8")
    at = _open(app_env)
    at.text_input(key="prod_log").set_value(str(log)).run()
    at.text_input(key="prod_export").set_value(str(served["folder"])).run()
    assert not at.exception, at.exception
    row = _frame(at, "upstream", "last error rate").set_index("upstream").loc["mid"]
    assert (row["snapshots"], row["attempts"]) == (3, 30)
    assert (row["last latency"], row["last error rate"], row["worst error rate"]) == ("300 ms", "20.0%", "20.0%")
