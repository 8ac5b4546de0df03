"""MLflow runs for the Compare, Experiments and Export pages, read and written through :mod:`evals.tracking`
(the app never imports mlflow itself)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pandas as pd
import streamlit as st

from app.services.compare import CompareSettings
from app.services.sources import load_table
from evals import tracking
from evals.exceptions import ConfigError

__all__ = [
    "list_evaluations",
    "list_experiments",
    "log_to_mlflow",
    "router_runs",
    "run_frontier",
    "settings_from_run",
    "spec_from_run",
    "tracking_label",
    "tracking_uri",
]

_MLFLOW_LOCK = threading.Lock()


def log_to_mlflow(result: Any) -> str:
    """Log a Compare-page evaluation exactly like ``routelab eval`` (parent run + a child per router).

    Returns:
        The parent run id.

    Raises:
        WorkbenchError: (TrackingError) when the store refuses the run.
    """
    # MLflow's fluent API keeps the active run per process and is not thread-safe; Streamlit runs each
    # session in its own thread, so two sessions must not log at once.
    with _MLFLOW_LOCK:
        return tracking.log_evaluation(result)


def tracking_uri() -> str:
    """The MLflow tracking URI in use (``MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``)."""
    return tracking.tracking_uri()


def tracking_label() -> str:
    """Where runs go, for a caption: ``mlflow.db`` in the working folder (the default), else the URI.

    The default store's absolute path says nothing a user needs (and is a temporary folder in tests and
    screenshots); a configured URI is shown as given, without any password in it.
    """
    from pathlib import Path

    uri = tracking.tracking_uri()
    if uri == f"sqlite:///{(Path.cwd() / 'mlflow.db').as_posix()}":
        return "`mlflow.db` in the working folder (`mlflow ui --backend-store-uri sqlite:///mlflow.db`)"
    return f"`{tracking.safe_uri(uri)}`"


def list_experiments() -> pd.DataFrame:
    """RouteLab experiments (one per task set, ``routelab/<dataset>``): ``experiment_id``, ``name``."""
    return pd.DataFrame(tracking.list_experiments(), columns=["experiment_id", "name"])


def list_evaluations(experiment_id: str, max_results: int = 200) -> pd.DataFrame:
    """The evaluation (parent) runs of an experiment, newest first, with their key params and metrics."""
    return pd.DataFrame(tracking.list_evaluations(experiment_id, max_results=max_results))


def router_runs(parent_ids: list[str]) -> pd.DataFrame:
    """The per-router child runs of some evaluations: params (``param.*``) and metrics side by side."""
    return pd.DataFrame(tracking.router_runs(parent_ids)) if parent_ids else pd.DataFrame()


@st.cache_data(max_entries=64, show_spinner=False)
def run_frontier(run_id: str) -> pd.DataFrame:
    """The frontier table a router run logged (``frontier/frontier.csv``); empty when it has none."""
    return tracking.run_frontier(run_id)


def settings_from_run(parent_run_id: str) -> tuple[str, CompareSettings]:
    """The task set and settings an MLflow evaluation run was made with (to refit one of its routers).

    Raises:
        WorkbenchError: when the run lacks the params RouteLab logs.
    """
    params = tracking.run_params(parent_run_id)
    if "source" not in params:
        raise ConfigError(f"MLflow run {parent_run_id} has no 'source' param: not a RouteLab evaluation")
    source = params["source"]
    models = tuple(json.loads(params["models"])) if "models" in params else None
    if models is not None and tuple(load_table(source).models) == models:
        models = None
    return source, CompareSettings(
        models=models,
        split_seed=int(json.loads(params.get("split.seed", "0"))),
        margin=float(json.loads(params.get("margin", "0.005"))),
        n_points=int(json.loads(params.get("n_points", "200"))),
        n_resamples=int(json.loads(params.get("n_resamples", "1000"))),
    )


def spec_from_run(run_id: str) -> dict[str, Any]:
    """The router spec a per-router MLflow child run logged (``router`` and ``params.*``)."""
    params = tracking.run_params(run_id)
    if "router" not in params:
        raise ConfigError(f"MLflow run {run_id} has no 'router' param: not a RouteLab router run")
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k == "params":
            out.update(json.loads(v) or {})
        elif k.startswith("params."):
            try:
                out[k[len("params.") :]] = json.loads(v)
            except json.JSONDecodeError:
                out[k[len("params.") :]] = v
    return {"name": params["router"], "params": out}
