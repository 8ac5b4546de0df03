"""The one schema of what an evaluation measured at an export's operating point (``router.json`` ``measurement``).

Written by :func:`measure_point` (the app's Export page and ``routelab export`` both build it there) and
stored by :func:`~routers.export.export_router` as one versioned block::

    "measurement": {
      "schema_version": 2,
      "point": "at the point chosen on validation, measured on test",   # evals.formatting.POINT_*
      "operating_point": "calibrated on validation for quality_parity",   # how lam was chosen (free text)
      "lam": 0.004, "dataset": "mmlu-pro", "split": "test", "n_test": 2053, "n_train": 6157,
      "cost_estimated": false,
      "reference_model": "gpt-4o", "reference_quality": 0.71, "reference_cost_per_1k_usd": 3.1,
      "quality":         {"value": 0.70, "low": 0.68, "high": 0.72},
      "cost_per_1k_usd": {"value": 0.36, "low": 0.35, "high": 0.37},
      "quality_diff":    {"value": -0.01, "low": -0.02, "high": 0.00},
      "savings":         {"value": 0.882, "low": 0.877, "high": 0.888},
      "traffic_share": {"gpt-4o": 0.2, "llama-8b": 0.8},
      "extra": {"mlflow_run_id": "..."}
    }

Intervals are paired 95% bootstrap intervals against the reference (best single) model. Blocks written before
this schema load too (:meth:`Measurement.from_dict`): the CLI's ``quality_ci95`` / ``savings_vs_best_single``
/ ``best_single_model`` fields and the app's ``quality_ci`` / ``n_test_samples`` / ``task_set`` fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval

__all__ = ["MEASUREMENT_SCHEMA_VERSION", "Measurement", "MeasurementError", "measure_point"]

MEASUREMENT_SCHEMA_VERSION = 2
_INTERVALS = ("quality", "cost_per_1k_usd", "quality_diff", "savings")
_POINTS = (POINT_VALIDATION_CHOSEN, POINT_TEST_FRONTIER)
# Older field names -> (field of this schema, part): "value" / "pair" ([low, high]) / "scalar".
_LEGACY = {
    # routelab export (CLI, schema 1)
    "n_test": ("n_test", "scalar"),
    "quality_ci95": ("quality", "pair"),
    "cost_per_1k_ci95": ("cost_per_1k_usd", "pair"),
    "best_single_model": ("reference_model", "scalar"),
    "best_single_quality": ("reference_quality", "scalar"),
    "best_single_cost_per_1k_usd": ("reference_cost_per_1k_usd", "scalar"),
    "quality_diff_vs_best_single": ("quality_diff", "value"),
    "quality_diff_ci95": ("quality_diff", "pair"),
    "savings_vs_best_single": ("savings", "value"),
    "savings_ci95": ("savings", "pair"),
    # the app's Export page (schema 1)
    "task_set": ("dataset", "scalar"),
    "n_test_samples": ("n_test", "scalar"),
    "quality_ci": ("quality", "pair"),
    "cost_per_1k": ("cost_per_1k_usd", "value"),
    "cost_per_1k_ci": ("cost_per_1k_usd", "pair"),
    "quality_diff_ci": ("quality_diff", "pair"),
    "savings_ci": ("savings", "pair"),
}
_SCALARS = (
    "point",
    "operating_point",
    "lam",
    "dataset",
    "split",
    "n_test",
    "n_train",
    "cost_estimated",
    "reference_model",
    "reference_quality",
    "reference_cost_per_1k_usd",
)


class MeasurementError(ValueError):
    """A measurement block that does not fit the schema (the message names the field)."""


def _num(x: Any, where: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise MeasurementError(f"measurement {where} must be a number or null, got {x!r}")
    v = float(x)
    return v if math.isfinite(v) else None


def _interval(x: Any, where: str) -> dict[str, float | None]:
    if isinstance(x, Mapping) or hasattr(x, "to_dict"):
        d = x if isinstance(x, Mapping) else x.to_dict()
        return {k: _num(d.get(k), f"{where}.{k}") for k in ("value", "low", "high")}
    return {"value": _num(x, where), "low": None, "high": None}


@dataclass(frozen=True)
class Measurement:
    """What an operating point achieved on test (see the module docstring for the ``router.json`` block)."""

    quality: dict[str, float | None] = field(default_factory=dict)
    """Mean quality on test: ``{"value", "low", "high"}`` (95% interval)."""
    cost_per_1k_usd: dict[str, float | None] = field(default_factory=dict)
    """Dollars per 1,000 requests on test, with its interval."""
    quality_diff: dict[str, float | None] = field(default_factory=dict)
    """Quality minus the reference model's (paired), with its interval."""
    savings: dict[str, float | None] = field(default_factory=dict)
    """``1 - cost / reference cost`` (a fraction), with its interval."""
    point: str | None = None
    """Which kind of point: :data:`evals.formatting.POINT_VALIDATION_CHOSEN` or ``POINT_TEST_FRONTIER``."""
    operating_point: str | None = None
    """How the operating point was chosen (free text, e.g. "calibrated on validation for quality_parity")."""
    lam: float | None = None
    dataset: str | None = None
    split: str | None = "test"
    n_test: int | None = None
    n_train: int | None = None
    cost_estimated: bool | None = None
    reference_model: str | None = None
    reference_quality: float | None = None
    reference_cost_per_1k_usd: float | None = None
    traffic_share: dict[str, float] = field(default_factory=dict)
    """Share of test requests per model at this point (models with none left out)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the writer recorded (an MLflow run id, a router label, ...), kept as given."""

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The ``router.json`` block (JSON-able, ``schema_version`` 2)."""
        out: dict[str, Any] = {"schema_version": MEASUREMENT_SCHEMA_VERSION}
        for k in _SCALARS:
            out[k] = getattr(self, k)
        for k in _INTERVALS:
            out[k] = _interval(getattr(self, k), k)
        out["traffic_share"] = {str(m): float(s) for m, s in self.traffic_share.items()}
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        """Read a ``measurement`` block of this schema or an older one (field names in the module docstring).

        Keys that are neither become :attr:`extra`.

        Raises:
            MeasurementError: for a value of the wrong type (the message names the field).
        """
        if isinstance(d, Measurement):
            return d
        if not isinstance(d, Mapping):
            raise MeasurementError(f"measurement must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", 1)
        if version not in (1, MEASUREMENT_SCHEMA_VERSION):
            raise MeasurementError(f"measurement schema_version {version!r} is not supported (reads 1 and 2)")
        fields: dict[str, Any] = {k: {} for k in _INTERVALS}
        extra: dict[str, Any] = dict(d.get("extra") or {}) if version == MEASUREMENT_SCHEMA_VERSION else {}
        for key, value in d.items():
            if key == "schema_version" or (key == "extra" and version == MEASUREMENT_SCHEMA_VERSION):
                continue
            if key in _INTERVALS:
                iv = _interval(value, key)
                # A schema-1 scalar ("quality": 0.7) keeps bounds read from its *_ci field.
                fields[key] = {**fields[key], **{k: v for k, v in iv.items() if v is not None or k == "value"}}
            elif key in _LEGACY:
                target, part = _LEGACY[key]
                if part == "scalar":
                    fields[target] = value
                elif part == "value":
                    fields[target] = {**fields[target], "value": _num(value, key)}
                else:
                    if not isinstance(value, (list, tuple)) or len(value) != 2:
                        raise MeasurementError(f"measurement {key} must be [low, high], got {value!r}")
                    lo, hi = (_num(v, key) for v in value)
                    fields[target] = {**fields[target], "low": lo, "high": hi}
            elif key in _SCALARS or key == "traffic_share":
                fields[key] = value
            else:
                extra[key] = value
        for k in _INTERVALS:
            fields[k] = {"value": None, "low": None, "high": None, **fields[k]}
        share = fields.pop("traffic_share", None) or {}
        if not isinstance(share, Mapping):
            raise MeasurementError(f"measurement traffic_share must be {{model: share}}, got {share!r}")
        for k in ("lam", "reference_quality", "reference_cost_per_1k_usd"):
            if k in fields:
                fields[k] = _num(fields[k], k)
        for k in ("n_test", "n_train"):
            if fields.get(k) is not None:
                n = fields[k]
                if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
                    raise MeasurementError(f"measurement {k} must be an integer, got {n!r}")
                fields[k] = int(n)
        return cls(
            traffic_share={str(m): float(_num(s, f"traffic_share.{m}") or 0.0) for m, s in share.items()},
            extra=extra,
            **fields,
        )

    # ------------------------------------------------------------------ for people
    def lines(self) -> list[str]:
        """The measurement for people (the export README and ``routelab export`` print these lines).

        Savings and quality read ``88.2% [87.7%, 88.8%]`` (:func:`evals.formatting.format_interval`), and the
        first line says which point it is.
        """
        est = " (costs ESTIMATED)" if self.cost_estimated else ""
        out = []
        if self.point or self.operating_point:
            out.append(
                "point: "
                + "; ".join(
                    x for x in (self.point, self.operating_point, None if self.lam is None else f"lam = {self.lam:g}")
                    if x
                )
            )
        n = f"n={self.n_test}" if self.n_test is not None else "n=?"
        out.append(
            f"on {self.split or 'test'} ({n}){est}: quality {format_interval(self.quality)}, "
            f"cost per 1k requests (USD) {format_interval(self.cost_per_1k_usd, digits=4)}"
        )
        if self.reference_model:
            ref_q = "" if self.reference_quality is None else f" (quality {self.reference_quality:.3f})"
            out.append(
                f"vs the best single model {self.reference_model}{ref_q}: quality difference "
                f"{format_interval(self.quality_diff)}, savings {format_interval(self.savings, pct=True)}"
            )
        if self.traffic_share:
            by_share = sorted(self.traffic_share.items(), key=lambda t: -t[1])
            out.append("traffic: " + ", ".join(f"{m} {s:.1%}" for m, s in by_share))
        out += [f"{k}: {v}" for k, v in self.extra.items()]
        return out


def measure_point(
    cost: np.ndarray,
    score: np.ndarray,
    *,
    ref_cost: np.ndarray,
    ref_score: np.ndarray,
    W: np.ndarray,
    point: str,
    choice: np.ndarray | None = None,
    models: list[str] | tuple[str, ...] | None = None,
    reference_model: str | None = None,
    **context: Any,
) -> Measurement:
    """Measure one operating point on test: paired 95% intervals against the reference (best single) model.

    Args:
        cost, score: The router's per-sample cost ($) and score on test at the point.
        ref_cost, ref_score: The reference model's per-sample cost and score (keyword-only: no order trap).
        W: Resample counts (:func:`evals.stats.resample_counts`).
        point: :data:`~evals.formatting.POINT_VALIDATION_CHOSEN` (the point was chosen without test data) or
            :data:`~evals.formatting.POINT_TEST_FRONTIER`.
        choice, models: The chosen model index per sample and the model names (for ``traffic_share``).
        reference_model: The reference model's name.
        **context: Other fields of :class:`Measurement` (``operating_point``, ``lam``, ``dataset``,
            ``n_train``, ``cost_estimated``, ``extra``...).

    Raises:
        MeasurementError: for an unknown ``point`` or a field that is not one of :class:`Measurement`'s.
    """
    from evals import stats

    if point not in _POINTS:
        raise MeasurementError(f"measurement point must be one of {_POINTS}, got {point!r}")
    cost, score = np.asarray(cost, float), np.asarray(score, float)
    ref_cost, ref_score = np.asarray(ref_cost, float), np.asarray(ref_score, float)
    iv = stats.point_intervals(cost, score, W, ref_cost=ref_cost, ref_score=ref_score)
    share: dict[str, float] = {}
    if choice is not None and models is not None:
        counts = np.bincount(np.asarray(choice, dtype=int), minlength=len(models)) / max(len(choice), 1)
        share = {str(m): round(float(s), 4) for m, s in zip(models, counts, strict=True) if s > 0}
    unknown = set(context) - {f for f in Measurement.__dataclass_fields__}
    if unknown:
        raise MeasurementError(f"measure_point got unknown field(s) {sorted(unknown)}")
    return Measurement(
        quality=iv["quality"].to_dict(),
        cost_per_1k_usd=iv["cost_per_1k"].to_dict(),
        quality_diff=iv["quality_diff"].to_dict(),
        savings=iv["savings"].to_dict(),
        point=point,
        n_test=int(len(score)),
        reference_model=reference_model,
        reference_quality=float(ref_score.mean()) if len(ref_score) else None,
        reference_cost_per_1k_usd=float(ref_cost.mean() * 1000) if len(ref_cost) else None,
        traffic_share=share,
        **context,
    )
