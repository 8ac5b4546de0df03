"""Shared fixtures: the public-data mirror (read in place) and the hand-made tables of ``shared_tables``."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import shared_tables  # noqa: E402  (tests/shared_tables.py: the hand-made tables, in one place)

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
    """3 models x 6 samples where the right routing decision is obvious (:func:`shared_tables.tiny_table`).

    ``cheap`` is right on the easy samples (e*), ``mid`` on easy and medium (e*, m*), ``big`` on everything.
    """
    return shared_tables.tiny_table()


@pytest.fixture(scope="session")
def separable_table() -> OutcomeTable:
    """:func:`shared_tables.separable_table` (48 samples), built once per test run; do not modify it."""
    return shared_tables.separable_table()


@pytest.fixture(scope="session")
def small_table() -> OutcomeTable:
    """:func:`shared_tables.small_table` (60 samples with responses and tokens), built once per test run."""
    return shared_tables.small_table()


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
