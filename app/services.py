"""Glue between the Streamlit pages and the library: cached loaders, upload validation, small summaries.

Pages stay thin: they lay out widgets and call these functions. Everything here that touches Streamlit is a
cache decorator; the rest is plain Python so it can be tested and reused.

Environment:
    ROUTELAB_APP_DEFAULT_SOURCE: the task set the app opens on (a source name such as ``mmlu-pro`` or a path
        to a long-format outcome file). Default: ``mmlu-pro``.
    ROUTELAB_APP_ROUTERS: comma-separated routers the Compare page preselects.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from evals.exceptions import SchemaError, WorkbenchError
from evals.outcomes import OutcomeTable
from evals.paths import cache_dir

__all__ = [
    "DEFAULT_ROUTERS",
    "DEFAULT_SOURCE_ENV",
    "MAX_UPLOAD_MB",
    "MODEL_PARAMS",
    "ROUTERS_ENV",
    "SPLIT_FRACTIONS",
    "CompareSettings",
    "available_sources",
    "category_breakdown",
    "category_counts",
    "combine",
    "current_source",
    "current_table",
    "decisions",
    "default_routers",
    "default_source",
    "evaluate_router",
    "export",
    "fitted_router",
    "frontier_figure",
    "list_evaluations",
    "list_experiments",
    "load_prices",
    "load_table",
    "log_to_mlflow",
    "mean_ci",
    "model_overview",
    "overview_of",
    "operating_lam",
    "overlay_figure",
    "parse_outcome_file",
    "point_summary",
    "point_table",
    "prepared_table",
    "ranking_frame",
    "router_class",
    "router_defaults",
    "router_description",
    "router_names",
    "router_runs",
    "run_compare",
    "run_frontier",
    "sample_detail",
    "save_table",
    "save_upload",
    "set_source",
    "settings_from_run",
    "single_model_points",
    "source_label",
    "spec_from_run",
    "spec_key",
    "spec_label",
    "test_table",
    "tracking_uri",
]

DEFAULT_SOURCE_ENV = "ROUTELAB_APP_DEFAULT_SOURCE"
#: Largest accepted upload. Kept equal to ``server.maxUploadSize`` in ``app/.streamlit/config.toml``;
#: checked here too so that the limit holds under AppTest and behind other front ends.
MAX_UPLOAD_MB = 50
_OUTCOME_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson", ".json")
_SOURCE_KEY = "routelab_source"


# ---------------------------------------------------------------------------------------------- sources
def default_source() -> str:
    """The task set the app opens on: ``$ROUTELAB_APP_DEFAULT_SOURCE`` or ``mmlu-pro``."""
    return os.environ.get(DEFAULT_SOURCE_ENV) or "mmlu-pro"


def available_sources() -> list[str]:
    """Names of the built-in task sets (the default first), from :func:`evals.sources.list_sources`."""
    names: list[str] = []
    try:
        from evals import sources

        # list_sources() gives (name, description) pairs; accept bare names too.
        names = [str(n[0] if isinstance(n, tuple | list) else n) for n in sources.list_sources()]
    except (ImportError, AttributeError, WorkbenchError):
        names = []
    default = default_source()
    return [default, *[n for n in names if n != default]]


def current_source() -> str:
    """The task set chosen in this session (the default until the user picks another)."""
    return st.session_state.get(_SOURCE_KEY) or default_source()


def set_source(source: str) -> None:
    """Switch this session to another task set (a source name or a path to an outcome file)."""
    st.session_state[_SOURCE_KEY] = source


def source_label(source: str) -> str:
    """A short display name: the source name, or a file's stem."""
    p = Path(source)
    return f"{p.stem} (file)" if p.suffix.lower() in _OUTCOME_SUFFIXES else source


def _is_file_source(source: str) -> bool:
    return Path(source).suffix.lower() in _OUTCOME_SUFFIXES


def _stamp(source: str) -> float:
    """A cache key part that changes when a file source changes on disk."""
    try:
        return Path(source).stat().st_mtime if _is_file_source(source) else 0.0
    except OSError:
        return 0.0


def load_table(source: str) -> OutcomeTable:
    """Load a task set's OutcomeTable once per process (cached; treat the result as read-only).

    Args:
        source: A built-in source name (``mmlu-pro``) or a path to a long-format file (Parquet, CSV, JSONL).

    Raises:
        WorkbenchError: DataNotFoundError / SchemaError / UnknownComponentError with the library's message.
    """
    return _load_table_cached(source, _stamp(source))


@st.cache_resource(max_entries=6, show_spinner="Loading outcomes...")
def _load_table_cached(source: str, stamp: float) -> OutcomeTable:
    if _is_file_source(source):
        path = Path(source)
        if not path.is_file():
            from evals.exceptions import DataNotFoundError

            raise DataNotFoundError(f"outcome file {source!r} does not exist")
        return parse_outcome_file(path.name, path.read_bytes(), origin=str(path))
    from evals import sources

    return sources.load(source)


def current_table() -> OutcomeTable:
    """The OutcomeTable of this session's task set."""
    return load_table(current_source())


@st.cache_resource(show_spinner=False)
def load_prices() -> Any:
    """The repo's price table (:class:`evals.prices.PriceTable`), or None when it cannot be read."""
    try:
        from evals.prices import PriceTable

        return PriceTable.load()
    except WorkbenchError:
        return None


# ---------------------------------------------------------------------------------------------- uploads
def parse_outcome_file(name: str, data: bytes, *, origin: str | None = None) -> OutcomeTable:
    """Parse and validate a long-format outcome file held in memory (nothing is written).

    Args:
        name: File name; its extension picks the parser (``.parquet``, ``.csv``, ``.jsonl``/``.ndjson``,
            ``.json``).
        data: The file's bytes.
        origin: Shown in error messages (default: ``name``).

    Returns:
        The validated table (incomplete samples are rejected, naming the first one).

    Raises:
        SchemaError: naming the file, and the row and column at fault when the content is wrong.
    """
    origin = origin or name
    suffix = Path(name).suffix.lower()
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise SchemaError(f"{name}: {len(data) / 2**20:.1f} MB is over the {MAX_UPLOAD_MB} MB upload limit")
    if not data:
        raise SchemaError(f"{name}: the file is empty")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.read_table(io.BytesIO(data))
            meta = pf.schema.metadata or {}
            frame = pf.to_pandas()
            card = None
            if b"routelab.card" in meta:
                from evals.outcomes import DatasetCard

                card = DatasetCard.from_json(meta[b"routelab.card"].decode())
        elif suffix == ".csv":
            frame, card = (
                pd.read_csv(
                    io.BytesIO(data),
                    keep_default_na=False,
                    na_values={
                        c: [""] for c in ("score", "cost_usd", "input_tokens", "output_tokens", "latency_s")
                    },
                ),
                None,
            )
        elif suffix in (".jsonl", ".ndjson"):
            frame, card = pd.read_json(io.BytesIO(data), lines=True, dtype=False), None
        elif suffix == ".json":
            frame, card = pd.read_json(io.BytesIO(data), dtype=False), None
        else:
            raise SchemaError(
                f"{name}: unsupported file type {suffix or '(none)'!r}; "
                f"use one of {', '.join(_OUTCOME_SUFFIXES)}"
            )
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file, reported by name
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(
            f"{name}: could not be read as {suffix[1:].upper() or 'a table'} ({first})"
        ) from None
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise SchemaError(f"{name}: no rows")
    from dataclasses import replace

    from evals.outcomes import DatasetCard

    table = OutcomeTable(
        frame, card or DatasetCard(name=Path(name).stem, source=f"uploaded file {name}"), origin=origin
    )
    if card is None and table.cost_estimated:
        table.card = replace(table.card, cost_note="some costs are flagged cost_estimated in the file")
    return table


def save_upload(table: OutcomeTable, data: bytes, name: str) -> Path:
    """Write an already validated upload to the user cache (content-addressed) and return its path."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(name).stem)[:60] or "upload"
    path = folder / f"{stem}-{digest}.parquet"
    if not path.exists():
        table.to_parquet(path)
    return path


def save_table(table: OutcomeTable) -> Path:
    """Write a derived table (e.g. with hand tags applied) to the user cache, named by its content."""
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(table.frame, index=False).to_numpy().tobytes()
    ).hexdigest()
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in table.card.name)[:60] or "table"
    path = folder / f"{stem}-{digest[:16]}.parquet"
    if not path.exists():
        table.to_parquet(path)
    return path


# ---------------------------------------------------------------------------------------------- summaries
def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a two-sided confidence interval of per-sample scores.

    Uses the Wilson score interval when every score is 0 or 1 (exact-match grading), the normal
    approximation otherwise.

    Returns:
        ``(mean, low, high)``; NaNs for an empty input.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    z = {0.9: 1.6448536, 0.95: 1.9599640, 0.99: 2.5758293}.get(level, 1.9599640)
    mean = float(v.mean())
    if np.isin(v, (0.0, 1.0)).all():
        denom = 1 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        return (mean, max(0.0, centre - half), min(1.0, centre + half))
    half = z * float(v.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return (mean, mean - half, mean + half)


def model_overview(table: OutcomeTable, prices: Any = None) -> pd.DataFrame:
    """One row per model: n, mean quality with 95% CI, cost per 1k requests, whether it is estimated, prices.

    Args:
        table: The task set.
        prices: A :class:`evals.prices.PriceTable` (list prices are shown where the model is in it).
    """
    q, c = table.quality, table.cost
    summary = table.model_summary().set_index("model")
    estimated = summary["cost_estimated"]
    # The first sample's provider per model (providers are per row; a model rarely has several).
    providers = dict(zip(table.models, table.wide_text("provider")[0], strict=True))
    rows = []
    for j, model in enumerate(table.models):
        mean, lo, hi = mean_ci(q[:, j])
        row: dict[str, Any] = {
            "model": model,
            "n": int(np.isfinite(q[:, j]).sum()),
            "quality": mean,
            "ci_low": lo,
            "ci_high": hi,
            "cost_per_1k_usd": float(np.nanmean(c[:, j]) * 1000.0),
            "cost": "ESTIMATED" if bool(estimated.get(model, False)) else "measured",
            "provider": providers.get(model, "") or "",
            "input_per_1m_usd": math.nan,
            "output_per_1m_usd": math.nan,
            "price_source": "",
        }
        if prices is not None:
            try:
                p = prices.price(model, row["provider"] or None)
            except WorkbenchError:
                try:
                    p = prices.price(model)
                except WorkbenchError:
                    p = None
            if p is not None:
                row.update(
                    provider=row["provider"] or p.provider,
                    input_per_1m_usd=p.input_per_1m,
                    output_per_1m_usd=p.output_per_1m,
                    price_source=f"{p.source} ({p.date})",
                )
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values("quality", ascending=False, kind="stable").reset_index(drop=True)


def overview_of(source: str) -> pd.DataFrame:
    """:func:`model_overview` of a task set with the repo's prices (cached per source and file stamp)."""
    return _overview_cached(source, _stamp(source))


@st.cache_data(max_entries=8, show_spinner=False)
def _overview_cached(source: str, stamp: float) -> pd.DataFrame:
    return model_overview(load_table(source), load_prices())


def category_counts(table: OutcomeTable) -> pd.Series:
    """Samples per category (largest first); '(none)' for samples without one."""
    cats = pd.Series(table.categories).replace("", "(none)")
    return cats.value_counts()


# ---------------------------------------------------------------------------------------------- compare
#: Train / validation / test shares of samples (the same split as ``routelab eval``'s default).
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
#: Routers the Compare page preselects (those registered are kept, in this order); override with a
#: comma-separated ``ROUTELAB_APP_ROUTERS``.
DEFAULT_ROUTERS = ("category", "knn", "mf", "cost-aware", "random-mix")
ROUTERS_ENV = "ROUTELAB_APP_ROUTERS"
#: Parameters whose value is a model name: the page offers the table's models.
MODEL_PARAMS = ("model", "strong", "weak", "default_model")


def router_names() -> list[str]:
    """Registered router names (importing :mod:`routers` registers every strategy)."""
    import routers

    return list(routers.router_registry.names())


def default_routers() -> list[str]:
    """The routers the Compare page preselects (``$ROUTELAB_APP_ROUTERS`` or :data:`DEFAULT_ROUTERS`)."""
    env = os.environ.get(ROUTERS_ENV, "")
    wanted = [n.strip() for n in env.split(",") if n.strip()] if env.strip() else list(DEFAULT_ROUTERS)
    have = set(router_names())
    return [n for n in wanted if n in have]


def router_defaults(name: str) -> dict[str, Any]:
    """A router's default parameters (from its constructor)."""
    from routers.registry import router_registry

    return router_registry.get(name)().get_params(deep=False)


def router_class(name: str) -> type:
    """The registered class of a router name."""
    from routers.registry import router_registry

    return router_registry.get(name)


def router_description(name: str) -> str:
    """The first line of a router's docstring."""
    from routers.registry import router_registry

    return router_registry.get(name).describe()


def spec_label(spec: dict[str, Any]) -> str:
    """A short label: the name plus the parameters that differ from the defaults, ``knn(k=20)``."""
    defaults = router_defaults(spec["name"])
    changed = {k: v for k, v in (spec.get("params") or {}).items() if defaults.get(k, object()) != v}
    if not changed:
        return str(spec["name"])
    return f"{spec['name']}(" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"


def spec_key(spec: dict[str, Any]) -> str:
    """A canonical JSON text of a spec (cache key)."""
    import json

    return json.dumps({"name": spec["name"], "params": spec.get("params") or {}}, sort_keys=True, default=str)


@dataclass(frozen=True)
class CompareSettings:
    """How the Compare page evaluates: the same knobs as a ``routelab eval`` config."""

    models: tuple[str, ...] | None = None
    """Model subset (None: every model of the task set)."""
    max_samples: int | None = None
    """Seeded subsample before splitting (None: all samples)."""
    split_seed: int = 0
    """Seed of the train / validation / test split."""
    margin: float = 0.005
    """Non-inferiority margin for parity (0.005 = 0.5 points)."""
    n_points: int = 200
    """Operating points per frontier."""
    n_resamples: int = 1000
    """Paired bootstrap resamples for the intervals."""

    def config(self, source: str, specs: list[dict[str, Any]], name: str = "") -> Any:
        """The :class:`evals.experiment.ExperimentConfig` these settings describe."""
        from evals.experiment import config_from_dict

        raw: dict[str, Any] = {
            "dataset": {
                "source": source,
                **({"models": list(self.models)} if self.models else {}),
                **({"max_samples": self.max_samples} if self.max_samples else {}),
            },
            "split": {"fractions": list(SPLIT_FRACTIONS), "seed": self.split_seed},
            "evaluation": {"n_points": self.n_points, "margin": self.margin, "n_resamples": self.n_resamples},
            "target": {"kind": "parity", "value": self.margin},
            "routers": [
                {"name": s["name"], "params": s.get("params") or {}, "label": spec_label(s)} for s in specs
            ],
        }
        if name:
            raw["name"] = name
        return config_from_dict(raw, where="the Compare page")


def prepared_table(source: str, settings: CompareSettings) -> OutcomeTable:
    """The task set as an evaluation sees it: model subset, complete samples, seeded subsample (cached).

    Mirrors :func:`evals.experiment.load_table`, but starts from this process's cached table.
    """
    return _prepared_cached(
        source, _stamp(source), settings.models, settings.max_samples, settings.split_seed
    )


@st.cache_resource(max_entries=8, show_spinner=False)
def _prepared_cached(
    source: str, stamp: float, models: tuple[str, ...] | None, max_samples: int | None, seed: int
) -> OutcomeTable:
    table = load_table(source)
    if models:
        table = table.select(models=list(models))
    table = table.complete()
    if max_samples and table.n_samples > max_samples:
        rng = np.random.default_rng(seed)
        ids = table.sample_ids
        table = table.select(sample_ids=ids[np.sort(rng.choice(len(ids), size=max_samples, replace=False))])
    return table


def evaluate_router(source: str, spec: dict[str, Any], settings: CompareSettings) -> Any:
    """Evaluate one router exactly as ``routelab eval`` does (fit on train, measure on test); cached.

    Returns:
        An :class:`evals.experiment.EvaluationResult` with this one router.

    Raises:
        WorkbenchError: ConfigError / UnknownComponentError for a bad spec, SchemaError for bad data.
    """
    return _evaluate_cached(source, _stamp(source), spec_key(spec), settings)


@st.cache_resource(max_entries=64, show_spinner=False)
def _evaluate_cached(source: str, stamp: float, key: str, settings: CompareSettings) -> Any:
    import json

    from evals.experiment import run_experiment

    spec = json.loads(key)
    config = settings.config(source, [spec])
    return run_experiment(config, table=prepared_table(source, settings))


def combine(results: list[Any], source: str, settings: CompareSettings) -> Any:
    """One :class:`~evals.experiment.EvaluationResult` holding the routers of several single-router runs.

    Every run used the same table, split and bootstrap seed, so the references (best single model, oracle)
    and the intervals are the ones a single multi-router run would give.
    """
    import dataclasses

    if not results:
        raise ValueError("nothing to combine")
    specs = [r.routers[0].spec for r in results]
    config = settings.config(source, specs, name=f"app-{results[0].dataset}")
    return dataclasses.replace(
        results[0],
        config=config,
        routers=[r.routers[0] for r in results],
        seconds=float(sum(r.seconds for r in results)),
    )


def run_compare(
    source: str, specs: list[dict[str, Any]], settings: CompareSettings, progress: Any = None
) -> Any:
    """Evaluate several routers (each cached on its own), telling ``progress(done, total, label)``.

    Returns:
        The combined :class:`~evals.experiment.EvaluationResult`.
    """
    out = []
    for i, spec in enumerate(specs):
        if progress is not None:
            progress(i, len(specs), spec_label(spec))
        out.append(evaluate_router(source, spec, settings))
    if progress is not None:
        progress(len(specs), len(specs), "done")
    return combine(out, source, settings)


# ---------------------------------------------------------------------------------------------- figures
def point_table(
    source: str, spec: dict[str, Any], settings: CompareSettings, max_points: int = 80
) -> pd.DataFrame:
    """A router's distinct operating points on test with a paired 95% interval of quality (cached).

    Columns: ``lam, cost_per_1k, quality, q_low, q_high, n, split`` (top models' traffic shares as text),
    plus ``share_<model>``.
    """
    return _points_cached(source, _stamp(source), spec_key(spec), settings, max_points)


@st.cache_resource(max_entries=64, show_spinner=False)
def _points_cached(
    source: str, stamp: float, key: str, settings: CompareSettings, max_points: int
) -> pd.DataFrame:
    from evals import stats

    result = _evaluate_cached(source, stamp, key, settings)
    fr = result.routers[0].frontier
    curve = fr.router
    # Keep the points where the curve moves, thinned evenly to at most max_points (hover stays readable).
    moved = np.r_[True, (np.abs(np.diff(curve.cost)) > 1e-15) | (np.abs(np.diff(curve.quality)) > 1e-15)]
    idx = np.flatnonzero(moved)
    if len(idx) > max_points:
        idx = idx[np.unique(np.linspace(0, len(idx) - 1, max_points).round().astype(int))]
    lams = curve.lam[idx]
    _, _, score = fr.per_sample(lams)
    n = score.shape[0]
    W = stats.resample_counts(n, settings.n_resamples, 0)
    draws = W @ score / n
    lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
    share = curve.share[idx]
    models = fr.models
    split = []
    for row in share:
        top = np.argsort(-row)[:3]
        split.append(", ".join(f"{models[j]} {row[j]:.0%}" for j in top if row[j] > 0.005))
    out = pd.DataFrame(
        {
            "lam": lams,
            "cost_per_1k": curve.cost_per_1k[idx],
            "quality": curve.quality[idx],
            "q_low": lo,
            "q_high": hi,
            "n": n,
            "split": split,
        }
    )
    for j, m in enumerate(models):
        out[f"share_{m}"] = share[:, j]
    return out


def single_model_points(source: str, settings: CompareSettings) -> pd.DataFrame:
    """Every single model on the test split: cost per 1k, quality with a paired 95% interval, n (cached)."""
    return _singles_cached(source, _stamp(source), settings)


@st.cache_resource(max_entries=16, show_spinner=False)
def _singles_cached(source: str, stamp: float, settings: CompareSettings) -> pd.DataFrame:
    from evals import stats

    config = settings.config(source, [{"name": "single"}])
    test = (
        prepared_table(source, settings)
        .split(config.fractions, random_state=config.split_seed, stratify=config.stratify)
        .test
    )
    q, c = test.quality, test.cost
    W = stats.resample_counts(q.shape[0], settings.n_resamples, 0)
    rows = []
    for j, m in enumerate(test.models):
        iv = stats.mean_interval(q[:, j], W)
        rows.append(
            {
                "model": m,
                "cost_per_1k": float(c[:, j].mean() * 1000.0),
                "quality": iv.value,
                "q_low": iv.low,
                "q_high": iv.high,
                "n": iv.n,
            }
        )
    return pd.DataFrame(rows)


def ranking_frame(result: Any) -> pd.DataFrame:
    """Routers ranked by savings at parity (with the paired 95% interval), best first."""
    rows = []
    for r in result.routers:
        p, ci = r.parity, r.parity_ci
        rows.append(
            {
                "router": r.label,
                "savings_at_parity_%": None if p is None else 100 * p.savings,
                "ci_low_%": None if ci.low is None else 100 * ci.low,
                "ci_high_%": None if ci.high is None else 100 * ci.high,
                "reached_in_%_of_resamples": 100 * r.parity_reach,
                "quality_at_parity": None if p is None else p.quality,
                "cost_per_1k_at_parity": None if p is None else p.cost,
                "savings_at_95%_quality_%": None if r.at95 is None else 100 * r.at95.savings,
                "savings_at_99%_quality_%": None if r.at99 is None else 100 * r.at99.savings,
                "aiq": r.aiq,
                "n": ci.n,
            }
        )
    out = pd.DataFrame(rows)
    key = out["savings_at_parity_%"].astype(float).fillna(-np.inf)
    return out.iloc[np.argsort(-key.to_numpy(), kind="stable")].reset_index(drop=True)


def frontier_figure(result: Any, points: dict[str, pd.DataFrame], singles: pd.DataFrame) -> Any:
    """One plotly frontier: every router's curve, single models with intervals, the oracle, the hulls.

    Args:
        result: The combined evaluation (references come from its first router's frontier).
        points: Router label -> :func:`point_table` frame.
        singles: :func:`single_model_points` frame.
    """
    import plotly.graph_objects as go

    from evals.metrics import nondecreasing_hull

    fr = result.routers[0].frontier
    est = " (ESTIMATED)" if result.cost_estimated else ""
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    fig.add_trace(
        go.Scatter(
            x=singles["cost_per_1k"],
            y=singles["quality"],
            mode="markers+text",
            name="single models",
            text=singles["model"],
            textposition="top center",
            textfont={"size": 9},
            marker={"symbol": "diamond", "size": 9, "color": "#616161"},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": singles["q_high"] - singles["quality"],
                "arrayminus": singles["quality"] - singles["q_low"],
                "thickness": 1,
                "width": 3,
            },
            customdata=singles[["model", "q_low", "q_high", "n"]].to_numpy(),
            hovertemplate="<b>%{customdata[0]}</b><br>$%{x:.4f} per 1k requests"
            + est
            + "<br>quality %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}] (95% CI, n=%{customdata[3]})"
            "<extra>single model</extra>",
        )
    )
    rnd = fr.random
    fig.add_trace(
        go.Scatter(
            x=rnd.cost_per_1k,
            y=rnd.quality,
            mode="lines",
            name="random mix",
            line={"color": "grey", "dash": "dashdot", "width": 1},
            hoverinfo="skip",
        )
    )
    o = fr.oracle
    fig.add_trace(
        go.Scatter(
            x=o.cost_per_1k,
            y=o.quality,
            mode="lines",
            name="oracle",
            line={"dash": "dot", "color": "black", "width": 1},
            hovertemplate="oracle<br>$%{x:.4f} per 1k<br>quality %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=o.cost_per_1k[-1:],
            y=o.quality[-1:],
            mode="markers",
            name="oracle point",
            marker={"symbol": "star", "size": 13, "color": "black"},
            hovertemplate="oracle<br>$%{x:.4f} per 1k<br>quality %{y:.3f}<extra></extra>",
        )
    )
    best = result.best_single
    fig.add_hline(
        y=best["quality"] - result.config.margin,
        line={"dash": "dot", "color": "#c62828", "width": 1},
        annotation_text=f"parity: {best['name']} - {result.config.margin:g}",
        annotation_position="bottom right",
    )
    for i, r in enumerate(result.routers):
        pts = points[r.label]
        color = palette[i % len(palette)]
        hc, hq = nondecreasing_hull(r.frontier.router.cost_per_1k, r.frontier.router.quality)
        fig.add_trace(
            go.Scatter(
                x=hc,
                y=hq,
                mode="lines",
                name=f"{r.label} hull",
                legendgroup=r.label,
                showlegend=False,
                line={"color": color, "dash": "dash", "width": 1},
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=pts["cost_per_1k"],
                y=pts["quality"],
                mode="lines+markers",
                name=r.label,
                legendgroup=r.label,
                marker={"size": 4},
                line={"color": color},
                customdata=pts[["lam", "q_low", "q_high", "n", "split"]].to_numpy(),
                hovertemplate=f"<b>{r.label}</b><br>operating point lam=%{{customdata[0]:.3g}} "
                "$/request per +1 quality"
                "<br>$%{x:.4f} per 1k requests"
                + est
                + "<br>quality %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}] "
                "(95% CI, n=%{customdata[3]})"
                "<br>traffic: %{customdata[4]}<extra></extra>",
            )
        )
    costs = np.concatenate([singles["cost_per_1k"].to_numpy(), o.cost_per_1k])
    pos = costs[costs > 0]
    log_x = len(pos) > 0 and pos.max() / pos.min() > 20
    fig.update_layout(
        xaxis_title=f"$ per 1,000 requests{est}" + (" (log scale)" if log_x else ""),
        yaxis_title=f"mean quality on the test split (n = {fr.n_samples})",
        xaxis_type="log" if log_x else "linear",
        height=600,
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 20, "b": 10},
        # Below the plot, so it never hides the toolbar or the curves.
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0},
        hovermode="closest",
    )
    return fig


# ---------------------------------------------------------------------------------------------- tracking
_MLFLOW_LOCK = threading.Lock()


def log_to_mlflow(result: Any) -> str:
    """Log a Compare-page evaluation exactly like ``routelab eval`` (parent run + a child per router).

    Returns:
        The parent run id.

    Raises:
        WorkbenchError: (TrackingError) when the store refuses the run.
    """
    from evals.tracking import log_evaluation

    # MLflow's fluent API keeps the active run per process and is not thread-safe; Streamlit runs each
    # session in its own thread, so two sessions must not log at once.
    with _MLFLOW_LOCK:
        return log_evaluation(result)


def tracking_uri() -> str:
    """The MLflow tracking URI in use (``MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``)."""
    from evals.tracking import tracking_uri as uri

    return uri()


# ---------------------------------------------------------------------------------------------- drill down
def test_table(source: str, settings: CompareSettings) -> OutcomeTable:
    """The test split the Compare page measured on (same rows and order as the routers' policies)."""
    return _test_cached(source, _stamp(source), settings)


@st.cache_resource(max_entries=8, show_spinner=False)
def _test_cached(source: str, stamp: float, settings: CompareSettings) -> OutcomeTable:
    config = settings.config(source, [{"name": "single"}])
    return (
        prepared_table(source, settings)
        .split(config.fractions, random_state=config.split_seed, stratify=config.stratify)
        .test
    )


def operating_lam(router_result: Any, point: str) -> float:
    """A router result's operating point: ``calibrated`` (chosen on validation) or ``parity`` (on test)."""
    if point == "parity" and router_result.parity is not None:
        return float(router_result.frontier.router.lam[router_result.parity.index])
    return float(router_result.calibrated.lam)


def decisions(result: Any, test: OutcomeTable, point: str = "calibrated") -> pd.DataFrame:
    """Per test prompt: each router's chosen model and score at its operating point, and the references.

    Columns: ``sample_id, category, prompt, best_model_score, oracle_model, oracle_score`` and per router
    ``<label>: model`` / ``<label>: score`` / ``<label>: cost``.
    """
    from evals.frontier import oracle_choice

    models = result.routers[0].frontier.models
    t = test if test.models == models else test.select(models=list(models))
    Q, C = t.quality, t.cost
    best = list(models).index(result.best_single["name"])
    oc = oracle_choice(Q, C)
    rows = np.arange(len(oc))
    out = pd.DataFrame(
        {
            "sample_id": t.sample_ids,
            "category": t.categories,
            "prompt": t.prompts,
            "best_model_score": Q[:, best],
            "oracle_model": np.asarray(models, dtype=object)[oc],
            "oracle_score": Q[rows, oc],
        }
    )
    for r in result.routers:
        choice, cost, score = r.frontier.policy.outcomes(operating_lam(r, point))
        out[f"{r.label}: model"] = np.asarray(models, dtype=object)[choice]
        out[f"{r.label}: score"] = score
        out[f"{r.label}: cost"] = cost
    return out


def category_breakdown(result: Any, test: OutcomeTable, point: str = "calibrated") -> pd.DataFrame:
    """Per category and router at its operating point: n, quality, $ per 1k, and the best model's and
    oracle's quality on the same samples (:func:`evals.metrics.per_category`)."""
    from evals.frontier import oracle_choice
    from evals.metrics import per_category

    models = result.routers[0].frontier.models
    t = test if test.models == models else test.select(models=list(models))
    Q, C = t.quality, t.cost
    best = list(models).index(result.best_single["name"])
    oc = oracle_choice(Q, C)
    o_q = Q[np.arange(len(oc)), oc]
    frames = []
    for r in result.routers:
        _, cost, score = r.frontier.policy.outcomes(operating_lam(r, point))
        f = per_category(t.categories, cost, score, C[:, best], Q[:, best], o_q)
        f.insert(0, "router", r.label)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def sample_detail(test: OutcomeTable, sample_id: str) -> pd.DataFrame:
    """Every model's answer to one test prompt: model, response, score, cost, grader."""
    f = test.frame
    rows = f[f["sample_id"].astype(str) == str(sample_id)]
    return rows[["model", "response", "score", "cost_usd", "cost_estimated", "grader"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- experiments
def _client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri())


def list_experiments() -> pd.DataFrame:
    """RouteLab experiments (one per task set, ``routelab/<dataset>``) at the tracking URI in use."""
    exps = [e for e in _client().search_experiments() if e.name.startswith("routelab/")]
    return pd.DataFrame({"experiment_id": [e.experiment_id for e in exps], "name": [e.name for e in exps]})


def list_evaluations(experiment_id: str, max_results: int = 200) -> pd.DataFrame:
    """The evaluation (parent) runs of an experiment, newest first, with their key params and metrics."""
    runs = _client().search_runs(
        [experiment_id],
        filter_string="tags.`routelab.kind` = 'evaluation'",
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    rows = []
    for r in runs:
        p, m = r.data.params, r.data.metrics
        rows.append(
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name or "",
                "started": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S"),
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
    return pd.DataFrame(rows)


def router_runs(parent_ids: list[str]) -> pd.DataFrame:
    """The per-router child runs of some evaluations: params (``param.*``) and metrics side by side."""
    if not parent_ids:
        return pd.DataFrame()
    client = _client()
    rows = []
    for pid in parent_ids:
        parent = client.get_run(pid)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'"
        )
        for r in children:
            row = {
                "evaluation": parent.info.run_name or pid[:8],
                "parent_run_id": pid,
                "run_id": r.info.run_id,
                "router": r.data.params.get("label", r.info.run_name),
            }
            row.update({f"param.{k}": v for k, v in sorted(r.data.params.items()) if k not in ("label",)})
            row.update(dict(sorted(r.data.metrics.items())))
            rows.append(row)
    return pd.DataFrame(rows)


@st.cache_data(max_entries=64, show_spinner=False)
def run_frontier(run_id: str) -> pd.DataFrame:
    """The frontier table a router run logged (``frontier/frontier.csv``); empty when it has none."""
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="frontier/frontier.csv", tracking_uri=tracking_uri()
        )
    except Exception:  # noqa: BLE001 - a run without that artifact (or an unreachable store)
        return pd.DataFrame()
    return pd.read_csv(path)


def overlay_figure(curves: dict[str, pd.DataFrame]) -> Any:
    """Router frontiers of several runs on one plot (label -> frontier table with kind == 'router')."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, frame in curves.items():
        f = frame[frame["kind"] == "router"]
        fig.add_trace(
            go.Scatter(
                x=f["cost_per_1k"],
                y=f["quality"],
                mode="lines+markers",
                name=label,
                marker={"size": 3},
                customdata=f[["lam"]].to_numpy(),
                hovertemplate=f"<b>{label}</b><br>lam=%{{customdata[0]:.3g}}<br>"
                "$%{x:.4f} per 1k<br>quality %{y:.3f}<extra></extra>",
            )
        )
    first = next(iter(curves.values()), None)
    if first is not None:
        s = first[first["kind"] == "single"]
        fig.add_trace(
            go.Scatter(
                x=s["cost_per_1k"],
                y=s["quality"],
                mode="markers",
                name="single models",
                text=s["curve"],
                marker={"symbol": "diamond", "color": "#616161"},
                hovertemplate="%{text}<br>$%{x:.4f} per 1k<br>quality %{y:.3f}<extra></extra>",
            )
        )
        est = bool(first["cost_estimated"].any()) if "cost_estimated" in first else False
    else:
        est = False
    xs = np.concatenate([f["cost_per_1k"].to_numpy(dtype=float) for f in curves.values()] or [np.zeros(0)])
    pos = xs[xs > 0]
    log_x = len(pos) > 0 and pos.max() / pos.min() > 20
    fig.update_layout(
        xaxis_title="$ per 1,000 requests"
        + (" (ESTIMATED)" if est else "")
        + (" (log scale)" if log_x else ""),
        xaxis_type="log" if log_x else "linear",
        yaxis_title="mean quality (test split)",
        template="plotly_white",
        height=520,
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0},
    )
    return fig


# ---------------------------------------------------------------------------------------------- export
def point_summary(result: Any, router_result: Any, lam: float, n_resamples: int = 1000) -> dict[str, Any]:
    """What a router does at operating point ``lam`` on the test split, with paired 95% intervals.

    Returns:
        A JSON-able dict for the export's ``measurement``: quality, cost per 1k, quality difference and
        savings against the best single model (each ``value`` and ``[low, high]``), n, traffic split.
    """
    from evals import stats

    fr = router_result.frontier
    choice, cost, score = fr.policy.outcomes(float(lam))
    test = test_table(result.config.source, _settings_of(result))
    t = test if test.models == fr.models else test.select(models=list(fr.models))
    best = list(fr.models).index(result.best_single["name"])
    W = stats.resample_counts(len(score), n_resamples, 0)
    iv = stats.point_intervals(cost, score, t.cost[:, best], t.quality[:, best], W)
    share = np.bincount(choice, minlength=len(fr.models)) / len(choice)
    out: dict[str, Any] = {
        "task_set": result.dataset,
        "router": router_result.label,
        "lam": float(lam),
        "n_test_samples": int(len(score)),
        "reference_model": result.best_single["name"],
        "cost_estimated": bool(result.cost_estimated),
    }
    for key, interval in iv.items():
        out[key] = interval.value
        out[f"{key}_ci"] = [interval.low, interval.high]
    out["traffic_share"] = {m: round(float(x), 4) for m, x in zip(fr.models, share, strict=True) if x > 0}
    return out


def _settings_of(result: Any) -> CompareSettings:
    cfg = result.config
    return CompareSettings(
        models=tuple(cfg.models) if cfg.models else None,
        max_samples=cfg.max_samples,
        split_seed=cfg.split_seed,
        margin=cfg.margin,
        n_points=cfg.n_points,
        n_resamples=cfg.n_resamples,
    )


def settings_from_run(parent_run_id: str) -> tuple[str, CompareSettings]:
    """The task set and settings an MLflow evaluation run was made with (to refit one of its routers).

    Raises:
        WorkbenchError: when the run lacks the params RouteLab logs.
    """
    import json

    from evals.exceptions import ConfigError

    params = _client().get_run(parent_run_id).data.params
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
    import json

    from evals.exceptions import ConfigError

    params = _client().get_run(run_id).data.params
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


def fitted_router(source: str, spec: dict[str, Any], settings: CompareSettings) -> Any:
    """The router of ``spec`` fitted on the same train split as its evaluation (cached).

    :class:`evals.experiment.RouterResult` does not keep the fitted router, so it is refitted here; fitting
    is deterministic (same train rows, same ``random_state``), and :func:`export` checks that the refit
    router makes the measured decisions on every test prompt before writing anything.
    """
    return _fitted_cached(source, _stamp(source), spec_key(spec), settings)


@st.cache_resource(max_entries=16, show_spinner="Fitting the router on the train split...")
def _fitted_cached(source: str, stamp: float, key: str, settings: CompareSettings) -> Any:
    import json

    from routers.registry import make_router

    config = settings.config(source, [json.loads(key)])
    split = prepared_table(source, settings).split(
        config.fractions, random_state=config.split_seed, stratify=config.stratify
    )
    return make_router(json.loads(key)).fit(split.train)


def export(router_result: Any, result: Any, lam: float, out_dir: str, overwrite: bool = False) -> Path:
    """Write the deployable folder of a router at ``lam`` (via :func:`routers.export.export_router`).

    Raises:
        WorkbenchError: (ExportError) for a non-exportable router or a bad folder; SchemaError if the refit
            router's decisions on the test split differ from the measured ones (nothing is written then).
    """
    from routers.export import export_router

    settings = _settings_of(result)
    router = fitted_router(result.config.source, router_result.spec, settings)
    measured, _, _ = router_result.frontier.policy.outcomes(float(lam))
    again, _, _ = router.policy(test_table(result.config.source, settings)).outcomes(float(lam))
    if not np.array_equal(measured, again):
        raise SchemaError(
            f"refitting {router_result.label} did not reproduce the measured decisions on "
            f"{int((measured != again).sum())} of {len(measured)} test prompts; not exporting"
        )
    return export_router(
        router,
        out_dir,
        lam=float(lam),
        table_card=result.table.card,
        prices=load_prices(),
        measurement=point_summary(result, router_result, lam),
        overwrite=overwrite,
    )
