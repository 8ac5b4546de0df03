"""OutcomeTable: construction, wide views, selection, completion, Parquet round trip, seeded split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import DataNotFoundError, SchemaError
from evals.outcomes import COLUMNS, DatasetCard, OutcomeTable


def _rows(n_samples: int = 20, models=("a", "b", "c"), categories=("x", "y")) -> pd.DataFrame:
    rows = []
    for i in range(n_samples):
        for j, m in enumerate(models):
            rows.append(
                dict(
                    sample_id=f"s{i:02d}",
                    category=categories[i % len(categories)],
                    prompt=f"p{i}",
                    model=m,
                    score=float((i + j) % 2),
                    cost_usd=0.001 * (j + 1),
                )
            )
    return pd.DataFrame(rows)


def test_construction_fills_defaults_and_orders_columns(tiny_table):
    f = tiny_table.frame
    assert list(f.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert (f["provider"] == "").all() and f["latency_s"].isna().all() and not f["cost_estimated"].any()
    assert tiny_table.models == ("cheap", "mid", "big")
    assert tiny_table.n_samples == 6 and len(tiny_table) == 18
    assert list(tiny_table.sample_ids) == ["e1", "e2", "m1", "m2", "h1", "h2"]


def test_wide_views_match_long_rows(tiny_table):
    q, c = tiny_table.quality, tiny_table.cost
    assert q.shape == c.shape == (6, 3)
    # big is right everywhere, cheap only on easy samples
    assert q[:, 2].tolist() == [1.0] * 6
    assert q[:, 0].tolist() == [1, 1, 0, 0, 0, 0]
    assert np.allclose(c[0], [0.001, 0.005, 0.02])
    with pytest.raises(ValueError):
        q[0, 0] = 0.5  # read-only
    text = tiny_table.wide_text("prompt")
    assert text[2, 1] == "medium question m1"


def test_wide_of_unknown_column_is_a_schema_error(tiny_table):
    with pytest.raises(SchemaError, match="no column 'nope'"):
        tiny_table.wide("nope")
    with pytest.raises(SchemaError, match="no column 'nope'"):
        tiny_table.wide_text("nope")


def test_select_models_categories_and_order(tiny_table):
    sub = tiny_table.select(models=["big", "cheap"], categories=["easy", "hard"])
    assert sub.models == ("big", "cheap")
    assert sub.n_samples == 4
    assert sub.quality[:, 1].tolist() == [1, 1, 0, 0]
    with pytest.raises(SchemaError, match="unknown model.*'nope'.*cheap, mid, big"):
        tiny_table.select(models=["nope"])
    with pytest.raises(SchemaError, match="unknown category"):
        tiny_table.select(categories=["nope"])


def test_complete_drops_partial_samples_and_counts_them():
    f = _rows(5)
    f = f[~((f["sample_id"] == "s03") & (f["model"] == "b"))]
    with pytest.raises(SchemaError, match="'s03'.*no row for model.*'b'"):
        OutcomeTable(f)
    t = OutcomeTable(f, require_complete=False).complete()
    assert t.n_samples == 4 and "s03" not in set(t.sample_ids)
    assert t.card.extra["incomplete_samples_dropped"] == 1


def test_complete_keeps_a_selected_model_order():
    f = _rows(4)
    f = f[~((f["sample_id"] == "s01") & (f["model"] == "a"))]
    t = OutcomeTable(f, require_complete=False).select(models=["c", "a"]).complete()
    assert t.models == ("c", "a") and t.n_samples == 3


def test_parquet_round_trip_keeps_rows_card_and_extra_columns(tmp_path, tiny_table):
    frame = tiny_table.frame
    frame["note"] = "x"
    card = DatasetCard(
        name="tiny",
        source="hand-made",
        license="CC0",
        grading="exact",
        cost_note="made up",
        extra={"dropped": 3, "per_model": {"a": 1}},
    )
    t = OutcomeTable(frame, card)
    path = t.to_parquet(tmp_path / "sub" / "t.parquet")
    back = OutcomeTable.read_parquet(path)
    assert back.card == card
    pd.testing.assert_frame_equal(back.frame, t.frame, check_dtype=False)
    assert np.array_equal(back.quality, t.quality) and back.models == t.models
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the atomic write left no temp file


def test_read_parquet_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        OutcomeTable.read_parquet(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(SchemaError, match="bad.parquet.*not a readable Parquet"):
        OutcomeTable.read_parquet(bad)


def test_split_is_deterministic_leak_free_and_seed_dependent():
    t = OutcomeTable(_rows(50))
    a, b = t.split((0.6, 0.2, 0.2), random_state=7), t.split((0.6, 0.2, 0.2), random_state=7)
    for x, y in zip(a, b, strict=True):
        assert list(x.sample_ids) == list(y.sample_ids)
    parts = [set(p.sample_ids) for p in a]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert set().union(*parts) == set(t.sample_ids)
    assert [len(p) for p in parts] == [30, 10, 10]
    c = t.split((0.6, 0.2, 0.2), random_state=8)
    assert list(c.test.sample_ids) != list(a.test.sample_ids)
    # every part keeps all models, in the same order
    assert all(p.models == t.models for p in a)


def test_stratified_split_keeps_category_mix():
    t = OutcomeTable(_rows(40, categories=("x", "y")))
    s = t.split((0.5, 0.25, 0.25), random_state=0, stratify=True)
    for part in s:
        cats = pd.Series(part.categories).value_counts()
        assert cats["x"] == cats["y"]


def test_split_rejects_bad_fractions_and_tiny_tables(tiny_table):
    with pytest.raises(SchemaError, match="3 positive numbers"):
        tiny_table.split((0.5, 0.5))
    with pytest.raises(SchemaError, match="3 positive numbers"):
        tiny_table.split((0.8, 0.0, 0.2))
    two = tiny_table.select(sample_ids=["e1", "e2"])
    with pytest.raises(SchemaError, match="too small"):
        two.split((0.6, 0.2, 0.2))


def test_model_summary(tiny_table):
    s = tiny_table.model_summary().set_index("model")
    assert s.loc["big", "quality"] == 1.0 and s.loc["cheap", "quality"] == pytest.approx(2 / 6)
    assert s.loc["mid", "cost_per_1k"] == pytest.approx(5.0)
    assert s.loc["mid", "samples"] == 6 and not s["cost_estimated"].any()


def test_bool_column_parsing_names_the_row():
    f = _rows(2)
    f["cost_estimated"] = ["yes", "no", "true", "0", "", "maybe"]
    with pytest.raises(SchemaError, match=r"row 5.*'cost_estimated' is 'maybe'"):
        OutcomeTable(f)
    f["cost_estimated"] = ["yes", "no", "true", "0", "", "F"]
    assert OutcomeTable(f).frame["cost_estimated"].tolist() == [True, False, True, False, False, False]
