"""Hand-made outcome tables for router tests, where the right decision is known."""

from __future__ import annotations

import pandas as pd

from evals.outcomes import OutcomeTable

COSTS = {"cheap": 0.001, "mid": 0.005, "big": 0.02}
VOCAB = {
    "easy": "add two small numbers like one plus two",
    "medium": "explain the historical causes of the industrial revolution in europe",
    "hard": "prove the spectral theorem for compact self adjoint operators rigorously",
}
TOPICS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]


def right(model: str, level: str) -> bool:
    """cheap answers easy prompts, mid easy and medium, big everything."""
    return model == "big" or (model == "mid" and level != "hard") or (model == "cheap" and level == "easy")


def prompt(level: str, i: int) -> str:
    """A prompt of a difficulty level; the words make the level plain."""
    return f"{VOCAB[level]} case {TOPICS[i % len(TOPICS)]} number {i}"


def separable_table(n_per_level: int = 16) -> OutcomeTable:
    """3 models x (3 * n_per_level) samples; output tokens grow with difficulty (for cost-aware routers)."""
    rows = []
    for level in VOCAB:
        for i in range(n_per_level):
            p = prompt(level, i)
            for model, cost in COSTS.items():
                tout = {"easy": 10.0, "medium": 50.0, "hard": 200.0}[level]
                rows.append(
                    dict(
                        sample_id=f"{level}-{i}",
                        category=level,
                        prompt=p,
                        model=model,
                        score=float(right(model, level)),
                        cost_usd=cost * (0.5 + tout / 100.0),
                        input_tokens=float(len(p) // 4),
                        output_tokens=tout,
                    )
                )
    return OutcomeTable(pd.DataFrame(rows))


def held_out_prompts() -> tuple[list[str], list[str]]:
    """New prompts (not in the table) and their levels, one pair per level."""
    levels = ["easy", "medium", "hard"]
    return [prompt(lv, 100 + k) for k, lv in enumerate(levels)], levels
