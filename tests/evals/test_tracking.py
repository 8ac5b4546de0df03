"""MLflow tracking: the SQLite default in the working folder, and a real ``mlflow server`` on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from processes import stop_process

from evals.outcomes import DatasetCard, OutcomeTable
from evals.tracking import (
    TrackingError,
    experiment_name,
    flat_params,
    log_evaluation,
    read_router_run,
    start_run,
    tracking_uri,
)
from evals.workbench.experiment import config_from_dict, run_experiment


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        cat = ["a", "b"][i % 2]
        for model, cost, p in [("small", 0.001, {"a": 0.9, "b": 0.2}), ("large", 0.01, {"a": 0.9, "b": 0.9})]:
            rows.append(
                dict(
                    sample_id=f"s{i}",
                    category=cat,
                    prompt=f"{cat} {i}",
                    model=model,
                    score=float(rng.random() < p[cat]),
                    cost_usd=cost,
                )
            )
    table = OutcomeTable(pd.DataFrame(rows), DatasetCard(name="toy"))
    cfg = config_from_dict(
        {
            "name": "tracking-test",
            "dataset": {"source": "toy"},
            "evaluation": {"n_points": 100, "n_resamples": 200},
            "routers": [{"name": "category", "params": {"smoothing": 1.0}}, {"name": "single"}],
        }
    )
    return run_experiment(cfg, table=table)


def _check_logged(uri: str, parent_id: str) -> None:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment_name("toy"))
    assert exp is not None
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_ids=[exp.experiment_id])
    parent = runs[runs["run_id"] == parent_id].iloc[0]
    assert parent["tags.mlflow.runName"] == "tracking-test"
    assert parent["metrics.n_test"] == 24
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    assert sorted(children["tags.mlflow.runName"]) == ["category", "single"]
    cat = children[children["tags.mlflow.runName"] == "category"].iloc[0]
    assert cat["params.router"] == "category" and cat["params.params.smoothing"] == "1.0"
    assert 0 <= cat["metrics.aiq"] <= 1
    assert "metrics.test_quality_ci_low" in children.columns
    arts = [a.path for a in client.list_artifacts(cat["run_id"], "frontier")]
    assert {"frontier/frontier.csv", "frontier/frontier.json", "frontier/frontier.html"} <= set(arts)
    local = client.download_artifacts(cat["run_id"], "frontier/frontier.csv")
    assert {"cost_per_1k", "quality", "kind"} <= set(pd.read_csv(local).columns)
    run = client.get_run(parent_id)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["toy"]
    # Nothing from the environment is logged.
    logged = " ".join(f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items())
    assert "SECRET" not in logged and "sk-test" not in logged


@pytest.mark.slow
def test_sqlite_default_in_working_folder(result, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    monkeypatch.chdir(tmp_path)
    uri = tracking_uri()
    assert uri == f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    parent = log_evaluation(result)
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts").is_dir()
    _check_logged(uri, parent)


def test_a_logged_router_run_reads_back_for_a_refit(result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    config = tmp_path / "tracking-test.toml"
    config.write_text('name = "tracking-test"\n[dataset]\nsource = "toy"\n', encoding="utf-8")
    parent = log_evaluation(result, uri=uri, config_path=str(config))
    # The evaluation's run needs a router label; the error lists them.
    with pytest.raises(TrackingError, match="pass --router with one of its routers: category, single"):
        read_router_run(parent, uri=uri)
    run = read_router_run(parent, router="category", uri=uri)
    assert run.parent_run_id == parent and run.router == "category" and run.label == "category"
    assert run.params == {"smoothing": 1.0}  # decoded from the flat JSON strings
    assert run.config_name == "tracking-test.toml" and run.config_text == config.read_text(encoding="utf-8")
    assert "calibrated_lam" in run.metrics and "test_quality" in run.metrics
    # The child run id reads the same.
    assert read_router_run(run.run_id, uri=uri) == run
    with pytest.raises(TrackingError, match="not found"):
        read_router_run("0" * 32, uri=uri)


def test_experiments_open_in_mlflow_3s_machine_learning_view(result, tmp_path):
    """MLflow 3 shows an untagged experiment in its GenAI view; ours are tagged so the runs tab opens at once."""
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    log_evaluation(result, uri=uri)
    exp = MlflowClient(uri).get_experiment_by_name(f"routelab/{result.dataset}")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    # An experiment created before the tag existed gets it on its next use.
    client = MlflowClient(uri)
    client.delete_experiment_tag(exp.experiment_id, "mlflow.experimentKind")
    log_evaluation(result, uri=uri)
    assert client.get_experiment(exp.experiment_id).tags.get("mlflow.experimentKind") == "custom_model_development"


@pytest.mark.slow
def test_leftover_active_run_is_ended_not_raised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    mlflow.set_experiment("leftover")
    mlflow.start_run(run_name="crashed-caller")  # left active on purpose
    with start_run("next") as run:
        assert mlflow.active_run().info.run_id == run.info.run_id
        with start_run("child", nested=True) as child:
            assert child.info.run_id != run.info.run_id
    assert mlflow.active_run() is None


def test_flat_params():
    assert flat_params({"router": "knn", "params": {"k": 5, "w": {"a": [1, 2]}}}) == {
        "router": "knn",
        "params.k": "5",
        "params.w.a": "[1, 2]",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_mlflow_server(result, tmp_path, monkeypatch):
    port = _free_port()
    art = tmp_path / "artifacts"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(art),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not become healthy in 240 s")
            time.sleep(0.3)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        assert tracking_uri() == url
        parent = log_evaluation(result)
        _check_logged(url, parent)
        assert any(Path(art).rglob("frontier.csv"))  # artifacts went through the server to its destination
    finally:
        stop_process(proc)
        log.close()
