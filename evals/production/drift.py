"""Drift flags: a category whose live quality falls below what the export promised for it.

The export's ``measurement`` block holds the offline quality difference against the reference model
(``quality_diff``: router quality minus the reference's, with its 95% interval); shadow grades give the live estimate
of the same number (:func:`evals.production.delivered.quality_delta`). A category is **flagged** when its live
mean is below the lower end of the offline interval, with at least ``min_n`` graded router-arm requests (fewer
cannot say anything); the flag is **confirmed** when even the upper end of the live interval is below it. Where the
measurement has per-category numbers (``extra.per_category.<cat>.quality_diff``) those are the reference for that
category; otherwise the overall interval is (said in ``offline_source``). ``since`` names the first time bucket
from which every bucket with enough grades stayed below the offline lower end: when the drift started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evals.production.delivered import GradedRow, bucket_of, grouped, verdict_summary

__all__ = ["DEFAULT_MIN_N", "DriftFlag", "drift_flags"]

#: Graded requests a category needs before it can be flagged.
DEFAULT_MIN_N = 20


@dataclass(frozen=True)
class DriftFlag:
    """One category's live quality against the export's offline interval."""

    category: str
    n: int
    """Graded router-arm requests of the category (exploration picks left out)."""
    live: dict[str, Any]
    """Live quality delta with its interval (``value``/``low``/``high``/``n``)."""
    offline: dict[str, Any]
    """The offline quality difference it is compared with (``value``/``low``/``high``)."""
    offline_source: str
    """``per-category`` or ``overall`` (the export had no per-category numbers)."""
    flagged: bool
    """Live mean below the offline lower end (with enough grades)."""
    confirmed: bool
    """Even the live upper end is below the offline lower end."""
    since: str | None
    """The time bucket the drift started in (see the module docstring), when flagged."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def _offline_for(category: str, measurement: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    per = ((measurement.get("extra") or {}).get("per_category") or {}).get(category) or {}
    if isinstance(per, Mapping) and isinstance(per.get("quality_diff"), Mapping):
        return dict(per["quality_diff"]), "per-category"
    qd = measurement.get("quality_diff")
    return (dict(qd), "overall") if isinstance(qd, Mapping) and qd.get("low") is not None else (None, "none")


def drift_flags(rows: Sequence[GradedRow], measurement: Mapping[str, Any], *, bucket: str = "hour",
                min_n: int = DEFAULT_MIN_N, n_resamples: int = 1000, seed: int = 0) -> list[DriftFlag]:
    """A :class:`DriftFlag` per category of the router arm's graded rows.

    Control-arm rows are not the router's, and exploration picks are not its choices either: both are left out,
    so a flag says the router's own decisions got worse, not that exploration tried a weak model.

    Args:
        rows: Graded rows (:func:`evals.production.delivered.graded_rows`).
        measurement: The export's ``measurement`` block as a dict (schema 2: ``quality_diff`` an interval dict).
        bucket: ``hour`` or ``day``, for ``since``.
        min_n: Graded requests a category (or a bucket, for ``since``) needs to count.
    """
    out = []
    router_rows = [r for r in rows if r.arm == "router" and not r.explored]
    for category, group in sorted(grouped(router_rows, lambda r: r.category).items()):
        offline, source = _offline_for(category, measurement)
        if offline is None:
            continue
        live = verdict_summary(group, n_resamples=n_resamples, seed=seed)["quality_delta"]
        low = float(offline["low"])
        enough = len(group) >= min_n
        flagged = enough and live["value"] < low
        confirmed = flagged and live["high"] is not None and live["high"] < low
        since = _since(group, low, bucket, min_n) if flagged else None
        out.append(DriftFlag(category or "(none)", len(group), live, offline, source, flagged, confirmed, since))
    return out


def _since(group: Sequence[GradedRow], low: float, bucket: str, min_n: int) -> str | None:
    """The first bucket of the final run of buckets whose mean delta is below ``low`` (thin buckets skipped)."""
    per = grouped(group, lambda r: bucket_of(r.time, bucket))
    start = None
    for label in sorted(per):
        rows = per[label]
        if len(rows) < max(5, min_n // 4):  # too few grades in this bucket to say either way
            continue
        mean = sum(r.delta for r in rows) / len(rows)
        if mean < low:
            start = start or label
        else:
            start = None
    return start
