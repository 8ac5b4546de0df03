"""Promised vs delivered: an export's measured saving and quality beside what its decision log shows live.

``routelab logs report LOGDIR --export EXPORT`` and the app's *Production* page build a :class:`ProductionReport`
with :func:`build_report`; it reads the export (so it lives in the workbench layer) and leaves the log maths to
:mod:`evals.production`:

- **promised**: the export's ``measurement`` block (saving and quality difference against the best single model,
  with their 95% intervals, on the test split at the exported point);
- **delivered**: the router arm against the control arm (A/B cost per request and saving, with intervals,
  :func:`evals.production.delivered.cost_ab`) and win/tie/loss against the reference from shadow grades (with
  intervals), overall, per category and per time bucket; whether the delivered saving lies inside the promised
  interval;
- **off-policy** estimates (IPS, SNIPS, DR with bootstrap intervals, :mod:`evals.production.offpolicy`) of what
  another operating point of the export, or another exported router, would have cost and scored on the logged
  traffic;
- **drift flags** (:mod:`evals.production.drift`): categories whose live quality fell below the offline interval;
- **upstream telemetry** (:func:`telemetry_summary`): per upstream, the proxy's logged snapshots of its moving
  latency and error rate over the logged period (the last values and the worst error rate).

The report renders as Markdown (:meth:`ProductionReport.to_markdown`) and JSON (:meth:`ProductionReport.to_dict`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from evals.exceptions import DataNotFoundError
from evals.formatting import format_interval
from evals.production.delivered import (
    bucket_of,
    choose_bucket,
    cost_ab,
    graded_rows,
    grouped,
    verdict_summary,
)
from evals.production.drift import DEFAULT_MIN_N, drift_flags
from evals.production.log_reader import LogReadResult, read_log
from evals.production.offpolicy import LoggedDecisions, estimate, estimate_policy
from evals.production.propensity import greedy_choice
from evals.production.records import prompt_hash
from evals.stats import DEFAULT_RESAMPLES, mean_interval, resample_counts

__all__ = ["ProductionReport", "build_report", "offline_by_category", "prompts_from_table", "telemetry_summary"]


@dataclass
class ProductionReport:
    """Everything the report shows, JSON-able through :meth:`to_dict` (see the module docstring)."""

    log_dir: str
    export: str
    log: dict[str, Any]
    promised: dict[str, Any]
    delivered: dict[str, Any]
    by_category: dict[str, dict[str, Any]]
    by_time: dict[str, dict[str, Any]]
    bucket: str
    drift: list[dict[str, Any]]
    offpolicy: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    telemetry: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per upstream: its logged telemetry snapshots summarised (:func:`telemetry_summary`)."""

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-able dict."""
        return {k: getattr(self, k) for k in ("log_dir", "export", "log", "promised", "delivered", "by_category",
                                               "by_time", "bucket", "drift", "offpolicy", "telemetry", "notes")}

    @property
    def saving_inside_promise(self) -> bool | None:
        """Whether the delivered saving's point estimate lies inside the promised interval (None if unknown): the
        saving of the router's own choices when the log has exploration picks (``delivered["saving_compared"]``),
        since the promise measured the exported point without them."""
        return self.delivered.get("saving_inside_promise")

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics (for MLflow): promised and delivered saving, quality delta, shares, drift count."""
        out: dict[str, float] = {}

        def put(prefix: str, iv: Mapping[str, Any] | None) -> None:
            for k in ("value", "low", "high"):
                if iv and iv.get(k) is not None:
                    out[prefix if k == "value" else f"{prefix}_{k}"] = float(iv[k])

        put("promised_saving", self.promised.get("savings"))
        put("promised_quality_diff", self.promised.get("quality_diff"))
        d = self.delivered
        put("delivered_saving", d["cost"].get("saving"))
        for arm in ("router", "control"):
            if d["cost"].get(arm) and d["cost"][arm].get("cost_per_1k"):
                put(f"{arm}_cost_per_1k", d["cost"][arm]["cost_per_1k"])
                out[f"{arm}_requests"] = float(d["cost"][arm]["n"])
        q = d["quality"]
        out["graded"] = float(q.get("n", 0))
        for k in ("win", "tie", "loss", "quality_delta"):
            put(f"live_{k}", q.get(k))
        out["drift_flags"] = float(sum(f["flagged"] for f in self.drift))
        worst = [t["worst_error_rate"] for t in self.telemetry.values() if t.get("worst_error_rate") is not None]
        if worst:
            out["upstream_worst_error_rate"] = float(max(worst))
        for est in self.offpolicy:
            for metric, block in est.get("estimates", {}).items():
                for name in ("ips", "snips", "dr"):
                    if block.get(name):
                        put(f"offpolicy_{est['key']}_{metric}_{name}", block[name])
        return out

    def to_markdown(self) -> str:
        """The report for people (Markdown; every figure with its sample size and interval)."""
        from evals.workbench.production_report_md import render_markdown  # the renderer is long; kept apart

        return render_markdown(self)


def _promised(manifest: Mapping[str, Any], measurement: Any) -> dict[str, Any]:
    block = measurement.to_dict() if measurement is not None else {}
    return {
        "router": manifest.get("router", {}).get("name"),
        "lam": manifest.get("operating_point", {}).get("lam"),
        "models": list(manifest.get("models", [])),
        "measured": measurement is not None,
        "lines": measurement.lines() if measurement is not None else [],
        **{k: block.get(k) for k in ("savings", "quality", "quality_diff", "cost_per_1k_usd", "n_test", "dataset",
                                      "point", "reference_model", "reference_quality", "cost_estimated")},
        "raw": block,
    }


def _log_block(read: LogReadResult) -> dict[str, Any]:
    decisions = read.records
    times = [d.time for d in decisions]
    return {
        "summary": read.summary(),
        "requests": len(decisions),
        "routed": sum(d.chosen is not None for d in decisions),
        "arms": dict(Counter(d.arm for d in decisions)),
        "explored": sum(d.explored for d in decisions),
        "epsilon": sorted({d.epsilon for d in decisions if d.chosen is not None}),
        "shadow_pairs": len(read.shadow_pairs),
        "grades": len(read.grades),
        "telemetry_snapshots": len(read.telemetry),
        "feedback": len(read.feedback),
        "start": min(times) if times else None,
        "end": max(times) if times else None,
        "skipped": dict(read.errors),
    }


def _slice_summary(decisions: Sequence[Any], rows: Sequence[Any], n_resamples: int, seed: int) -> dict[str, Any]:
    router_rows = [r for r in rows if r.arm == "router"]
    return {
        "requests": len(decisions),
        "cost": cost_ab(decisions, n_resamples=n_resamples, seed=seed),
        "quality": verdict_summary(router_rows, n_resamples=n_resamples, seed=seed),
    }


def build_report(
    log_dir: str | os.PathLike[str],
    export: str | os.PathLike[str],
    *,
    compare: Sequence[str | os.PathLike[str]] = (),
    lams: Sequence[float] = (),
    prompts: Mapping[str, str] | None = None,
    offline: Any = None,
    bucket: str | None = None,
    grader: str | None = None,
    min_n: int = DEFAULT_MIN_N,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> ProductionReport:
    """Build the promised-vs-delivered report of a decision log served by ``export``.

    Args:
        log_dir: The decision-log directory (``[log] dir`` of the proxy).
        export: The export folder that served the traffic (its measurement is the promise).
        compare: Other export folders to estimate off-policy on the logged traffic (their models must be among
            the logged candidates; their decisions need the prompts: stored texts or ``prompts``).
        lams: Other operating points of ``export`` to estimate off-policy.
        prompts: ``prompt_hash -> prompt text`` for requests whose text the log did not store.
        offline: The evaluation's outcomes (an OutcomeTable, e.g. the test split): per-category offline quality
            differences of the export against the reference, so each category's drift flag compares with its own
            offline interval (without it, with the overall one).
        bucket: ``hour`` or ``day`` (default: by the log's span).
        grader: The grader label whose grades count (default: exact over judge per request).
        min_n: Graded requests a category needs before it can be flagged as drifting.

    Raises:
        DataNotFoundError: for a missing log directory or a log without decisions.
        ExportError: for an export folder that does not load.
    """
    from routers.export.loader import load_exported  # the report reads exports: the workbench's job

    read = read_log(log_dir)
    if not read.records:
        raise DataNotFoundError(f"decision log {str(log_dir)!r} has no decision records ({read.summary()})")
    exported = load_exported(export)
    measurement = exported.measurement
    promised = _promised(exported.manifest, measurement)
    decisions = read.records
    rows = graded_rows(decisions, read.grades, grader)
    width = bucket or choose_bucket([d.time for d in decisions])
    notes: list[str] = []
    overall = _slice_summary(decisions, rows, n_resamples, seed)
    promise = promised.get("savings") or {}
    compared = overall["cost"].get("saving")
    explored = [d for d in decisions if d.explored and d.arm != "control"]
    overall["explored_picks"] = len(explored)
    if explored and overall["cost"]["control"] is not None:
        # Exploration picks are random, so the rest of the router arm is a random sample of its own choices: the
        # saving of the exported point alone, which is what the promise measured and what the verdict compares;
        # the delivered saving with the picks is shown beside it (the price of exploring).
        ids = {d.request_id for d in explored}
        own = cost_ab([d for d in decisions if d.request_id not in ids], n_resamples=n_resamples, seed=seed)
        overall["saving_own_choices"] = compared = own["saving"]
        notes.append(f"the router arm includes {len(explored):,} exploration pick(s) (random models, so that "
                     f"off-policy estimates have support); without them its saving is "
                     f"{format_interval(own['saving'], pct=True)}, with them "
                     f"{format_interval(overall['cost'].get('saving'), pct=True)}: the promise is compared with "
                     "the router's own choices")
    inside = None
    if compared and compared.get("value") is not None and promise.get("low") is not None:
        inside = bool(promise["low"] <= compared["value"] <= promise["high"])
    overall["saving_compared"] = compared
    overall["saving_inside_promise"] = inside
    control = [r for r in rows if r.arm == "control"]
    overall["control_quality"] = verdict_summary(control, n_resamples=n_resamples, seed=seed)
    by_cat = {cat or "(none)": _slice_summary(ds, [r for r in rows if (r.category or "(none)") == (cat or "(none)")],
                                              n_resamples, seed)
              for cat, ds in sorted(grouped(decisions, lambda d: d.category or "").items())}
    by_time = {label: _slice_summary(ds, [r for r in rows if bucket_of(r.time, width) == label], n_resamples, seed)
               for label, ds in sorted(grouped(decisions, lambda d: bucket_of(d.time, width)).items())}
    offline_block = dict(promised["raw"])
    if offline is not None:
        per_category = offline_by_category(exported, offline, n_resamples=n_resamples, seed=seed, notes=notes)
        offline_block["extra"] = {**(offline_block.get("extra") or {}), "per_category": per_category}
        promised["per_category"] = per_category
    flags = [f.to_dict() for f in drift_flags(rows, offline_block, bucket=width, min_n=min_n,
                                              n_resamples=n_resamples, seed=seed)]
    if measurement is None:
        notes.append("the export has no measurement block: nothing was promised to compare with")
    refs = sorted({r.reference for r in rows})
    if refs and promised.get("reference_model") and refs != [promised["reference_model"]]:
        notes.append(f"shadow reference {', '.join(refs)} differs from the export's reference model "
                     f"{promised['reference_model']}: live quality deltas are against a different model")
    if overall["cost"]["control"] is None:
        notes.append("no control arm in the log (no [rollout]): the saving against control cannot be measured")
    unknown = sum((overall["cost"][a] or {}).get("n_cost_unknown", 0) for a in ("router", "control"))
    if unknown:
        notes.append(f"{unknown:,} routed request(s) had no cost (no usage from the upstream); left out of costs")
    offpolicy = _offpolicy(read, exported, compare, lams, prompts or {}, rows, n_resamples, seed, notes)
    return ProductionReport(
        log_dir=str(log_dir), export=str(export), log=_log_block(read), promised=promised,
        delivered=overall, by_category=by_cat, by_time=by_time, bucket=width, drift=flags, offpolicy=offpolicy,
        notes=notes, telemetry=telemetry_summary(read),
    )


def telemetry_summary(read: LogReadResult) -> dict[str, dict[str, Any]]:
    """Per upstream, its logged telemetry snapshots over the logged period: how many, from and to when, the last
    moving latency and error rate (and attempts) and the worst error rate seen; upstreams in name order.

    Snapshots are taken in the order they were written (several workers of one proxy each write their own, so
    "last" is the last written).
    """
    out: dict[str, dict[str, Any]] = {}
    for t in read.telemetry:
        s = out.setdefault(t.upstream, {"snapshots": 0, "first": t.time, "last": t.time, "latency_s": None,
                                        "error_rate": None, "attempts": 0, "worst_error_rate": None,
                                        "worst_latency_s": None})
        s["snapshots"] += 1
        s["first"], s["last"] = min(s["first"], t.time), max(s["last"], t.time)
        s["latency_s"], s["error_rate"], s["attempts"] = t.latency_s, t.error_rate, t.attempts
        if t.error_rate is not None:
            s["worst_error_rate"] = max(t.error_rate, s["worst_error_rate"] or 0.0)
        if t.latency_s is not None:
            s["worst_latency_s"] = max(t.latency_s, s["worst_latency_s"] or 0.0)
    return dict(sorted(out.items()))


def _offpolicy(read: LogReadResult, exported: Any, compare: Sequence[Any], lams: Sequence[float],
               prompts: Mapping[str, str], rows: Sequence[Any], n_resamples: int, seed: int,
               notes: list[str]) -> list[dict[str, Any]]:
    """IPS/SNIPS/DR estimates of each target policy on the router arm's logged traffic."""
    if not lams and not compare:
        return []
    quality = {r.request_id: r for r in rows if r.arm == "router"}
    exact = bool(quality) and all(r.grader == "exact" for r in quality.values())
    # Exact grades are qualities (DR uses the candidates' predicted quality); judge grades are deltas against the
    # reference on another scale, so they get IPS and SNIPS only.
    reward = {rid: (r.answer_score if exact else r.delta) for rid, r in quality.items()}
    try:
        logged, skipped = LoggedDecisions.from_records(read.records, quality=reward, models=list(exported.models))
    except ValueError as exc:
        notes.append(f"off-policy estimates not made: {exc}")
        return []
    if not any(e > 0 for e in {d.epsilon for d in read.records if d.chosen is not None}):
        notes.append("the log has no exploration (epsilon 0): off-policy estimates only see the choices the "
                     "router made; a target choosing otherwise is unsupported (see 'unsupported')")
    targets: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []
    for lam in lams:
        choice = greedy_choice(logged.predicted_quality, logged.predicted_cost, float(lam))
        targets.append((f"lam_{lam:g}", f"{exported.manifest['router']['name']} at lam = {lam:g}", choice, None))
    texts = _prompt_texts(read, prompts)
    for folder in compare:
        from routers.export.loader import load_exported

        other = load_exported(folder)
        label = f"{other.manifest['router']['name']} ({Path(folder).name}, lam = {other.lam:g})"
        keep = np.array([rid in texts for rid in logged.request_ids])
        if not keep.any():
            notes.append(f"{label}: no logged request has its prompt text (turn on [log] store_text or pass "
                         "--prompts SOURCE): not estimated")
            continue
        missing = [m for m in other.models if m not in logged.models]
        ids = [rid for rid, k in zip(logged.request_ids, keep, strict=True) if k]
        cats = [(texts[rid][1] or "") for rid in ids]
        names = other.route([texts[rid][0] for rid in ids], categories=cats)
        if any(n not in logged.models for n in names):
            notes.append(f"{label}: it chooses models the log never offered ({', '.join(missing)}): not estimated")
            continue
        choice = np.array([logged.models.index(n) for n in names])
        targets.append((f"export_{Path(folder).name}", label, choice, keep))
    out = []
    for key, label, choice, keep in targets:
        data = logged if keep is None else _subset(logged, keep)
        est = estimate_policy(data, choice, n_resamples=n_resamples, seed=seed)
        if not exact and "quality" in est:  # judge deltas: no reward model on their scale
            est["quality"] = estimate(data.choice, data.propensity, data.quality, choice,
                                      logging_probabilities=data.logging_probabilities, n_resamples=n_resamples,
                                      seed=seed)
        served = {"cost": _nanmean(data.cost), "quality": _nanmean(data.quality)}
        out.append({"key": key, "label": label, "n": len(data), "left_out": dict(skipped),
                    "quality_reward": "exact correctness" if exact else "quality delta vs reference (judge)",
                    "served": served, "estimates": {k: v.to_dict() for k, v in est.items()}})
    return out


def offline_by_category(exported: Any, table: Any, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        notes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per category of ``table``: the export's quality minus the reference model's on those prompts, with its
    paired bootstrap interval (``{"quality_diff": Interval dict, "n": int}``), as the export decides them.

    Empty (and a note) when the table lacks one of the export's models or the reference model.
    """
    notes = notes if notes is not None else []
    measurement = exported.measurement
    reference = measurement.reference_model if measurement is not None else None
    missing = [m for m in (*exported.models, reference) if m is not None and m not in table.models]
    if reference is None or missing:
        notes.append(f"per-category offline numbers not computed: the offline outcomes lack {missing or 'a reference'}")
        return {}
    cats = [str(c) for c in table.categories]
    names = exported.route(list(table.prompts), categories=cats)
    col = {m: j for j, m in enumerate(table.models)}
    rows = np.arange(table.n_samples)
    diff = table.quality[rows, [col[n] for n in names]] - table.quality[:, col[reference]]
    out = {}
    for cat in sorted(set(cats)):
        idx = np.flatnonzero(np.array(cats) == cat)
        W = resample_counts(len(idx), n_resamples, seed)
        out[cat] = {"quality_diff": mean_interval(diff[idx], W).to_dict(), "n": int(len(idx))}
    return out


def _nanmean(x: np.ndarray) -> float | None:
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _subset(logged: LoggedDecisions, keep: np.ndarray) -> LoggedDecisions:
    idx = np.flatnonzero(keep)
    return replace(
        logged, request_ids=tuple(logged.request_ids[i] for i in idx), choice=logged.choice[idx],
        propensity=logged.propensity[idx], predicted_quality=logged.predicted_quality[idx],
        predicted_cost=logged.predicted_cost[idx], cost=logged.cost[idx], quality=logged.quality[idx],
        logging_probabilities=None if logged.logging_probabilities is None else logged.logging_probabilities[idx],
    )


def _prompt_texts(read: LogReadResult, prompts: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """request_id -> (prompt text, category) from stored texts, shadow pairs, or a hash -> text map."""
    pair_text = {p.request_id: p.prompt_text for p in read.shadow_pairs if p.prompt_text}
    out = {}
    for d in read.records:
        text = d.prompt_text if d.prompt_text and not d.text_truncated else pair_text.get(d.request_id)
        if text is None or prompt_hash(text) != d.prompt_hash:  # a capped text would route differently
            text = prompts.get(d.prompt_hash)
        if text is not None:
            out[d.request_id] = (text, d.category)
    return out


def prompts_from_table(table: Any) -> dict[str, str]:
    """``prompt_hash -> prompt`` of an OutcomeTable's prompts (to find the texts of a log that stored none)."""
    return {prompt_hash(p): p for p in table.frame["prompt"].drop_duplicates() if isinstance(p, str) and p}

