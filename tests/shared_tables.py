"""The hand-made outcome tables the tests share, in one place (importable as ``shared_tables`` from any test).

All of them are the same world: three models, ``cheap`` right on easy prompts, ``mid`` on easy and medium,
``big`` on everything (:func:`right`), so the right routing decision is known. They differ only in size and in
what else a test needs (text that separates the levels, token counts, responses):

- :func:`tiny_table`: 6 samples, for unit tests of the table and the metrics (``tiny_table`` fixture);
- :func:`separable_table`: prompts whose words give the level away, output tokens growing with difficulty,
  for learned routers (``separable_table`` session fixture);
- :func:`small_table`: prompts, responses and token counts, for exports, the proxy and pyfunc
  (``small_table`` session fixture; ``tests/routers/fixtures/make_release_exports.py`` writes the committed
  release exports from it, so its content must not change).

Each builder returns a new table; the session fixtures in ``tests/conftest.py`` build each one once per run.
"""

from __future__ import annotations

import pandas as pd

from evals.outcomes import OutcomeTable

__all__ = [
    "COSTS",
    "LEVELS",
    "VOCAB",
    "held_out_prompts",
    "prompt",
    "right",
    "separable_table",
    "small_table",
    "tiny_table",
]

#: Cost per call of each model (USD).
COSTS = {"cheap": 0.001, "mid": 0.005, "big": 0.02}
LEVELS = ("easy", "medium", "hard")
#: Words of a prompt of each level (a text router can tell the levels apart).
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


def tiny_table() -> OutcomeTable:
    """3 models x 6 samples (two per level; the level is the category), costs :data:`COSTS`."""
    rows = []
    samples = [("e1", "easy"), ("e2", "easy"), ("m1", "medium"), ("m2", "medium"), ("h1", "hard"), ("h2", "hard")]
    for sid, cat in samples:
        for model, cost in COSTS.items():
            rows.append(
                dict(
                    sample_id=sid,
                    category=cat,
                    prompt=f"{cat} question {sid}",
                    model=model,
                    score=float(right(model, cat)),
                    cost_usd=cost,
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


def separable_table(n_per_level: int = 16) -> OutcomeTable:
    """3 models x (3 * n_per_level) samples; output tokens grow with difficulty (for cost-aware routers)."""
    rows = []
    for level in LEVELS:
        for i in range(n_per_level):
            p = prompt(level, i)
            tout = {"easy": 10.0, "medium": 50.0, "hard": 200.0}[level]
            for model, cost in COSTS.items():
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
    """New prompts (not in :func:`separable_table`) and their levels, one pair per level."""
    return [prompt(lv, 100 + k) for k, lv in enumerate(LEVELS)], list(LEVELS)


def small_table(n_per_cat: int = 20) -> OutcomeTable:
    """3 models x (3 * n_per_cat) samples with responses and token counts (exports, proxy, pyfunc)."""
    rows = []
    for cat in LEVELS:
        for i in range(n_per_cat):
            sid = f"{cat}-{i}"
            text = f"{cat} question number {i}: " + ("please think hard " * (3 if cat == "hard" else 1))
            for model, cost in COSTS.items():
                rows.append(
                    dict(
                        sample_id=sid,
                        category=cat,
                        prompt=text,
                        model=model,
                        score=float(right(model, cat)),
                        cost_usd=cost,
                        response=f"{model} says: the answer is (A) for {sid}",
                        input_tokens=40.0,
                        output_tokens=12.0,
                    )
                )
    return OutcomeTable(pd.DataFrame(rows))
