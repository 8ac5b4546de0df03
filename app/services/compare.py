"""Running a comparison: the settings, the prepared table, one cached evaluation per router, live progress.

Each router is evaluated exactly as ``routelab eval`` does (:func:`evals.workbench.experiment.run_experiment`:
fit on train, calibrate on validation, sweep and bootstrap on test) and cached on its own, so adding a router
to a comparison does not refit the others. Progress is reported for every long step, including the ones deep
inside a router's fit (distilling the static encoder, embedding prompts) through
:func:`routers.embeddings.progress_listener`; the page's progress callback is also where a Stop request
interrupts the run (Streamlit raises at the next page update), leaving finished routers and embedded prompts
cached.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from app.services.sources import load_table, stamp
from app.services.specs import spec_key, spec_label
from app.services.warmup import WARM_ENCODER, wait_for_warmup
from evals.outcomes import OutcomeTable

__all__ = [
    "SPLIT_FRACTIONS",
    "CompareSettings",
    "Progress",
    "combine",
    "evaluate_router",
    "operating_lam",
    "prepared_table",
    "result_warnings",
    "run_compare",
    "test_table",
]

#: Train / validation / test shares of samples (the same split as ``routelab eval``'s default).
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)

#: ``progress(fraction_done, text)``: what the page shows (a progress bar).
Progress = Callable[[float, str], None]


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
        """The :class:`evals.workbench.experiment.ExperimentConfig` these settings describe."""
        from evals.workbench.experiment import config_from_dict

        raw: dict[str, Any] = {
            "dataset": {
                "source": source,
                **({"models": list(self.models)} if self.models else {}),
                **({"max_samples": self.max_samples} if self.max_samples else {}),
            },
            "split": {"fractions": list(SPLIT_FRACTIONS), "seed": self.split_seed},
            "evaluation": {"n_points": self.n_points, "margin": self.margin, "n_resamples": self.n_resamples},
            "target": {"kind": "parity", "value": self.margin},
            "routers": [{"name": s["name"], "params": s.get("params") or {}, "label": spec_label(s)} for s in specs],
        }
        if name:
            raw["name"] = name
        return config_from_dict(raw, where="the Compare page")

    @classmethod
    def of_result(cls, result: Any) -> CompareSettings:
        """The settings an evaluation result was made with."""
        cfg = result.config
        return cls(
            models=tuple(cfg.models) if cfg.models else None,
            max_samples=cfg.max_samples,
            split_seed=cfg.split_seed,
            margin=cfg.margin,
            n_points=cfg.n_points,
            n_resamples=cfg.n_resamples,
        )


def prepared_table(source: str, settings: CompareSettings) -> OutcomeTable:
    """The task set as an evaluation sees it: model subset, complete samples, seeded subsample (cached).

    Mirrors :func:`evals.workbench.experiment.load_table`, but starts from this process's cached table.
    """
    return _prepared_cached(source, stamp(source), settings.models, settings.max_samples, settings.split_seed)


@st.cache_resource(max_entries=8, show_spinner=False)
def _prepared_cached(
    source: str, file_stamp: float, models: tuple[str, ...] | None, max_samples: int | None, seed: int
) -> OutcomeTable:
    table = load_table(source)
    # Samples the source already left out (some model missing) count too: the evaluation warns when that is
    # most of them, and completing again here would reset the count in the card.
    before = int(table.card.extra.get("incomplete_samples_dropped", 0) or 0)
    if models:
        table = table.select(models=list(models))
    table = table.complete()
    dropped = before + int(table.card.extra.get("incomplete_samples_dropped", 0) or 0)
    table.card = dataclasses.replace(table.card, extra={**table.card.extra, "incomplete_samples_dropped": dropped})
    if max_samples and table.n_samples > max_samples:
        rng = np.random.default_rng(seed)
        ids = table.sample_ids
        table = table.select(sample_ids=ids[np.sort(rng.choice(len(ids), size=max_samples, replace=False))])
    return table


def test_table(source: str, settings: CompareSettings) -> OutcomeTable:
    """The test split the Compare page measured on (same rows and order as the routers' policies)."""
    return _test_cached(source, stamp(source), settings)


@st.cache_resource(max_entries=8, show_spinner=False)
def _test_cached(source: str, file_stamp: float, settings: CompareSettings) -> OutcomeTable:
    config = settings.config(source, [{"name": "single"}])
    return (
        prepared_table(source, settings)
        .split(config.fractions, random_state=config.split_seed, stratify=config.stratify)
        .test
    )


def evaluate_router(
    source: str, spec: dict[str, Any], settings: CompareSettings, progress: Callable[[str], None] | None = None
) -> Any:
    """Evaluate one router exactly as ``routelab eval`` does (fit on train, measure on test); cached.

    Args:
        progress: Told each step's message (``"<label>: fitting on N samples"``, ...); not part of the cache key.

    Returns:
        An :class:`evals.workbench.experiment.EvaluationResult` with this one router.

    Raises:
        WorkbenchError: ConfigError / UnknownComponentError for a bad spec, SchemaError for bad data.
    """
    return _evaluate_cached(source, stamp(source), spec_key(spec), settings, progress)


#: Evaluations kept per process (least recently used dropped first).
MAX_EVALUATIONS = 64
_evaluations: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_evaluations_lock = threading.Lock()
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}


def _evaluate_cached(source: str, file_stamp: float, key: str, settings: CompareSettings, progress: Any = None) -> Any:
    """The process-wide cache of evaluations (shared by every session).

    Not ``st.cache_resource``: a run reports progress to the page while it computes, and Streamlit's caches
    replay a cached function's page updates, which fails for a progress bar created outside it. One session
    computes a given evaluation; another asking for the same one waits for it instead of fitting twice.
    """
    from evals.workbench.experiment import run_experiment

    cache_key = (source, file_stamp, key, settings)
    with _evaluations_lock:
        if cache_key in _evaluations:
            _evaluations.move_to_end(cache_key)
            return _evaluations[cache_key]
        key_lock = _key_locks.setdefault(cache_key, threading.Lock())
    with key_lock:
        with _evaluations_lock:
            if cache_key in _evaluations:
                return _evaluations[cache_key]
        config = settings.config(source, [json.loads(key)])
        result = run_experiment(config, table=prepared_table(source, settings), progress=progress)
        with _evaluations_lock:
            _evaluations[cache_key] = result
            while len(_evaluations) > MAX_EVALUATIONS:
                _evaluations.popitem(last=False)
            _key_locks.pop(cache_key, None)
    return result


def combine(results: list[Any], source: str, settings: CompareSettings) -> Any:
    """One :class:`~evals.workbench.experiment.EvaluationResult` holding the routers of single-router runs.

    Every run used the same table, split and bootstrap seed, so the references (best single model, oracle)
    and the intervals are the ones a single multi-router run would give.
    """
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


class _RunProgress:
    """Turns step messages and embedding counts into ``progress(fraction, text)`` for a run of n routers.

    Within a router: fitting (with any distilling / embedding inside it) is the first 60% of its share,
    scoring, sweeping and bootstrapping the rest. Updates are throttled to a few per second.
    """

    # Share of a router's time that fitting takes (embedding the train prompts dominates a first run).
    FIT_SHARE = 0.6

    def __init__(self, labels: list[str], report: Progress) -> None:
        self.labels, self.report = labels, report
        self.i, self.phase, self.last, self.shown = 0, "starting", 0.0, 0.0
        self.rates: dict[str, tuple[float, int]] = {}

    def _head(self) -> str:
        if self.phase == "warmup":
            return "Getting the encoder ready"
        return f"{self.labels[self.i]} ({self.i + 1}/{len(self.labels)})"

    def _send(self, within: float, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= 0.25:
            self.last = now
            # Never backwards: scoring embeds validation and test prompts after the train ones.
            self.shown = max(self.shown, min(1.0, (self.i + within) / len(self.labels)))
            self.report(self.shown, text)

    def start(self, i: int) -> None:
        self.i, self.phase = i, "starting"
        self._send(0.0, f"{self._head()}: splitting the task set, measuring the references", force=True)

    def message(self, msg: str) -> None:
        """A step message of :func:`run_experiment` (``"<label>: fitting on N samples"`` ...)."""
        what = msg.split(": ", 1)[-1]
        if what.startswith("fitting"):
            self.phase = "fitting"
            self._send(0.02, f"{self._head()}: {what}", force=True)
        elif what.startswith("scoring"):
            self.phase = "scoring"
            text = f"{self._head()}: scoring validation and test, sweeping the frontier, bootstrapping intervals"
            self._send(self.FIT_SHARE, text, force=True)
        elif what == "done":
            self._send(1.0, f"{self._head()}: done", force=True)

    def waiting(self, step: str, done: int, total: int) -> None:
        """Progress of the encoder warm-up a run waits for, before its first router."""
        self.i, self.phase = 0, "warmup"
        self.step(step, done, total)

    def step(self, step: str, done: int, total: int) -> None:
        """A long step inside the fit or scoring (:func:`routers.embeddings.progress_listener`)."""
        now = time.monotonic()
        if done == 0 or step not in self.rates:  # a new pass (validation after train prompts): new clock
            self.rates[step] = (now, done)
        t0, d0 = self.rates[step]
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
        left = f", ~{(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        unit = "tokens" if step.startswith("distilling") else "prompts"
        what = step
        if step.startswith("distilling"):
            what = f"{step} encoder (once per machine)"
        text = f"{self._head()}: {what}: {done:,} / {total:,} {unit}" + (f", {rate:,.0f}/s" if rate else "") + left
        if step.startswith("distilling") and done >= total:
            text += " - finishing: principal axes, writing the table"
        lo, hi = (0.02, self.FIT_SHARE) if self.phase != "scoring" else (self.FIT_SHARE, 0.95)
        self._send(lo + (hi - lo) * (done / max(total, 1)), text, force=done >= total)


def run_compare(
    source: str, specs: list[dict[str, Any]], settings: CompareSettings, progress: Progress | None = None
) -> Any:
    """Evaluate several routers (each cached on its own), telling ``progress(fraction, text)`` as it goes.

    The text says which router and which step (distilling the encoder, embedding prompts with counts, rate
    and time left, fitting, scoring and sweeping). Prompt vectors are shared by every router of the run
    (:func:`routers.embeddings.shared_vectors`; the full encoder's disk cache shares them across runs too).
    An exception raised by ``progress`` (Streamlit's stop or rerun) ends the run; routers already evaluated
    and prompts already embedded stay cached.

    Returns:
        The combined :class:`~evals.workbench.experiment.EvaluationResult`.
    """
    from routers.embeddings import progress_listener, shared_vectors

    labels = [spec_label(s) for s in specs]
    tracker = _RunProgress(labels, progress) if progress is not None else None
    out = []
    # Every router of the run reuses the prompt vectors the first one computed (per encoder).
    if progress is not None:
        progress(0.0, "Loading the task set (read once per process)...")
    prepared_table(source, settings)
    if any((s.get("params") or {}).get("encoder") == WARM_ENCODER for s in specs):
        # The encoder may still be being built in the background since the app opened: wait, showing it.
        wait_for_warmup(None if tracker is None else tracker.waiting)
    with shared_vectors():
        for i, spec in enumerate(specs):
            if tracker is None:
                out.append(evaluate_router(source, spec, settings))
                continue
            tracker.start(i)
            with progress_listener(tracker.step):
                out.append(evaluate_router(source, spec, settings, tracker.message))
    if progress is not None:
        progress(1.0, f"Done: {len(specs)} router(s) evaluated")
    return combine(out, source, settings)


def operating_lam(router_result: Any, point: str) -> float:
    """A router result's operating point: ``calibrated`` (chosen on validation) or ``parity`` (on test)."""
    if point == "parity" and router_result.parity is not None:
        return float(router_result.frontier.router.lam[router_result.parity.index])
    return float(router_result.calibrated.lam)


def result_warnings(result: Any) -> list[str]:
    """What makes a result's conclusions weak (too small a test split, models missing from most samples).

    The evaluation states them (``EvaluationResult.warnings``, the same sentences the CLI and the report
    print); the Compare page shows them above the chart.
    """
    return [str(w) for w in result.warnings]
