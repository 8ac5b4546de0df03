"""Shared fixtures: the public-data mirror (read in place) and small hand-made tables."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from evals.outcomes import OutcomeTable  # noqa: E402
from evals.paths import data_dir  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--live", action="store_true", help="run tests that call real providers (needs API keys)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--live"):
        return
    skip = pytest.mark.skip(reason="live provider test: pass --live and set the provider keys")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data():
    """The public-data mirror folder (../shared/data beside the checkout, or ROUTELAB_DATA_DIR)."""
    return data_dir()


@pytest.fixture()
def tiny_table() -> OutcomeTable:
    """3 models x 6 samples where the right routing decision is obvious.

    ``cheap`` is right on the easy samples (e*), ``mid`` on easy and medium (e*, m*), ``big`` on everything.
    """
    rows = []
    costs = {"cheap": 0.001, "mid": 0.005, "big": 0.02}
    samples = [("e1", "easy"), ("e2", "easy"), ("m1", "medium"), ("m2", "medium"), ("h1", "hard"), ("h2", "hard")]
    for sid, cat in samples:
        for model, cost in costs.items():
            right = model == "big" or (model == "mid" and cat != "hard") or (model == "cheap" and cat == "easy")
            rows.append(
                dict(sample_id=sid, category=cat, prompt=f"{cat} question {sid}", model=model,
                     score=float(right), cost_usd=cost)
            )
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
