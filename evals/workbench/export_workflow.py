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

import dataclasses
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from evals import stats, tracking
from evals.exceptions import ConfigError
from evals.formatting import POINT_VALIDATION_CHOSEN
from evals.outcomes import Split
from evals.workbench.calibration import KINDS, Target, calibrate
from evals.workbench.config import ExperimentConfig, config_from_dict, load_config
from evals.workbench.experiment import load_table, plan_split
from routers.base import Router
from routers.export._folder import ExportError
from routers.export.measurement import measure_point
from routers.export.writer import export_router, exportable_router_names, why_not_exportable
from routers.registry import make_router

__all__ = ["export_from_config", "export_from_run", "parse_target"]


def parse_target(text: str) -> Target:
    """``"parity:0.01"`` / ``"budget:2"`` / ``"quality_floor:0.7"`` / ``"strong_share:0.3"`` -> a Target.

    Raises:
        ConfigError: naming ``--target`` and, for a value out of range, the range of that kind.
    """
    kind, _, value = text.partition(":")
    if kind not in KINDS or not value:
        raise ConfigError(
            f"--target must be KIND:VALUE with KIND one of {', '.join(KINDS)} (e.g. parity:0.01), "
            f"got {text!r}"
        )
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--target value must be a number, got {value!r}") from None
    try:
        return Target(kind, number)
    except ConfigError as exc:
        raise ConfigError(f"--target {text}: {exc}") from None


def _pick_spec(config: ExperimentConfig, router: str) -> dict[str, Any]:
    labels = config.labels()
    for label, spec in zip(labels, config.routers, strict=True):
        if label == router:
            return {"name": spec["name"], "params": dict(spec.get("params") or {}), "label": label}
    by_name = [(lab, s) for lab, s in zip(labels, config.routers, strict=True) if s["name"] == router]
    if len(by_name) == 1:
        lab, s = by_name[0]
        return {"name": s["name"], "params": dict(s.get("params") or {}), "label": lab}
    raise ConfigError(f"{config.path}: no router labelled {router!r}; its routers are: {', '.join(labels)}")


def _measure(
    router: Router, split: Split, lam: float, config: ExperimentConfig, how: str, *, chosen_on_validation: bool
) -> dict[str, Any]:
    """What ``lam`` achieves on test, with paired 95% intervals against the best single model.

    The bootstrap draws are those of ``routelab eval`` (same test samples, ``n_resamples`` and seed), so an
    export of the point chosen on validation carries exactly the interval the evaluation printed.

    Returns:
        The ``router.json`` measurement block (:class:`routers.export.Measurement`, schema 2).
    """
    test = split.test
    policy = router.policy(test)
    choice, cost, score = policy.outcomes(lam)
    Q, C = test.quality, test.cost
    s_q, s_c = Q.mean(axis=0), C.mean(axis=0)
    best = int(np.where(s_q >= s_q.max() - 1e-12, s_c, np.inf).argmin())
    W = stats.resample_counts(test.n_samples, config.n_resamples, config.seed)
    measured = measure_point(
        cost,
        score,
        ref_cost=C[:, best],
        ref_score=Q[:, best],
        W=W,
        point=POINT_VALIDATION_CHOSEN,
        choice=choice,
        models=policy.models,
        reference_model=test.models[best],
        operating_point=how,
        lam=float(lam),
        dataset=test.card.name,
        split="test",
        n_train=int(split.train.n_samples),
        cost_estimated=bool(test.cost_estimated),
    )
    if not chosen_on_validation:  # a lam given by hand is neither kind of point: operating_point says how
        measured = dataclasses.replace(measured, point=None)
    return measured.to_dict()


def _fit(config: ExperimentConfig, spec: dict[str, Any], data_dir: str | None) -> tuple[Router, Split]:
    table = load_table(config, data_dir)
    split = plan_split(config, table, data_dir).split  # the same split as `routelab eval`
    router = make_router({"name": spec["name"], "params": spec["params"]})
    if not getattr(type(router), "exportable", True):
        raise ExportError(
            f"router {spec['label']!r} ({spec['name']}) is not exportable: {why_not_exportable(router)} "
            f"Exportable routers: {', '.join(exportable_router_names())}"
        )
    return router.fit(split.train), split


def export_from_config(
    config_path: str | os.PathLike[str],
    router: str,
    out: str | os.PathLike[str],
    *,
    lam: float | None = None,
    target: Target | str | None = None,
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
        target: A :class:`~evals.workbench.calibration.Target` (or ``"kind:value"``) used when ``lam`` is None.
        data_dir: Data folder for named sources.
        overwrite: Replace an existing export folder.
        upstreams: Passed to :func:`~routers.export.export_router`.

    Returns:
        (folder, measurement at the operating point on test).
    """
    config = load_config(config_path)
    spec = _pick_spec(config, router)
    # A bad --target fails before minutes of fitting.
    tgt = parse_target(target) if isinstance(target, str) else (target or config.target)
    fitted, split = _fit(config, spec, data_dir)
    calibrated = lam is None
    if lam is None:
        cal = calibrate(
            fitted,
            split.validation,
            split.test,
            tgt,
            n_points=config.n_points,
            n_resamples=config.n_resamples,
            seed=config.seed,
        )
        lam, how = (
            cal.lam,
            f"calibrated on validation (n={split.validation.n_samples}) for {tgt.describe()}"
            + ("" if cal.met else " - target NOT met on validation: the closest point was taken"),
        )
    else:
        how = "given explicitly (lam)"
    if not math.isfinite(lam) or lam < 0:
        raise ExportError(f"operating point lam must be a finite number >= 0, got {lam!r}")
    measurement = _measure(fitted, split, float(lam), config, how, chosen_on_validation=calibrated)
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
    try:
        run = tracking.read_router_run(run_id, router=router, uri=tracking_uri)
    except tracking.TrackingError as exc:
        raise ExportError(str(exc)) from None
    where = f"config {run.config_name} of MLflow run {run.parent_run_id}"
    try:
        raw = tomllib.loads(run.config_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    config = config_from_dict(raw, where=where)
    spec = {"name": run.router, "params": run.params, "label": run.label}
    fitted, split = _fit(config, spec, data_dir)
    metrics, label = run.metrics, run.label
    run_lam = metrics.get("calibrated_lam")
    if lam is None and run_lam is None:
        raise ExportError(f"run {run.run_id} has no calibrated_lam metric; pass --lam")
    chosen = float(run_lam if lam is None else lam)
    measurement = _measure(
        fitted,
        split,
        chosen,
        config,
        f"from MLflow run {run.run_id}"
        + (" (calibrated_lam)" if lam is None else " (lam overridden)"),
        chosen_on_validation=lam is None,
    )
    if run_lam is not None:
        check = (
            _measure(fitted, split, float(run_lam), config, "", chosen_on_validation=True)
            if lam is not None
            else measurement
        )
        for key, logged in (
            ("quality", metrics.get("test_quality")),
            ("cost_per_1k_usd", metrics.get("test_cost_per_1k")),
        ):
            value = check[key]["value"]
            if logged is not None and not math.isclose(value, logged, rel_tol=1e-6, abs_tol=1e-9):
                raise ExportError(
                    f"refitting {label!r} does not reproduce run {run.run_id}: test {key} is "
                    f"{value:.6g}, the run logged {logged:.6g} (the data, the config or RouteLab "
                    "changed since); not exporting"
                )
    measurement["extra"] = {**measurement.get("extra", {}), "mlflow_run_id": run.run_id}
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
