"""Fixtures for the app tests: a small synthetic task set the app opens on, and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_fixtures import make_table  # type: ignore[import-not-found]


@pytest.fixture(scope="session")
def toy_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Parquet file of the toy table."""
    path = tmp_path_factory.mktemp("toy") / "toy.parquet"
    make_table().to_parquet(path)
    return path


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables created (creating them takes ~15 s; copying takes ms)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def mlflow_store(app_env: Path, empty_mlflow_db: Path) -> Path:
    """A ready (empty) MLflow store at the app's tracking URI, for tests that log or read runs."""
    import shutil

    shutil.copyfile(empty_mlflow_db, app_env / "mlflow.db")
    return app_env / "mlflow.db"


@pytest.fixture()
def app_env(toy_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the app at the toy table, a temporary cache and a temporary MLflow store (working folder)."""
    monkeypatch.setenv("ROUTELAB_APP_DEFAULT_SOURCE", str(toy_source))
    monkeypatch.setenv("ROUTELAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # The app builds the default encoder in the background when opened; these tests use no encoder.
    monkeypatch.setenv("ROUTELAB_APP_WARMUP", "0")
    monkeypatch.chdir(tmp_path)
    return tmp_path
