"""Helpers for the app tests and bench/bench_app.py: a small synthetic task set (importable by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from evals.outcomes import DatasetCard, OutcomeTable

#: AppTest timeout per run (s): generous, because CI machines may be shared and loaded.
TIMEOUT = 300

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"

#: (model, cost per call in $, skill): quality rises with price, so routing has something to find.
MODELS = (
    ("small-llm", 0.0002, 0.35),
    ("mid-llm", 0.001, 0.6),
    ("big-llm", 0.008, 0.85),
    ("huge-llm", 0.02, 0.88),
)
CATEGORIES = ("math", "law", "history")


def make_table(n_samples: int = 120, seed: int = 0) -> OutcomeTable:
    """A 4-model task set with categories, prompts, responses and hard/easy samples."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_samples):
        cat = CATEGORIES[i % len(CATEGORIES)]
        difficulty = rng.uniform(0, 1)
        for model, cost, skill in MODELS:
            right = rng.uniform(0, 1) < (skill if difficulty < 0.6 else skill - 0.3)
            rows.append(
                dict(
                    sample_id=f"s{i:04d}",
                    task="toy",
                    category=cat,
                    prompt=f"{cat} question number {i}: {'hard' if difficulty >= 0.6 else 'easy'} words {i * 7}",
                    reference="A",
                    model=model,
                    provider="toyco",
                    response=f"{model} says {'A' if right else 'B'}",
                    score=float(right),
                    cost_usd=cost * rng.uniform(0.8, 1.2),
                    cost_estimated=True,
                    input_tokens=100.0,
                    output_tokens=50.0,
                    grader="mcq_letter",
                )
            )
    card = DatasetCard(
        name="toy",
        source="tests/app/conftest.py",
        license="CC0",
        description="A toy task set.",
        grading="exact match",
        cost_note="estimated from text lengths",
    )
    return OutcomeTable(pd.DataFrame(rows), card)


def frame_with(at, column: str):  # noqa: ANN001, ANN201 - AppTest types
    """The first st.dataframe on the page that has ``column`` (AppTest does not expose dataframe keys)."""
    for d in at.dataframe:
        if column in d.value.columns:
            return d.value
    raise AssertionError(
        f"no dataframe with a {column!r} column; have: {[list(d.value.columns) for d in at.dataframe]}"
    )


# Routers that need no sentence encoder, so the test stays fast.
ROUTERS = ["category", "random-mix", "single"]


def run_compare(routers: list[str] = ROUTERS, log: bool = False) -> AppTest:
    """Open the app, go to Compare, pick routers and run (shared by the drill-down and export tests)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    at.multiselect(key="cmp_routers").set_value(routers).run()
    if not log:
        at.checkbox(key="cmp_log").uncheck().run()
    at.button(key="cmp_run").click().run()
    assert not at.exception, at.exception
    return at
