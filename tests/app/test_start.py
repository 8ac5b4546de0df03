"""Start page: opens on the default task set, shows models with intervals, accepts or rejects uploads."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_fixtures import APP, TIMEOUT  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest


def _start(app_env: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def test_opens_on_default_task_set(app_env: Path) -> None:
    at = _start(app_env)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Samples": "120", "Models": "4", "Categories": "3", "Costs": "ESTIMATED"}
    assert any("Costs are ESTIMATED" in w.value for w in at.warning)
    models = at.dataframe[0].value
    assert list(models["model"])[0] == "huge-llm"  # sorted by quality, best first
    assert set(models["n"]) == {120}
    assert (models["ci_low"] <= models["quality"]).all() and (models["quality"] <= models["ci_high"]).all()
    assert (models["cost"] == "ESTIMATED").all()
    # the cheapest model costs least per 1k requests
    cheap = models.set_index("model")["cost_per_1k_usd"]
    assert cheap["small-llm"] < cheap["mid-llm"] < cheap["big-llm"] < cheap["huge-llm"]


def test_upload_valid_file_switches_task_set(app_env: Path) -> None:
    at = _start(app_env)
    csv = "sample_id,model,score,cost_usd,category,prompt\n" + "".join(
        f"q{i},m{j},{(i + j) % 2},{0.001 * (j + 1)},c{i % 2},prompt {i}\n" for i in range(5) for j in range(2)
    )
    at.file_uploader(key="start_upload").upload("mine.csv", csv.encode(), "text/csv")
    at.run()
    assert not at.exception, at.exception
    assert any("Loaded mine.csv: 5 samples x 2 models" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == "5" and metrics["Models"] == "2" and metrics["Costs"] == "measured"
    written = list((app_env / "cache" / "uploads").glob("mine-*.parquet"))
    assert len(written) == 1


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("bad.csv", "sample_id,model,score,cost_usd\nq1,m1,1.5,0.01\n", "outside [0, 1]"),
        ("bad.csv", "sample_id,model,cost_usd\nq1,m1,0.01\n", "missing required column(s) ['score']"),
        (
            "bad.jsonl",
            '{"sample_id": "q1", "model": "m1", "score": 1, "cost_usd": 0.1}\n{oops\n',
            "line 2: malformed JSON",
        ),
        ("bad.parquet", "not a parquet file", "bad.parquet"),
    ],
)
def test_bad_upload_is_rejected_and_nothing_written(app_env: Path, name: str, body: str, expected: str) -> None:
    at = _start(app_env)
    at.file_uploader(key="start_upload").upload(name, body.encode(), "text/plain")
    at.run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Upload rejected" in errors and expected in errors and name in errors
    if "outside" in expected:
        # the one outcome-file parser's words (datasets/FORMAT.md): the file's line, not a row index
        assert "line 2" in errors and "'score'" in errors
    # still on the default task set, and nothing was written
    assert {m.label: m.value for m in at.metric}["Samples"] == "120"
    assert not (app_env / "cache" / "uploads").exists()


def test_upload_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import services
    from app.services import sources
    from evals.exceptions import SchemaError

    monkeypatch.setattr(sources, "MAX_UPLOAD_MB", 0.001)
    with pytest.raises(SchemaError, match="over the 0.001 MB upload limit"):
        services.parse_outcome_file("big.csv", b"x" * 2000)


def test_config_binds_loopback_and_limits_uploads() -> None:
    import tomllib

    from app import services

    config = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["maxUploadSize"] == services.MAX_UPLOAD_MB
