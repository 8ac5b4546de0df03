"""The cascade refuses, in one line naming what is missing, a table whose answers it cannot read."""

from __future__ import annotations

import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers.checks import check_table
from routers.strategies.cascade import CascadeRouter


def _without_responses(table: OutcomeTable, models: list[str]) -> OutcomeTable:
    frame = table.frame.copy()
    frame.loc[frame["model"].isin(models), "response"] = ""
    return OutcomeTable(pd.DataFrame(frame))


def test_fit_refuses_a_table_with_no_responses_at_all():
    table = _without_responses(check_table(), ["cheap", "mid", "big"])
    router = CascadeRouter()
    with pytest.raises(ConfigError, match=r"^cascade: the train table has no recorded responses for any model"):
        router.fit(table)
    assert not router.is_fitted


def test_fit_refuses_a_chain_model_without_responses_and_names_it():
    table = _without_responses(check_table(), ["mid"])
    with pytest.raises(ConfigError, match=r"no recorded responses for model\(s\) 'mid'"):
        CascadeRouter(models=["mid", "big"]).fit(table)
    # A chain of models that have answers fits on the same table.
    assert CascadeRouter(models=["cheap", "big"]).fit(table).chain_ == ("cheap", "big")


def test_replay_refuses_a_table_without_the_chain_s_answers():
    router = CascadeRouter(models=["cheap", "big"]).fit(check_table())
    router.policy(check_table())  # with answers: fine
    expected = r"^cascade: the table to replay has no recorded responses for model\(s\) 'cheap'"
    with pytest.raises(ConfigError, match=expected):
        router.policy(_without_responses(check_table(), ["cheap"]))
