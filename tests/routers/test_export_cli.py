"""``routelab export`` (from a config, or from an MLflow run of ``routelab eval``) and ``routelab serve``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evals.cli import main
from evals.formatting import POINT_VALIDATION_CHOSEN, format_interval
from routers.export import load_exported

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import small_table  # noqa: E402

CONFIG = """
name = "export-cli-test"
[dataset]
source = "{source}"
[split]
fractions = [0.5, 0.25, 0.25]
seed = 0
stratify = true
[evaluation]
n_points = 40
n_resamples = 100
[target]
kind = "parity"
value = 0.0
[[routers]]
name = "category"
[[routers]]
name = "knn"
label = "knn-small"
params = {{ encoder = "hash-bow-256", k = 3 }}
[[routers]]
name = "oracle"
"""


@pytest.fixture()
def config(tmp_path):
    source = tmp_path / "outcomes.parquet"
    small_table(n_per_cat=40).to_parquet(source)
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG.format(source=source.as_posix()))
    return path


def test_export_from_config_calibrates_on_validation_and_records_the_measurement(config, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", "--config", str(config), "--router", "category", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    m = doc["measurement"]
    assert m["n_test"] == 30 and m["split"] == "test" and "calibrated on validation" in m["operating_point"]
    assert m["quality"]["low"] <= m["quality"]["value"] <= m["quality"]["high"]
    assert m["point"] == POINT_VALIDATION_CHOSEN
    exported = load_exported(out)
    assert exported.manifest["measurement"] == m
    assert exported.manifest["router"]["name"] == "category"
    # The category router at parity picks per category: cheap for easy, mid for medium, big for hard.
    assert exported.route(["x", "y", "z"], categories=["easy", "medium", "hard"]) == ["cheap", "mid", "big"]
    readme = (out / "README.md").read_text()
    # One story per number (issue 14): the README says which point it is and prints the CLI's intervals.
    assert "95% CI" in readme and f"point: {POINT_VALIDATION_CHOSEN}" in readme and "(n=30)" in readme
    sav = exported.measurement.savings
    assert f"savings {format_interval(sav, pct=True)}" in readme


def test_export_from_config_with_lam_label_and_errors(config, tmp_path, capsys):
    out = tmp_path / "knn"
    assert (
        main(["export", "--config", str(config), "--router", "knn-small", "--lam", "0.0", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "exported to" in text and "savings" in text and "n=30" in text
    exported = load_exported(out)
    assert exported.lam == 0.0 and set(exported.route(list(small_table().prompts))) == {"cheap"}
    assert (
        main(
            [
                "export",
                "--config",
                str(config),
                "--router",
                "nope",
                "--lam",
                "1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "no router labelled 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--config",
                str(config),
                "--router",
                "oracle",
                "--lam",
                "1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "not exportable" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--config",
                str(config),
                "--router",
                "category",
                "--target",
                "cheap:1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "KIND:VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_export_from_an_mlflow_run_refits_and_checks_the_logged_numbers(
    config, tmp_path, monkeypatch, capsys
):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(config), "--quiet", "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr()
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`routelab.kind` = 'router'"
    )
    child = next(r for r in runs if r.data.params.get("label") == "knn-small")
    parent_id = child.data.tags["mlflow.parentRunId"]
    out = tmp_path / "from-run"
    assert main(["export", "--run-id", child.info.run_id, "--out", str(out), "--json"]) == 0, err
    m = json.loads(capsys.readouterr().out)["measurement"]
    exported = load_exported(out)
    assert exported.lam == pytest.approx(child.data.metrics["calibrated_lam"])
    assert exported.manifest["router"]["params"]["k"] == 3 and exported.manifest["router"]["name"] == "knn"
    assert m["quality"]["value"] == pytest.approx(child.data.metrics["test_quality"])
    assert m["extra"]["mlflow_run_id"] == child.info.run_id
    # A parent run needs --router; the label picks the child.
    assert main(["export", "--run-id", parent_id, "--out", str(tmp_path / "p")]) == 2
    assert "pass --router" in capsys.readouterr().err
    assert main(["export", "--run-id", parent_id, "--router", "category", "--out", str(tmp_path / "p")]) == 0
    # A run whose logged numbers the refit cannot reproduce is refused (the data or code changed since).
    with mlflow.start_run(run_id=child.info.run_id):
        mlflow.log_metric("test_quality", 0.123)
    assert main(["export", "--run-id", child.info.run_id, "--out", str(tmp_path / "bad")]) == 2
    assert "does not reproduce" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_serve_refuses_to_start_without_client_keys(config, tmp_path, capsys, monkeypatch):
    out = tmp_path / "exp"
    assert (
        main(["export", "--config", str(config), "--router", "category", "--lam", "0.01", "--out", str(out)])
        == 0
    )
    monkeypatch.delenv("ROUTELAB_PROXY_KEYS", raising=False)
    assert main(["serve", str(out), "--port", "1"]) == 2
    assert "--no-auth" in capsys.readouterr().err
    (out / "evil.py").write_text("import os")
    monkeypatch.setenv("ROUTELAB_PROXY_KEYS", "k")
    assert main(["serve", str(out), "--port", "1"]) == 2
    assert "unexpected file" in capsys.readouterr().err
