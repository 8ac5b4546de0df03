"""Small summaries of a task set for the Start page: per-model quality with intervals, costs, prices."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.services.sources import load_prices, load_table, stamp
from evals import stats
from evals.exceptions import WorkbenchError
from evals.outcomes import OutcomeTable

__all__ = ["category_counts", "mean_ci", "model_overview", "overview_of"]


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% interval of per-sample scores: :func:`evals.stats.mean_with_ci` (Wilson for 0/1 scores)."""
    return stats.mean_with_ci(values)


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
            p = _price(prices, model, row["provider"])
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


def _price(prices: Any, model: str, provider: str) -> Any:
    """The model's list price at its provider, else its default price, else None."""
    for args in ((model, provider or None), (model,)):
        try:
            return prices.price(*args)
        except WorkbenchError:
            continue
    return None


def overview_of(source: str) -> pd.DataFrame:
    """:func:`model_overview` of a task set with the repo's prices (cached per source and file stamp)."""
    return _overview_cached(source, stamp(source))


@st.cache_data(max_entries=8, show_spinner=False)
def _overview_cached(source: str, file_stamp: float) -> pd.DataFrame:
    return model_overview(load_table(source), load_prices())


def category_counts(table: OutcomeTable) -> pd.Series:
    """Samples per category (largest first); '(none)' for samples without one."""
    cats = pd.Series(table.categories).replace("", "(none)")
    return cats.value_counts()
