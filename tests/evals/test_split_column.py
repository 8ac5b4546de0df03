"""Bring-your-own split: a ``split`` column, ``[dataset] test_source``, and the dropped-sample count end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import SchemaError
from evals.report import write_report
from evals.workbench.experiment import config_from_dict, load_table, run_experiment

MODELS = [("cheap", 0.0002, 0.6), ("big", 0.005, 0.9)]


def _rows(ids: list[str], seed: int, split: dict[str, str] | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k, sid in enumerate(ids):
        cat = ["a", "b"][k % 2]
        for model, cost, p in MODELS:
            row = dict(sample_id=sid, category=cat, prompt=f"question {sid}", model=model,
                       score=float(rng.random() < p), cost_usd=cost)
            if split is not None:
                row["split"] = split[sid]
            rows.append(row)
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(source: Path, **dataset: str) -> dict:
    return {
        "dataset": {"source": str(source), **dataset},
        "split": {"fractions": [0.6, 0.2, 0.2], "seed": 0},
        "evaluation": {"n_points": 40, "n_resamples": 100},
        "target": {"kind": "quality_ratio", "value": 0.95},
        "routers": [{"name": "category"}],
    }


def test_a_split_column_is_used_instead_of_the_seeded_split(tmp_path):
    ids = [f"s{i}" for i in range(300)]
    marks = {sid: ("train" if i < 150 else "validation" if i < 200 else "test") for i, sid in enumerate(ids)}
    path = _write(tmp_path / "o.csv", _rows(ids, 0, marks))
    result = run_experiment(config_from_dict(_config(path)))
    assert (result.n_train, result.n_validation, result.n_test) == (150, 50, 100)
    assert result.split_origin == "column"
    assert "split by the file's 'split' column" in write_report(result, tmp_path / "r")[0].read_text()


def test_without_validation_marks_validation_is_split_from_train_by_the_fractions(tmp_path):
    ids = [f"s{i}" for i in range(200)]
    marks = {sid: ("train" if i < 120 else "test") for i, sid in enumerate(ids)}
    path = _write(tmp_path / "o.csv", _rows(ids, 1, marks))
    result = run_experiment(config_from_dict(_config(path)))
    assert result.n_test == 80
    assert result.n_train + result.n_validation == 120
    assert result.n_validation == pytest.approx(120 * 0.25, abs=2)  # 0.2 / (0.6 + 0.2) of train


def test_a_sample_marked_for_two_parts_is_kept_in_test_with_a_warning(tmp_path):
    ids = [f"s{i}" for i in range(200)]
    marks = {sid: ("train" if i < 100 else "validation" if i < 140 else "test") for i, sid in enumerate(ids)}
    rows = _rows(ids, 2, marks)
    for row in rows:  # s0..s2: the cheap model's row says test, the big model's says train
        if row["sample_id"] in {"s0", "s1", "s2"} and row["model"] == "cheap":
            row["split"] = "test"
    result = run_experiment(config_from_dict(_config(_write(tmp_path / "o.csv", rows))))
    assert (result.n_train, result.n_test) == (97, 63)
    (warning,) = [w for w in result.warnings if "more than one part" in w]
    assert warning.startswith("3 sample id(s)") and "'s0'" in warning


def test_an_unknown_split_value_is_a_one_line_error_naming_it(tmp_path):
    ids = [f"s{i}" for i in range(20)]
    path = _write(tmp_path / "o.csv", _rows(ids, 3, {sid: "holdout" if sid == "s7" else "train" for sid in ids}))
    with pytest.raises(SchemaError, match=r"column 'split' is 'holdout' for sample_id 's7'.*valid: train"):
        run_experiment(config_from_dict(_config(path)))


def test_a_test_source_gives_the_test_split_and_overlapping_ids_are_reported_not_fatal(tmp_path):
    train_ids = [f"s{i}" for i in range(240)]
    test_ids = [f"s{i}" for i in range(230, 330)]  # s230..s239 occur in both files
    source = _write(tmp_path / "train.csv", _rows(train_ids, 4))
    held_out = _write(tmp_path / "test.csv", _rows(test_ids, 5))
    cfg = config_from_dict(_config(source, test_source=str(held_out)))
    result = run_experiment(cfg)
    assert result.split_origin == "test_source"
    assert result.n_test == 100
    assert result.n_train + result.n_validation == 230  # the ten shared ids are kept out of train/validation
    (warning,) = [w for w in result.warnings if "occur in both" in w]
    assert warning.startswith("10 sample id(s) occur in both the source and test_source")
    assert "'s230'" in warning and "the test copy is kept" in warning
    assert f"test from {held_out}" in write_report(result, tmp_path / "r")[0].read_text()


def test_a_test_source_missing_a_model_is_named(tmp_path):
    source = _write(tmp_path / "train.csv", _rows([f"s{i}" for i in range(100)], 6))
    only_cheap = [r for r in _rows([f"t{i}" for i in range(50)], 7) if r["model"] == "cheap"]
    held_out = _write(tmp_path / "test.csv", only_cheap)
    with pytest.raises(SchemaError, match=r"has no rows for model\(s\) \['big'\]"):
        run_experiment(config_from_dict(_config(source, test_source=str(held_out))))


def test_dropped_incomplete_samples_survive_to_the_table_the_result_and_the_report(tmp_path):
    ids = [f"s{i}" for i in range(214)]
    rows = _rows(ids, 8)
    # 14 samples lack the big model's row: the reader keeps only complete samples and counts the others.
    incomplete = set(ids[:14])
    rows = [r for r in rows if not (r["sample_id"] in incomplete and r["model"] == "big")]
    path = _write(tmp_path / "o.csv", rows)
    cfg = config_from_dict(_config(path))
    assert load_table(cfg).card.extra["incomplete_samples_dropped"] == 14  # completing again does not reset it
    result = run_experiment(cfg)
    assert result.incomplete_samples_dropped == 14
    assert result.to_json()["incomplete_samples_dropped"] == 14
    assert result.table.n_samples == 200
    md = write_report(result, tmp_path / "r")[0].read_text()
    assert "14 sample(s) were left out because some model had no row for them" in md


@pytest.mark.slow
def test_the_dropped_count_is_logged_to_mlflow(tmp_path, monkeypatch):
    import mlflow

    from evals.tracking import log_evaluation, run_params

    ids = [f"s{i}" for i in range(214)]
    rows = [r for r in _rows(ids, 8) if not (r["sample_id"] in set(ids[:14]) and r["model"] == "big")]
    result = run_experiment(config_from_dict(_config(_write(tmp_path / "o.csv", rows))))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = log_evaluation(result, uri=uri)
    assert run_params(parent, uri=uri)["incomplete_samples_dropped"] == "14"
    assert mlflow.MlflowClient(uri).get_run(parent).data.metrics["incomplete_samples_dropped"] == 14


def test_a_model_selection_keeps_the_count_the_source_dropped(tmp_path):
    ids = [f"s{i}" for i in range(120)]
    rows = _rows(ids, 9)
    for r in _rows(ids[:100], 10):  # a third model that answered only 100 of the 120 samples
        if r["model"] == "big":
            rows.append({**r, "model": "mid", "cost_usd": 0.001})
    path = _write(tmp_path / "o.csv", rows)
    # The reader drops the 20 samples mid did not answer; selecting and completing again after loading must
    # not reset that count to the 0 the second completion drops.
    cfg = config_from_dict({**_config(path), "dataset": {"source": str(path), "models": ["cheap", "mid"]}})
    assert load_table(cfg).card.extra["incomplete_samples_dropped"] == 20
