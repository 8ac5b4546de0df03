"""MLflow tracking of evaluations: the only RouteLab module that imports mlflow.

Layout of what is logged:

- the tracking URI comes from ``MLFLOW_TRACKING_URI``; without it, a SQLite file ``mlflow.db`` in the
  working folder (embedded, no server needed; its artifacts go to ``mlartifacts/`` beside it);
- one **experiment per task set** (``routelab/<dataset>``);
- one **parent run per evaluation**: the config, split and reference numbers (best single model, oracle), the
  summary JSON, the report and the dataset (logged as an input with :mod:`mlflow.data`);
- one **nested child run per router**: its spec as flat params, its summaries as metrics, and its frontier
  table (CSV and JSON), per-category table and an interactive plotly plot as artifacts.

Nothing from the environment is logged (no variables, no keys). ``mlflow.start_run`` raises a bare
``Exception`` when a run is already active; :func:`start_run` here ends a leftover run first and turns any
other failure into :class:`TrackingError`.

Example:
    >>> run_id = log_evaluation(result, report_paths=[Path("report/report.html")])   # doctest: +SKIP
    >>> # then: mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from evals.exceptions import WorkbenchError
from evals.figures import frontier_figure

__all__ = [
    "LoggedRouterRun",
    "TrackingError",
    "experiment_name",
    "flat_params",
    "log_evaluation",
    "log_production_report",
    "read_router_run",
    "safe_uri",
    "start_run",
    "tracking_uri",
]

log = logging.getLogger(__name__)


class TrackingError(WorkbenchError):
    """MLflow refused to start or log a run (the message says which and why)."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<working folder>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or f"sqlite:///{(Path.cwd() / 'mlflow.db').as_posix()}"


def experiment_name(dataset: str) -> str:
    """The experiment of a task set: ``routelab/<dataset>``."""
    return f"routelab/{dataset}"


def _artifact_location(uri: str, name: str) -> str | None:
    """For a local SQLite store: ``mlartifacts/`` beside the database file (else the server decides)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts" / name.replace("/", "_")).resolve().as_uri()
    return None


#: MLflow 3's UI opens an experiment in its GenAI view unless this tag says it holds ordinary (model) runs; with it,
#: the parent run per evaluation and its child runs per router are on the experiment's *Runs* tab at once.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def _use_experiment(uri: str, name: str) -> str:
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(name)
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(
                name, artifact_location=_artifact_location(uri, name), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        )
        if exp is not None and exp.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        mlflow.set_experiment(experiment_id=exp_id)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; report them as one
        raise TrackingError(f"cannot use MLflow experiment {name!r} at {_safe_uri(uri)}: {exc}") from exc
    return exp_id


def safe_uri(uri: str) -> str:
    """The URI without any user:password part (never print credentials)."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


_safe_uri = safe_uri  # the former private name, kept for callers that used it


@contextmanager
def start_run(run_name: str, *, nested: bool = False, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """``mlflow.start_run`` that never raises MLflow's bare ``Exception`` for a leftover active run.

    A top-level run first ends any run left active (by a crashed caller in the same process); failures are
    raised as :class:`TrackingError`. The run ends FAILED if the body raises.
    """
    if not nested:
        leftover = mlflow.active_run()
        while leftover is not None:
            log.warning("ending leftover active MLflow run %s", leftover.info.run_id)
            mlflow.end_run(status="KILLED")
            leftover = mlflow.active_run()
    try:
        run = mlflow.start_run(run_name=run_name, nested=nested, tags=tags)
    except Exception as exc:  # noqa: BLE001 - MLflow raises a bare Exception here
        raise TrackingError(f"cannot start MLflow run {run_name!r}: {exc}") from exc
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()


def flat_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts into ``a.b`` keys with string values (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(flat_params(v, f"{prefix}{k}."))
        return out
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    out[prefix[:-1] if prefix.endswith(".") else prefix] = text[:6000]  # MLflow's param length limit
    return out


def _metrics(d: dict[str, Any]) -> dict[str, float]:
    """Only the finite numbers of a flat dict (MLflow metrics must be numbers)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and v == v and abs(v) != float("inf"):
            out[k] = float(v)
    return out


def router_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The metrics of one router's child run, from its ``--json`` summary."""
    cal = summary["calibrated"]
    flat: dict[str, Any] = {
        "aiq": summary["aiq"],
        "savings_at_parity": summary["savings_at_parity"],
        "savings_at_parity_ci_low": summary["savings_at_parity_ci"][0],
        "savings_at_parity_ci_high": summary["savings_at_parity_ci"][1],
        "parity_reached_share": summary["parity_reached_share"],
        "quality_at_parity": summary["quality_at_parity"],
        "cost_per_1k_at_parity": summary["cost_per_1k_at_parity"],
        "savings_at_95pct": summary["savings_at_95pct"],
        "savings_at_99pct": summary["savings_at_99pct"],
        "calibrated_lam": cal["lam"],
        "calibrated_met": cal["met"],
        "n_points": summary["n_points"],
    }
    for split in ("validation", "test"):
        for k, v in cal[split].items():
            flat[f"calibrated_{split}_{k}"] = v
    for name, iv in summary["at_calibrated"].items():
        flat[f"test_{name}"] = iv["value"]
        flat[f"test_{name}_ci_low"] = iv["low"]
        flat[f"test_{name}_ci_high"] = iv["high"]
    ni = summary["non_inferiority"]
    flat.update({"noninferiority_p": ni["p_value"], "noninferiority_pass": ni["non_inferior"]})
    for k, v in (summary.get("two_model") or {}).items():
        flat[k] = v
    for i, t in enumerate(summary.get("targets", [])[1:], start=2):  # the first is calibrated_* above
        flat[f"target{i}_savings"] = t["at_point"]["savings"]["value"]
        flat[f"target{i}_held_on_test"] = t["held_on_test"]
    flat["calibrated_held_on_test"] = cal.get("held_on_test")
    if summary.get("aiq_common") is not None:
        flat["aiq_common"] = summary["aiq_common"]
    for k, v in summary["seconds"].items():
        flat[f"seconds_{k}"] = v
    return _metrics(flat)


def log_evaluation(
    result: Any,
    *,
    uri: str | None = None,
    report_paths: Sequence[Path] = (),
    config_path: str | None = None,
) -> str:
    """Log an :class:`~evals.workbench.experiment.EvaluationResult`: a parent run and one child run per router.

    Args:
        result: The evaluation result.
        uri: Tracking URI (default: :func:`tracking_uri`).
        report_paths: Report files to attach to the parent run.
        config_path: The config file to attach (default: the one the result was run from, if it exists).

    Returns:
        The parent run id.

    Raises:
        TrackingError: when MLflow cannot be reached or refuses the run.
    """
    uri = uri or tracking_uri()
    _use_experiment(uri, experiment_name(result.dataset))
    summary = result.to_json()
    cfg = result.config
    run_name = cfg.name or f"eval-{result.dataset}"
    try:
        with start_run(
            run_name, tags={"routelab.kind": "evaluation", "routelab.dataset": result.dataset}
        ) as parent:
            mlflow.log_params(
                flat_params(
                    {
                        "dataset": result.dataset,
                        "source": cfg.source,
                        "models": list(result.models),
                        "split.fractions": list(cfg.fractions),
                        "split.seed": cfg.split_seed,
                        "split.stratify": cfg.stratify,
                        "n_points": cfg.n_points,
                        "margin": cfg.margin,
                        "n_resamples": cfg.n_resamples,
                        "bootstrap_seed": cfg.seed,
                        "target": cfg.target.to_dict(),
                        "gates": cfg.gates,
                        "routers": [r.label for r in result.routers],
                        "cost_estimated": result.cost_estimated,
                        "incomplete_samples_dropped": summary.get("incomplete_samples_dropped", 0),
                        "split_origin": summary.get("split_origin", "seeded"),
                        "dataset_origin": result.table.card.source,
                    }
                )
            )
            mlflow.log_metrics(
                _metrics(
                    {
                        "n_train": result.n_train,
                        "n_validation": result.n_validation,
                        "n_test": result.n_test,
                        "incomplete_samples_dropped": summary.get("incomplete_samples_dropped", 0),
                        "best_single_quality": result.best_single["quality"],
                        "best_single_cost_per_1k": result.best_single["cost_per_1k"],
                        "oracle_quality": result.oracle["quality"],
                        "oracle_cost_per_1k": result.oracle["cost_per_1k"],
                    }
                )
            )
            _log_dataset(result)
            mlflow.log_dict(summary, "summary.json")
            for path in report_paths:
                mlflow.log_artifact(str(path), artifact_path="report")
            cfg_file = config_path or (cfg.path if cfg.path and Path(cfg.path).is_file() else None)
            if cfg_file:
                mlflow.log_artifact(cfg_file, artifact_path="config")
            for r, rs in zip(result.routers, summary["routers"], strict=True):
                with start_run(
                    r.label, nested=True, tags={"routelab.kind": "router", "routelab.router": r.spec["name"]}
                ):
                    mlflow.log_params(
                        flat_params(
                            {"router": r.spec["name"], "label": r.label, "params": r.spec.get("params", {})}
                        )
                    )
                    mlflow.log_metrics(router_metrics(rs))
                    _log_router_artifacts(r, frontier_figure)
            return str(parent.info.run_id)
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store or artifact failure of any kind
        raise TrackingError(f"logging to MLflow at {_safe_uri(uri)} failed: {exc}") from exc


def _log_dataset(result: Any) -> None:
    """The replayed outcomes as an MLflow dataset input (ids, categories, scores and costs; no text)."""
    frame = result.table.frame[["sample_id", "category", "model", "score", "cost_usd", "cost_estimated"]]
    # A plain name is not a resolvable MLflow source (it would be guessed as a local path): the origin goes
    # in the run's params and the dataset card; MLflow records the code that logged it as the source.
    dataset = mlflow.data.from_pandas(frame, name=result.dataset)
    mlflow.log_input(dataset, context="evaluation")


def _log_router_artifacts(r: Any, figure_fn: Any) -> None:
    frame = r.frontier.to_frame()
    with tempfile.TemporaryDirectory(prefix="routelab-mlflow-") as tmp:
        d = Path(tmp)
        frame.to_csv(d / "frontier.csv", index=False)
        (d / "frontier.json").write_text(frame.to_json(orient="records"), encoding="utf-8")
        r.categories.to_csv(d / "categories.csv", index=False)
        fig = figure_fn([r.frontier], title=f"{r.label}: quality vs cost")
        # The plotly library comes from its CDN so that each run's plot stays small; the report logged on
        # the parent run is fully self-contained.
        fig.write_html(d / "frontier.html", include_plotlyjs="cdn", full_html=True)
        for name in ("frontier.csv", "frontier.json", "categories.csv", "frontier.html"):
            mlflow.log_artifact(str(d / name), artifact_path="frontier")


# ------------------------------------------------------------------------------------- a run to export from


@dataclass(frozen=True)
class LoggedRouterRun:
    """A router (child) run logged by :func:`log_evaluation`, with what is needed to refit it exactly."""

    run_id: str
    """The router run."""
    parent_run_id: str
    """Its evaluation (parent) run."""
    label: str
    """The router's label in the evaluation."""
    router: str
    """The registered router name."""
    params: dict[str, Any]
    """The router's params (decoded from the flat ``params.<key>`` strings)."""
    metrics: dict[str, float]
    """The child run's metrics (``calibrated_lam``, ``test_quality``...)."""
    config_name: str
    """File name of the evaluation's config artifact."""
    config_text: str
    """The evaluation's config (TOML text)."""


def _decode_params(params: dict[str, str]) -> dict[str, Any]:
    """Router spec params logged as ``params.<key>`` (JSON values; see :func:`flat_params`)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k.startswith("params.") and k != "params.":
            try:
                out[k[len("params.") :]] = json.loads(v)
            except ValueError:
                out[k[len("params.") :]] = v
    return out


def read_router_run(run_id: str, *, router: str | None = None, uri: str | None = None) -> LoggedRouterRun:
    """Read a router run of ``routelab eval``: the run itself, or its evaluation's run plus a router label.

    Raises:
        TrackingError: a run that does not exist, was not logged by ``routelab eval``, is an evaluation run
            without a valid ``router`` label, or has no config artifact to refit from.
    """
    uri = uri or tracking_uri()
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id!r} not found at {_safe_uri(uri)} ({exc.message})") from None
    kind = run.data.tags.get("routelab.kind")
    if kind == "evaluation":
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        labels = {c.data.params.get("label"): c for c in children}
        if router not in labels:
            raise TrackingError(
                f"run {run_id} is an evaluation; pass --router with one of its routers: "
                f"{', '.join(sorted(str(k) for k in labels))}"
            )
        parent, child = run, labels[router]
    elif kind == "router":
        child = run
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    else:
        raise TrackingError(f"run {run_id} was not logged by `routelab eval` (tag routelab.kind is {kind!r})")
    tomls = [a.path for a in client.list_artifacts(parent.info.run_id, "config") if a.path.endswith(".toml")]
    if not tomls:
        raise TrackingError(f"evaluation run {parent.info.run_id} has no config/*.toml artifact to refit from")
    with tempfile.TemporaryDirectory(prefix="routelab-run-") as tmp:
        text = Path(client.download_artifacts(parent.info.run_id, tomls[0], tmp)).read_text(encoding="utf-8")
    params = child.data.params
    return LoggedRouterRun(
        run_id=child.info.run_id,
        parent_run_id=parent.info.run_id,
        label=params.get("label") or params.get("router", ""),
        router=params["router"],
        params=_decode_params(params),
        metrics=dict(child.data.metrics),
        config_name=Path(tomls[0]).name,
        config_text=text,
    )


# ---------------------------------------------------------------------------------------------- reading runs
# Readers for the app's Experiments and Export pages (the app never imports mlflow itself).


def _client(uri: str | None = None) -> MlflowClient:
    return MlflowClient(uri or tracking_uri())


def list_experiments(uri: str | None = None) -> list[dict[str, str]]:
    """RouteLab experiments (``routelab/<dataset>``) at the tracking URI: ``[{"experiment_id", "name"}]``."""
    return [
        {"experiment_id": e.experiment_id, "name": e.name}
        for e in _client(uri).search_experiments()
        if e.name.startswith("routelab/")
    ]


def list_evaluations(experiment_id: str, *, max_results: int = 200, uri: str | None = None) -> list[dict[str, Any]]:
    """The evaluation (parent) runs of an experiment, newest first: ids, key params and reference metrics."""
    import datetime as dt

    runs = _client(uri).search_runs(
        [experiment_id],
        filter_string="tags.`routelab.kind` = 'evaluation'",
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    rows = []
    for r in runs:
        p, m = r.data.params, r.data.metrics
        started = dt.datetime.fromtimestamp(r.info.start_time / 1000, tz=dt.UTC)
        rows.append(
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name or "",
                "started": started.strftime("%Y-%m-%d %H:%M:%S"),
                "status": r.info.status,
                "routers": p.get("routers", ""),
                "source": p.get("source", ""),
                "n_test": m.get("n_test"),
                "best_single_quality": m.get("best_single_quality"),
                "oracle_quality": m.get("oracle_quality"),
                "margin": p.get("margin", ""),
                "split.seed": p.get("split.seed", ""),
                "cost_estimated": p.get("cost_estimated", ""),
            }
        )
    return rows


def router_runs(parent_ids: Sequence[str], *, uri: str | None = None) -> list[dict[str, Any]]:
    """The per-router child runs of some evaluations: ``param.*`` and metrics side by side, one dict each."""
    client = _client(uri)
    rows = []
    for pid in parent_ids:
        parent = client.get_run(pid)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'"
        )
        for r in children:
            row: dict[str, Any] = {
                "evaluation": parent.info.run_name or pid[:8],
                "parent_run_id": pid,
                "run_id": r.info.run_id,
                "router": r.data.params.get("label", r.info.run_name),
            }
            row.update({f"param.{k}": v for k, v in sorted(r.data.params.items()) if k != "label"})
            row.update(dict(sorted(r.data.metrics.items())))
            rows.append(row)
    return rows


def run_params(run_id: str, *, uri: str | None = None) -> dict[str, str]:
    """The params a run logged (strings, as MLflow keeps them)."""
    return dict(_client(uri).get_run(run_id).data.params)


def run_frontier(run_id: str, *, uri: str | None = None) -> Any:
    """The frontier table a router run logged (``frontier/frontier.csv``) as a DataFrame; empty if it has none."""
    import pandas as pd

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="frontier/frontier.csv", tracking_uri=uri or tracking_uri()
        )
    except Exception:  # noqa: BLE001 - a run without that artifact, or an unreachable artifact store
        return pd.DataFrame()
    return pd.read_csv(path)


def log_production_report(
    report: Any,
    *,
    uri: str | None = None,
    report_paths: Sequence[Path] = (),
) -> str:
    """Log a production report (``routelab logs report``: promised vs delivered) as one run.

    The run goes in the experiment of the export's dataset (``routelab/<dataset>``, or ``routelab/production``
    when the export has no measurement), tagged ``routelab.kind = production``: the log, the export and the
    targets as params, :meth:`~evals.workbench.production_report.ProductionReport.metrics` as metrics, the report
    JSON and the given files as artifacts. No prompt or answer text is logged.

    Returns:
        The run id.

    Raises:
        TrackingError: when MLflow cannot be reached or refuses the run.
    """
    uri = uri or tracking_uri()
    doc = report.to_dict()
    dataset = doc["promised"].get("dataset") or "production"
    _use_experiment(uri, experiment_name(dataset))
    try:
        with start_run(
            f"production-{Path(doc['log_dir']).name}",
            tags={"routelab.kind": "production", "routelab.dataset": dataset},
        ) as run:
            mlflow.log_params(
                flat_params(
                    {
                        "log_dir": doc["log_dir"],
                        "export": doc["export"],
                        "router": doc["promised"].get("router"),
                        "lam": doc["promised"].get("lam"),
                        "bucket": doc["bucket"],
                        "offpolicy_targets": [e["label"] for e in doc["offpolicy"]],
                    }
                )
            )
            mlflow.log_metrics(_metrics(report.metrics()))
            mlflow.log_dict(doc, "production_report.json")
            for path in report_paths:
                mlflow.log_artifact(str(path), artifact_path="report")
            return str(run.info.run_id)
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store or artifact failure of any kind
        raise TrackingError(f"logging to MLflow at {_safe_uri(uri)} failed: {exc}") from exc
