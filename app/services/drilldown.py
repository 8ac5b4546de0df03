"""The Drill down page's tables: per prompt and per category at each router's operating point."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from app.services.compare import operating_lam
from evals.outcomes import OutcomeTable

__all__ = ["category_breakdown", "decisions", "routed_by", "sample_detail"]


def _aligned(result: Any, test: OutcomeTable) -> tuple[OutcomeTable, tuple[str, ...], int, np.ndarray]:
    """The test table restricted to the result's models, the models, the best model's column, the oracle."""
    from evals.workbench.frontier import oracle_choice

    models = result.routers[0].frontier.models
    t = test if test.models == models else test.select(models=list(models))
    best = list(models).index(result.best_single["name"])
    return t, models, best, oracle_choice(t.quality, t.cost)


def decisions(result: Any, test: OutcomeTable, point: str = "calibrated") -> pd.DataFrame:
    """Per test prompt: each router's chosen model and score at its operating point, and the references.

    Columns: ``sample_id, category, prompt, best_model_score, oracle_model, oracle_score`` and per router
    ``<label>: model`` / ``<label>: score`` / ``<label>: cost``.
    """
    t, models, best, oc = _aligned(result, test)
    Q = t.quality
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
    from evals.metrics import per_category

    t, _, best, oc = _aligned(result, test)
    Q, C = t.quality, t.cost
    o_q = Q[np.arange(len(oc)), oc]
    frames = []
    for r in result.routers:
        _, cost, score = r.frontier.policy.outcomes(operating_lam(r, point))
        f = per_category(t.categories, cost, score, ref_cost=C[:, best], ref_score=Q[:, best], oracle_score=o_q)
        f.insert(0, "router", r.label)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def sample_detail(test: OutcomeTable, sample_id: str) -> pd.DataFrame:
    """Every model's answer to one test prompt: model, response, score, cost, grader."""
    f = test.frame
    rows = f[f["sample_id"].astype(str) == str(sample_id)]
    return rows[["model", "response", "score", "cost_usd", "cost_estimated", "grader"]].reset_index(drop=True)


def routed_by(decision_row: pd.Series, labels: list[str], models: list[str]) -> list[str]:
    """For each model, the routers that sent this prompt to it (``—`` when none did, never a blank cell)."""
    return [", ".join(lb for lb in labels if decision_row[f"{lb}: model"] == m) or "—" for m in models]
