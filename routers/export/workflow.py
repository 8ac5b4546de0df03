"""From an evaluation to an export folder: refit the chosen router exactly as it was measured, then export.

Two entry points (the ``routelab export`` command calls them):

* :func:`export_from_config`: an evaluation config (``examples/mmlu_pro.toml``), one of its routers, and an
  operating point: given (``lam``) or calibrated on the validation split for a target (``parity:0.01``,
  ``budget:2.0``, ...), exactly as ``routelab eval`` calibrates it;
* :func:`export_from_run`: an MLflow run logged by ``routelab eval``: the router's run (or the evaluation's
  parent run plus a router label). The config is read from the parent run's artifacts, the router spec from
  the child run's params, the operating point from its ``calibrated_lam`` metric; the router is refitted on
  the same split with the same seed, and the refit is checked against the run's logged test quality and
  cost before anything is written.

In both cases the README and ``router.json`` carry what the operating point achieves on the test split, with
95% paired-bootstrap intervals and n.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from evals.exceptions import ConfigError
from routers.export._folder import ExportError
from routers.export.exporter import export_router

__all__ = ["export_from_config", "export_from_run", "parse_target"]


def parse_target(text: str) -> Any:
    """``"parity:0.01"`` / ``"budget:2"`` / ``"quality_floor:0.7"`` / ``"strong_share:0.3"`` -> a Target."""
    from evals.calibration import KINDS, Target

    kind, _, value = text.partition(":")
    if kind not in KINDS or not value:
        raise ConfigError(
            f"--target must be KIND:VALUE with KIND one of {', '.join(KINDS)} (e.g. parity:0.01), "
            f"got {text!r}"
        )
    try:
        return Target(kind, float(value))
    except ValueError:
        raise ConfigError(f"--target value must be a number, got {value!r}") from None


def _pick_spec(config: Any, router: str) -> dict[str, Any]:
    labels = config.labels()
    for label, spec in zip(labels, config.routers, strict=True):
        if label == router:
            return {"name": spec["name"], "params": dict(spec.get("params") or {}), "label": label}
    by_name = [(lab, s) for lab, s in zip(labels, config.routers, strict=True) if s["name"] == router]
    if len(by_name) == 1:
        lab, s = by_name[0]
        return {"name": s["name"], "params": dict(s.get("params") or {}), "label": lab}
    raise ConfigError(f"{config.path}: no router labelled {router!r}; its routers are: {', '.join(labels)}")


def _measure(router: Any, split: Any, lam: float, config: Any, how: str) -> dict[str, Any]:
    """What ``lam`` achieves on test, with paired 95% intervals against the best single model."""
    from evals import stats

    test = split.test
    policy = router.policy(test)
    choice, cost, score = policy.outcomes(lam)
    Q, C = test.quality, test.cost
    s_q, s_c = Q.mean(axis=0), C.mean(axis=0)
    best = int(np.where(s_q >= s_q.max() - 1e-12, s_c, np.inf).argmin())
    W = stats.resample_counts(test.n_samples, config.n_resamples, config.seed)
    iv = stats.point_intervals(cost, score, C[:, best], Q[:, best], W)

    def pair(name: str, scale: float = 1.0) -> list[float | None]:
        i = iv[name]
        return [None if i.low is None else i.low * scale, None if i.high is None else i.high * scale]

    share = np.bincount(choice, minlength=len(policy.models)) / len(choice)
    return {
        "dataset": test.card.name,
        "split": "test",
        "n_test": int(test.n_samples),
        "n_train": int(split.train.n_samples),
        "operating_point": how,
        "quality": iv["quality"].value,
        "quality_ci95": pair("quality"),
        "cost_per_1k_usd": iv["cost_per_1k"].value,
        "cost_per_1k_ci95": pair("cost_per_1k"),
        "best_single_model": test.models[best],
        "best_single_quality": float(s_q[best]),
        "best_single_cost_per_1k_usd": float(s_c[best] * 1000),
        "quality_diff_vs_best_single": iv["quality_diff"].value,
        "quality_diff_ci95": pair("quality_diff"),
        "savings_vs_best_single": iv["savings"].value,
        "savings_ci95": pair("savings"),
        "traffic_share": {m: float(s) for m, s in zip(policy.models, share, strict=True) if s > 0},
        "cost_estimated": bool(test.cost_estimated),
    }


def _fit(config: Any, spec: dict[str, Any], data_dir: str | None) -> tuple[Any, Any]:
    from evals.experiment import load_table
    from routers.registry import make_router

    table = load_table(config, data_dir)
    split = table.split(config.fractions, random_state=config.split_seed, stratify=config.stratify)
    router = make_router({"name": spec["name"], "params": spec["params"]})
    if not getattr(type(router), "exportable", True):
        from routers.export.exporter import _why_not_exportable, exportable_router_names

        raise ExportError(
            f"router {spec['label']!r} ({spec['name']}) is not exportable: {_why_not_exportable(router)} "
            f"Exportable routers: {', '.join(exportable_router_names())}"
        )
    return router.fit(split.train), split


def export_from_config(
    config_path: str | os.PathLike[str],
    router: str,
    out: str | os.PathLike[str],
    *,
    lam: float | None = None,
    target: Any = None,
    data_dir: str | None = None,
    overwrite: bool = False,
    upstreams: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fit ``router`` (a label or name of the config's routers) on the config's train split and export it.

    Args:
        config_path: An evaluation config (TOML).
        router: The router's label (or its name, when only one router of that name is configured).
        out: The export folder to write.
        lam: The operating point; if None, calibrated on validation for ``target`` (default: the config's).
        target: A :class:`~evals.calibration.Target` (or ``"kind:value"``) used when ``lam`` is None.
        data_dir: Data folder for named sources.
        overwrite: Replace an existing export folder.
        upstreams: Passed to :func:`~routers.export.export_router`.

    Returns:
        (folder, measurement at the operating point on test).
    """
    from evals.calibration import calibrate
    from evals.experiment import load_config

    config = load_config(config_path)
    spec = _pick_spec(config, router)
    fitted, split = _fit(config, spec, data_dir)
    if lam is None:
        tgt = parse_target(target) if isinstance(target, str) else (target or config.target)
        cal = calibrate(fitted, split.validation, split.test, tgt, n_points=config.n_points)
        lam, how = (
            cal.lam,
            f"calibrated on validation (n={split.validation.n_samples}) for {tgt.describe()}"
            + ("" if cal.met else " - target NOT met on validation: the closest point was taken"),
        )
    else:
        how = "given explicitly (lam)"
    if not math.isfinite(lam) or lam < 0:
        raise ExportError(f"operating point lam must be a finite number >= 0, got {lam!r}")
    measurement = _measure(fitted, split, float(lam), config, how)
    folder = export_router(
        fitted,
        out,
        lam=float(lam),
        table_card=split.train.card,
        measurement=measurement,
        upstreams=upstreams,
        overwrite=overwrite,
    )
    return folder, measurement


def _run_params(run: Any) -> dict[str, Any]:
    """Router spec params logged as ``params.<key>`` (JSON values; see ``evals.tracking.flat_params``)."""
    out: dict[str, Any] = {}
    for k, v in run.data.params.items():
        if k.startswith("params.") and k != "params.":
            try:
                out[k[len("params.") :]] = json.loads(v)
            except ValueError:
                out[k[len("params.") :]] = v
    return out


def export_from_run(
    run_id: str,
    out: str | os.PathLike[str],
    *,
    router: str | None = None,
    lam: float | None = None,
    tracking_uri: str | None = None,
    data_dir: str | None = None,
    overwrite: bool = False,
    upstreams: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Export the router of an MLflow run logged by ``routelab eval`` (refitted on the same split and seed).

    Args:
        run_id: A router (child) run id, or the evaluation (parent) run id together with ``router``.
        out: The export folder to write.
        router: The router label inside a parent run.
        lam: Override the run's calibrated operating point.
        tracking_uri: MLflow tracking URI (default: ``evals.tracking.tracking_uri()``).

    Raises:
        ExportError: for a run that is not a RouteLab evaluation, a missing config artifact, or a refit
            that does not reproduce the logged test numbers (the data or the code changed since the run).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from evals import tracking
    from evals.experiment import load_config

    uri = tracking_uri or tracking.tracking_uri()
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ExportError(
            f"MLflow run {run_id!r} not found at {tracking._safe_uri(uri)} ({exc.message})"
        ) from None
    kind = run.data.tags.get("routelab.kind")
    if kind == "evaluation":
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        labels = {c.data.params.get("label"): c for c in children}
        if router not in labels:
            raise ExportError(
                f"run {run_id} is an evaluation; pass --router with one of its routers: "
                f"{', '.join(sorted(str(k) for k in labels))}"
            )
        parent, child = run, labels[router]
    elif kind == "router":
        child = run
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    else:
        raise ExportError(f"run {run_id} was not logged by `routelab eval` (tag routelab.kind is {kind!r})")
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "config")]
    tomls = [a for a in artifacts if a.endswith(".toml")]
    if not tomls:
        raise ExportError(f"evaluation run {parent.info.run_id} has no config/*.toml artifact to refit from")
    with tempfile.TemporaryDirectory(prefix="routelab-export-") as tmp:
        local = client.download_artifacts(parent.info.run_id, tomls[0], tmp)
        config = load_config(local)
    label = child.data.params.get("label") or child.data.params.get("router")
    spec = {"name": child.data.params["router"], "params": _run_params(child), "label": label}
    fitted, split = _fit(config, spec, data_dir)
    metrics = child.data.metrics
    run_lam = metrics.get("calibrated_lam")
    if lam is None and run_lam is None:
        raise ExportError(f"run {child.info.run_id} has no calibrated_lam metric; pass --lam")
    chosen = float(run_lam if lam is None else lam)
    measurement = _measure(
        fitted,
        split,
        chosen,
        config,
        f"from MLflow run {child.info.run_id}"
        + (" (calibrated_lam)" if lam is None else " (lam overridden)"),
    )
    if run_lam is not None:
        check = _measure(fitted, split, float(run_lam), config, "") if lam is not None else measurement
        for key, logged in (
            ("quality", metrics.get("test_quality")),
            ("cost_per_1k_usd", metrics.get("test_cost_per_1k")),
        ):
            if logged is not None and not math.isclose(check[key], logged, rel_tol=1e-6, abs_tol=1e-9):
                raise ExportError(
                    f"refitting {label!r} does not reproduce run {child.info.run_id}: test {key} is "
                    f"{check[key]:.6g}, the run logged {logged:.6g} (the data, the config or RouteLab "
                    "changed since); not exporting"
                )
    measurement["mlflow_run_id"] = child.info.run_id
    folder = export_router(
        fitted,
        out,
        lam=chosen,
        table_card=split.train.card,
        measurement=measurement,
        upstreams=upstreams,
        overwrite=overwrite,
    )
    return folder, measurement
