"""One evaluation, end to end: load outcomes, split, fit routers, replay, measure, calibrate, gate.

An :class:`ExperimentConfig` is read from a TOML file (see ``examples/mmlu_pro.toml``)::

    name = "mmlu-pro-routing"                  # optional: the MLflow parent run name

    [dataset]
    source = "mmlu-pro"                        # a registered source, or a path to a long-format outcome file
    models = ["gpt-4o-2024-05-13", "..."]      # optional subset (and column order)
    max_samples = 4000                         # optional seeded subsample, for speed

    [split]                                    # by sample; routers are fitted on train
    fractions = [0.6, 0.2, 0.2]                # train, validation (calibration), test (reported)
    seed = 0
    stratify = true                            # keep the category mix in every part

    [evaluation]
    n_points = 200                             # operating points per frontier
    margin = 0.005                             # non-inferiority margin (0.5 points)
    n_resamples = 1000                         # paired bootstrap resamples
    seed = 0

    [target]                                   # the operating point, chosen on validation
    kind = "parity"                            # quality_floor | parity | budget | strong_share
    value = 0.005

    [gates]                                    # checked on the test split at the calibrated point
    router = "knn"                             # which router the gates judge (default: the first)
    max_quality_drop = 0.01                    # vs the best single model
    min_savings = 0.30                         # share of the best single model's cost saved

    [[routers]]                                # specs for routers.make_router
    name = "knn"
    params = { k = 20 }

:func:`run_experiment` returns an :class:`EvaluationResult`; :func:`check_gates` raises
:class:`~evals.exceptions.GateFailed` naming every gate that failed.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evals import metrics, stats
from evals.calibration import Calibrated, Target, calibrate
from evals.exceptions import ConfigError, GateFailed
from evals.frontier import PER_1K, Frontier, compute_frontier, oracle_choice
from evals.outcomes import OutcomeTable

__all__ = [
    "GATES",
    "EvaluationResult",
    "ExperimentConfig",
    "RouterResult",
    "check_gates",
    "load_config",
    "load_table",
    "run_experiment",
]

#: Gate name -> what it checks (all on the test split, at the calibrated operating point unless noted).
GATES = {
    "max_quality_drop": "best single model's quality minus the router's is at most this",
    "min_savings": "share of the best single model's cost saved is at least this",
    "min_savings_at_parity": "savings at parity (cheapest test point within the margin) is at least this",
    "min_aiq": "AIQ of the router's frontier is at least this",
    "require_non_inferior": "the paired non-inferiority test passes (CI lower bound of the quality "
    "difference above -margin)",
}
_SECTIONS = {"name", "dataset", "split", "evaluation", "target", "gates", "routers", "tracking"}


@dataclass
class ExperimentConfig:
    """A parsed evaluation config (see the module docstring for the TOML layout)."""

    source: str
    """Source name, or path to a long-format outcome file."""
    routers: list[dict[str, Any]]
    """Router specs ``{"name", "params", "label"?}``."""
    name: str = ""
    """Evaluation name (the MLflow parent run name)."""
    models: list[str] | None = None
    """Model subset (None = every model of the table)."""
    categories: list[str] | None = None
    """Category subset (None = all)."""
    max_samples: int | None = None
    """Seeded subsample of samples before splitting (None = all)."""
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Train, validation, test shares."""
    split_seed: int = 0
    """Seed of the split (and subsample)."""
    stratify: bool = True
    """Split each category separately."""
    n_points: int = 200
    """Operating points per frontier."""
    margin: float = 0.005
    """Non-inferiority margin for parity and the paired test."""
    n_resamples: int = stats.DEFAULT_RESAMPLES
    """Bootstrap resamples."""
    seed: int = 0
    """Bootstrap seed."""
    target: Target = field(default_factory=lambda: Target("parity", 0.005))
    """Calibration target."""
    gates: dict[str, Any] = field(default_factory=dict)
    """Gates (see :data:`GATES`) plus an optional ``router`` naming the judged router."""
    path: str = ""
    """The config file it was read from."""

    def labels(self) -> list[str]:
        """A unique label per router spec (its ``label``, else its name, suffixed when repeated)."""
        out: list[str] = []
        for spec in self.routers:
            base = str(spec.get("label") or spec["name"])
            label, k = base, 2
            while label in out:
                label, k = f"{base}#{k}", k + 1
            out.append(label)
        return out


def _section(raw: dict[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    sec = raw.get(key, {}) or {}
    if not isinstance(sec, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(sec) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: [{key}] has unknown key(s) {unknown}; valid: {', '.join(sorted(allowed))}"
        )
    return sec


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an evaluation config (TOML).

    Raises:
        ConfigError: naming the file and the bad section/key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(raw, where=str(path), base_dir=path.parent)


def config_from_dict(
    raw: dict[str, Any], *, where: str = "config", base_dir: Path | None = None
) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a parsed dict (the TOML layout)."""
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {unknown}; valid: {', '.join(sorted(_SECTIONS))}"
        )
    ds = _section(raw, "dataset", {"source", "models", "categories", "max_samples"}, where)
    if "source" not in ds:
        raise ConfigError(f"{where}: [dataset] needs 'source' (a source name or a path to an outcome file)")
    source = str(ds["source"])
    if base_dir is not None and not Path(source).is_absolute() and (base_dir / source).exists():
        source = str(base_dir / source)
    sp = _section(raw, "split", {"fractions", "seed", "stratify"}, where)
    ev = _section(raw, "evaluation", {"n_points", "margin", "n_resamples", "seed"}, where)
    gates = _section(raw, "gates", set(GATES) | {"router"}, where)
    routers = raw.get("routers")
    if not isinstance(routers, list) or not routers:
        raise ConfigError(f"{where}: needs at least one [[routers]] entry with a 'name'")
    specs = []
    for i, spec in enumerate(routers):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{where}: [[routers]] entry {i + 1} needs a 'name'")
        extra = sorted(set(spec) - {"name", "params", "label"})
        if extra:
            raise ConfigError(
                f"{where}: [[routers]] entry {i + 1} has unknown key(s) {extra}; valid: name, params, label"
            )
        specs.append(
            {
                "name": str(spec["name"]),
                "params": dict(spec.get("params") or {}),
                **({"label": str(spec["label"])} if "label" in spec else {}),
            }
        )
    fractions = tuple(float(x) for x in sp.get("fractions", (0.6, 0.2, 0.2)))
    if len(fractions) != 3:
        raise ConfigError(f"{where}: [split] fractions must be 3 numbers (train, validation, test)")
    n_points = int(ev.get("n_points", 200))
    if n_points < 2:
        raise ConfigError(f"{where}: [evaluation] n_points must be >= 2, got {n_points}")
    try:
        target = Target.from_config(raw.get("target"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    cfg = ExperimentConfig(
        source=source,
        routers=specs,
        name=str(raw.get("name", "")),
        models=list(ds["models"]) if ds.get("models") else None,
        categories=list(ds["categories"]) if ds.get("categories") else None,
        max_samples=int(ds["max_samples"]) if ds.get("max_samples") else None,
        fractions=fractions,  # type: ignore[arg-type]
        split_seed=int(sp.get("seed", 0)),
        stratify=bool(sp.get("stratify", True)),
        n_points=n_points,
        margin=float(ev.get("margin", 0.005)),
        n_resamples=int(ev.get("n_resamples", stats.DEFAULT_RESAMPLES)),
        seed=int(ev.get("seed", 0)),
        target=target,
        gates=dict(gates),
        path=where,
    )
    if "router" in gates and gates["router"] not in cfg.labels():
        raise ConfigError(
            f"{where}: [gates] router {gates['router']!r} is not one of the routers: "
            f"{', '.join(cfg.labels())}"
        )
    return cfg


@dataclass
class RouterResult:
    """Everything measured for one router on the test split."""

    label: str
    """Unique label in this evaluation."""
    spec: dict[str, Any]
    """``{"name", "params"}`` as given to :func:`routers.make_router`."""
    frontier: Frontier
    """Its frontier on test (with oracle, single models and random mix)."""
    aiq: float
    """RouterBench AIQ over its own cost range."""
    parity: metrics.ParityPoint | None
    """Cheapest test point within the margin of the best single model (None: never)."""
    parity_ci: stats.Interval
    """Savings at parity with its paired interval (point re-chosen per resample)."""
    parity_reach: float
    """Share of resamples in which the router reaches parity at all."""
    at95: metrics.ParityPoint | None
    """Cheapest point at 95% of the best single model's quality."""
    at99: metrics.ParityPoint | None
    """Cheapest point at 99% of it."""
    two_model: dict[str, float | None] | None
    """APGR, CPT(50%), CPT(80%) when exactly two models are compared, else None."""
    calibrated: Calibrated
    """The operating point chosen on validation, and what it does on validation and test."""
    at_calibrated: dict[str, stats.Interval]
    """Quality, cost, quality difference and savings at the calibrated point on test, with intervals."""
    non_inferiority: stats.NonInferiority
    """Paired test of no quality loss at the calibrated point."""
    categories: pd.DataFrame
    """Per-category breakdown at the calibrated point."""
    seconds: dict[str, float]
    """Wall time of ``fit``, ``score`` (policies) and ``sweep``."""

    def to_json(self) -> dict[str, Any]:
        """The summary fields of ``routelab eval --json``."""
        p = self.parity
        return {
            "name": self.spec["name"],
            "label": self.label,
            "params": self.spec.get("params", {}),
            "aiq": self.aiq,
            "savings_at_parity": None if p is None else p.savings,
            "savings_at_parity_ci": [self.parity_ci.low, self.parity_ci.high],
            "parity_reached_share": self.parity_reach,
            "quality_at_parity": None if p is None else p.quality,
            "cost_per_1k_at_parity": None if p is None else p.cost,
            "savings_at_95pct": None if self.at95 is None else self.at95.savings,
            "savings_at_99pct": None if self.at99 is None else self.at99.savings,
            "two_model": self.two_model,
            "calibrated": self.calibrated.to_dict(),
            "at_calibrated": {k: v.to_dict() for k, v in self.at_calibrated.items()},
            "non_inferiority": self.non_inferiority.to_dict(),
            "n_points": len(self.frontier.router),
            "seconds": self.seconds,
        }


@dataclass
class EvaluationResult:
    """The outcome of :func:`run_experiment`."""

    config: ExperimentConfig
    """The config it ran."""
    dataset: str
    """Dataset name (the table's card name)."""
    table: OutcomeTable
    """The (selected) outcome table that was split."""
    n_train: int
    """Samples in train."""
    n_validation: int
    """Samples in validation."""
    n_test: int
    """Samples in test (every reported number is over these)."""
    models: tuple[str, ...]
    """Models compared."""
    best_single: dict[str, Any]
    """``{"name", "quality", "cost_per_1k", "quality_ci"}`` of the best single model on test."""
    oracle: dict[str, Any]
    """``{"quality", "cost_per_1k", "quality_ci"}`` of the oracle on test."""
    cheapest_single: dict[str, Any]
    """``{"name", "quality", "cost_per_1k"}`` of the cheapest model on test."""
    routers: list[RouterResult]
    """One result per router, in config order."""
    cost_estimated: bool
    """True when the table's costs are estimates."""
    seconds: float = 0.0
    """Total wall time."""

    def router(self, label: str) -> RouterResult:
        """The result of the router with this label."""
        for r in self.routers:
            if r.label == label:
                return r
        raise KeyError(f"no router labelled {label!r}; have: {', '.join(r.label for r in self.routers)}")

    def to_json(self) -> dict[str, Any]:
        """The ``routelab eval --json`` document (fractions in [0, 1], costs in dollars per 1k requests)."""
        return _jsonable(
            {
                "dataset": self.dataset,
                "config": self.config.path,
                "n_train": self.n_train,
                "n_validation": self.n_validation,
                "n_test": self.n_test,
                "models": list(self.models),
                "cost_estimated": self.cost_estimated,
                "margin": self.config.margin,
                "best_single_model": self.best_single,
                "cheapest_model": self.cheapest_single,
                "oracle": self.oracle,
                "routers": [r.to_json() for r in self.routers],
                "gates": {k: v for k, v in self.config.gates.items()},
            }
        )

    def summary_frame(self) -> pd.DataFrame:
        """One row per router: the table ``routelab eval`` prints."""
        rows = []
        for r in self.routers:
            c = r.calibrated
            rows.append(
                {
                    "router": r.label,
                    "aiq": r.aiq,
                    "savings@parity": r.parity_ci.format(100, 1, "%")
                    if r.parity
                    else "never",
                    "quality@parity": None if r.parity is None else r.parity.quality,
                    "$/1k@parity": None if r.parity is None else r.parity.cost,
                    "target": c.target.describe(),
                    "val quality": c.validation.quality,
                    "val $/1k": c.validation.cost_per_1k,
                    "test quality": r.at_calibrated["quality"].format(digits=3),
                    "test $/1k": r.at_calibrated["cost_per_1k"].format(digits=3),
                    "non-inferior": "yes" if r.non_inferiority.non_inferior else "no",
                }
            )
        return pd.DataFrame(rows)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def load_table(config: ExperimentConfig, data_dir: str | None = None) -> OutcomeTable:
    """The config's outcome table: loaded, restricted to its models/categories, completed, subsampled."""
    from evals import sources

    table = sources.load(config.source, data_dir=data_dir)
    if config.models or config.categories:
        table = table.select(models=config.models, categories=config.categories)
    table = table.complete()
    if config.max_samples and table.n_samples > config.max_samples:
        rng = np.random.default_rng(config.split_seed)
        ids = table.sample_ids
        keep = ids[np.sort(rng.choice(len(ids), size=config.max_samples, replace=False))]
        table = table.select(sample_ids=keep)
    return table


def run_experiment(
    config: ExperimentConfig,
    *,
    table: OutcomeTable | None = None,
    data_dir: str | None = None,
    progress: Any = None,
) -> EvaluationResult:
    """Run one evaluation (no tracking, no files; see :mod:`evals.tracking` and :mod:`evals.report`).

    Args:
        config: The parsed config.
        table: The outcome table (default: loaded from ``config.source``).
        data_dir: Data folder for named sources.
        progress: Optional callable ``progress(message)`` told about each step.
    """
    from routers.registry import make_router

    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if table is None:
        table = load_table(config, data_dir)
    split = table.split(config.fractions, random_state=config.split_seed, stratify=config.stratify)
    test = split.test
    models = test.models
    Q, C = test.quality, test.cost
    n = test.n_samples
    W = stats.resample_counts(n, config.n_resamples, config.seed)

    s_qual, s_cost = Q.mean(axis=0), C.mean(axis=0)
    top = s_qual >= s_qual.max() - 1e-12
    best = int(np.where(top, s_cost, np.inf).argmin())
    cheap = int(np.lexsort((-s_qual, s_cost))[0])
    ref_q, ref_c = Q[:, best], C[:, best]
    oc = oracle_choice(Q, C)
    rows = np.arange(n)
    o_q, o_c = Q[rows, oc], C[rows, oc]
    best_single = {
        "name": models[best],
        "quality": float(s_qual[best]),
        "cost_per_1k": float(s_cost[best] * PER_1K),
        "quality_ci": stats.mean_interval(ref_q, W).to_dict(),
    }
    oracle = {
        "quality": float(o_q.mean()),
        "cost_per_1k": float(o_c.mean() * PER_1K),
        "quality_ci": stats.mean_interval(o_q, W).to_dict(),
    }
    cheapest = {
        "name": models[cheap],
        "quality": float(s_qual[cheap]),
        "cost_per_1k": float(s_cost[cheap] * PER_1K),
    }

    results = []
    for label, spec in zip(config.labels(), config.routers, strict=True):
        say(f"{label}: fitting on {split.train.n_samples} samples")
        router = make_router({"name": spec["name"], "params": spec.get("params", {})})
        t0 = time.perf_counter()
        router.fit(split.train)
        t1 = time.perf_counter()
        say(f"{label}: scoring validation and test")
        val_policy = router.policy(split.validation)
        test_policy = router.policy(test)
        t2 = time.perf_counter()
        frontier = compute_frontier(router, test, n_points=config.n_points, name=label, policy=test_policy)
        t3 = time.perf_counter()
        results.append(
            _measure(
                config,
                label,
                spec,
                router,
                frontier,
                split,
                val_policy,
                test_policy,
                W,
                ref_q,
                ref_c,
                o_q,
                best,
                cheap,
                {"fit": t1 - t0, "score": t2 - t1, "sweep": t3 - t2},
            )
        )
        say(f"{label}: done")
    return EvaluationResult(
        config=config,
        dataset=table.card.name,
        table=table,
        n_train=split.train.n_samples,
        n_validation=split.validation.n_samples,
        n_test=n,
        models=models,
        best_single=best_single,
        oracle=oracle,
        cheapest_single=cheapest,
        routers=results,
        cost_estimated=table.cost_estimated,
        seconds=time.perf_counter() - t_start,
    )


def _measure(
    config: ExperimentConfig,
    label: str,
    spec: dict[str, Any],
    router: Any,
    frontier: Frontier,
    split: Any,
    val_policy: Any,
    test_policy: Any,
    W: np.ndarray,
    ref_q: np.ndarray,
    ref_c: np.ndarray,
    o_q: np.ndarray,
    best: int,
    cheap: int,
    seconds: dict[str, float],
) -> RouterResult:
    test = split.test
    curve = frontier.router
    rq, rc = float(ref_q.mean()), float(ref_c.mean())
    cost_1k = curve.cost_per_1k
    parity = metrics.savings_at_parity(cost_1k, curve.quality, rq, rc * PER_1K, margin=config.margin)
    at95 = metrics.savings_at_parity(cost_1k, curve.quality, rq, rc * PER_1K, fraction=0.95)
    at99 = metrics.savings_at_parity(cost_1k, curve.quality, rq, rc * PER_1K, fraction=0.99)
    _, ps_cost, ps_score = frontier.per_sample()
    parity_ci, reach = stats.parity_interval(ps_cost, ps_score, ref_c, ref_q, W, margin=config.margin)
    two_model = None
    if len(frontier.models) == 2 and best != cheap:
        qw, qs = float(frontier.singles.quality[cheap]), float(frontier.singles.quality[best])
        share = curve.share[:, best]
        two_model = {
            "weak": frontier.models[cheap],
            "strong": frontier.models[best],
            "apgr": metrics.apgr(share, curve.quality, qw, qs),
            "cpt50": metrics.cpt(share, curve.quality, qw, qs, 0.5),
            "cpt80": metrics.cpt(share, curve.quality, qw, qs, 0.8),
        }
    cal = calibrate(
        router,
        split.validation,
        test,
        config.target,
        n_points=config.n_points,
        val_policy=val_policy,
        test_policy=test_policy,
    )
    _, c_cost, c_score = test_policy.outcomes(cal.lam)
    at_cal = stats.point_intervals(c_cost, c_score, ref_c, ref_q, W)
    ni = stats.non_inferiority(c_score, ref_q, W, margin=config.margin)
    cats = metrics.per_category(test.categories, c_cost, c_score, ref_c, ref_q, o_q)
    return RouterResult(
        label=label,
        spec={"name": spec["name"], "params": spec.get("params", {})},
        frontier=frontier,
        aiq=metrics.aiq(cost_1k, curve.quality),
        parity=parity,
        parity_ci=parity_ci,
        parity_reach=reach,
        at95=at95,
        at99=at99,
        two_model=two_model,
        calibrated=cal,
        at_calibrated=at_cal,
        non_inferiority=ni,
        categories=cats,
        seconds=seconds,
    )


def check_gates(result: EvaluationResult) -> list[str]:
    """Check the config's gates; returns the lines describing passed gates.

    Raises:
        GateFailed: naming every failed gate with the measured value and the threshold.
    """
    gates = dict(result.config.gates)
    if not {k for k in gates if k != "router"}:
        return []
    label = gates.pop("router", None) or result.routers[0].label
    r = result.router(label)
    drop = result.best_single["quality"] - r.at_calibrated["quality"].value
    savings = r.at_calibrated["savings"].value
    checks: list[tuple[str, bool, str]] = []
    for name, limit in gates.items():
        if name == "max_quality_drop":
            checks.append(
                (
                    name,
                    drop <= float(limit) + 1e-12,
                    f"quality drop vs {result.best_single['name']} is {drop:.4f} (limit {float(limit):.4f})",
                )
            )
        elif name == "min_savings":
            ok = savings is not None and savings >= float(limit) - 1e-12
            checks.append(
                (
                    name,
                    ok,
                    f"savings at the calibrated point are "
                    f"{'n/a' if savings is None else f'{savings:.1%}'} (minimum {float(limit):.1%})",
                )
            )
        elif name == "min_savings_at_parity":
            s = None if r.parity is None else r.parity.savings
            ok = s is not None and s >= float(limit) - 1e-12
            checks.append(
                (
                    name,
                    ok,
                    f"savings at parity are {'never reached' if s is None else f'{s:.1%}'} "
                    f"(minimum {float(limit):.1%})",
                )
            )
        elif name == "min_aiq":
            checks.append(
                (name, r.aiq >= float(limit) - 1e-12, f"AIQ is {r.aiq:.4f} (minimum {float(limit):.4f})")
            )
        elif name == "require_non_inferior":
            ni = r.non_inferiority
            ok = ni.non_inferior or not bool(limit)
            low = "n/a" if ni.low is None else f"{ni.low:+.4f}"
            checks.append(
                (
                    name,
                    ok,
                    f"quality difference CI lower bound is {low} (must be above "
                    f"{-ni.margin:+.4f}; p = {ni.p_value:.3g})",
                )
            )
        else:  # pragma: no cover - rejected when the config is parsed
            raise ConfigError(f"unknown gate {name!r}; valid: {', '.join(GATES)}")
    failed = [f"{name}: {msg}" for name, ok, msg in checks if not ok]
    if failed:
        raise GateFailed(
            f"router {label!r} on {result.dataset} (n_test={result.n_test}): " + "; ".join(failed)
        )
    return [f"{name}: {msg} - passed" for name, _, msg in checks]
