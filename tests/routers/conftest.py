"""Fixtures shared by the router tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# ``table`` (the small three-model table) and ``replay`` (a replay server of it on loopback), module-scoped, for
# the proxy tests; a test module that defines its own fixture of the same name uses that one instead.
from proxy_helpers import replay, table  # noqa: E402,F401


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store and experiment under ``tmp_path`` (the tracking URI, reset afterwards)."""
    import mlflow
    import mlflow.utils.environment as env

    # MLflow compares the model's pinned requirements with this environment (seconds; warnings only).
    monkeypatch.setattr(env, "warn_dependency_requirement_mismatches", lambda reqs: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("routers-test", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    yield uri
    mlflow.set_tracking_uri(None)
