"""``routelab eval``: table, JSON summary, report, and gates that fail loudly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evals.cli import main
from evals.exceptions import ConfigError
from evals.workbench.experiment import config_from_dict, load_config


def _write_outcomes(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A long-format CSV: 'cheap' is right on easy prompts, 'big' on nearly everything."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cat = ["easy", "medium", "hard"][i % 3]
        for model, cost, p in [
            ("cheap", 0.0002, {"easy": 0.95, "medium": 0.5, "hard": 0.1}),
            ("mid", 0.001, {"easy": 0.97, "medium": 0.85, "hard": 0.3}),
            ("big", 0.005, {"easy": 0.98, "medium": 0.9, "hard": 0.8}),
        ]:
            rows.append(
                dict(
                    sample_id=f"s{i}",
                    category=cat,
                    prompt=f"{cat} question {i}",
                    model=model,
                    score=float(rng.random() < p[cat]),
                    cost_usd=cost,
                )
            )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(tmp_path: Path, gates: str) -> Path:
    _write_outcomes(tmp_path / "outcomes.csv")
    cfg = tmp_path / "eval.toml"
    cfg.write_text(
        f"""
name = "unit"
[dataset]
source = "outcomes.csv"
[split]
fractions = [0.5, 0.25, 0.25]
seed = 1
[evaluation]
n_points = 120
n_resamples = 300
margin = 0.02
[target]
kind = "parity"
value = 0.02
[gates]
router = "category"
{gates}
[[routers]]
name = "category"
[[routers]]
name = "single"
[[routers]]
name = "oracle"
""",
        encoding="utf-8",
    )
    return cfg


def test_eval_writes_json_and_report_and_passes_gates(tmp_path, capsys):
    cfg = _config(tmp_path, "max_quality_drop = 0.5\nmin_savings = 0.0")
    out_json = tmp_path / "summary.json"
    status = main(
        ["eval", str(cfg), "--json", str(out_json), "--out", str(tmp_path / "rep"), "--no-mlflow", "--quiet"]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "best single model: big" in printed and "category" in printed
    doc = json.loads(out_json.read_text())
    assert doc["dataset"] == "outcomes" and doc["n_test"] == 60
    assert set(doc["best_single_model"]) >= {"name", "quality", "cost_per_1k"}
    assert doc["best_single_model"]["name"] == "big"
    assert doc["best_single_model"]["cost_per_1k"] == pytest.approx(5.0)
    assert set(doc["oracle"]) >= {"quality", "cost_per_1k"}
    assert [r["name"] for r in doc["routers"]] == ["category", "single", "oracle"]
    for r in doc["routers"]:
        assert set(r) >= {
            "name",
            "params",
            "aiq",
            "savings_at_parity",
            "savings_at_parity_ci",
            "quality_at_parity",
            "cost_per_1k_at_parity",
            "calibrated",
        }
        assert set(r["calibrated"]) >= {"target", "validation", "test"}
        assert len(r["savings_at_parity_ci"]) == 2
    single = doc["routers"][1]
    assert single["savings_at_parity"] == pytest.approx(0.0)
    assert doc["routers"][2]["savings_at_parity"] > 0.5  # the oracle saves most of big's cost
    assert doc["gates_passed"] is True
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "savings@parity" in md and "n val / test" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "plotly" in html.lower() and len(html) > 100_000  # plotly.js inlined: self-contained


def test_failing_gate_exits_1_naming_the_gate(tmp_path, capsys):
    cfg = _config(tmp_path, "max_quality_drop = 0.5\nmin_savings = 0.99")
    out_json = tmp_path / "summary.json"
    status = main(
        ["eval", str(cfg), "--json", str(out_json), "--out", str(tmp_path / "rep"), "--no-mlflow", "--quiet"]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "gate failed" in err and "min_savings" in err and "minimum 99.0%" in err
    assert "max_quality_drop" not in err  # the passing gate is not blamed
    doc = json.loads(out_json.read_text())
    assert doc["gates_passed"] is False and "min_savings" in doc["gate_error"]


def test_bad_configs_are_rejected_clearly(tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs 'source'"):
        config_from_dict({"dataset": {}, "routers": [{"name": "single"}]})
    with pytest.raises(ConfigError, match=r"\[gates\] has unknown key\(s\) \['min_saving'\]"):
        config_from_dict(
            {"dataset": {"source": "x"}, "routers": [{"name": "single"}], "gates": {"min_saving": 0.3}}
        )
    with pytest.raises(ConfigError, match="router 'knn' is not one of the routers"):
        config_from_dict(
            {"dataset": {"source": "x"}, "routers": [{"name": "single"}], "gates": {"router": "knn"}}
        )
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset\nsource=1", encoding="utf-8")
    assert main(["eval", str(bad), "--no-mlflow"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_example_configs_parse_and_name_registered_routers():
    import routers

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("mmlu_pro.toml", "routerbench_mbpp.toml"):
        cfg = load_config(root / name)
        assert cfg.gates, f"{name} has no gates"
        for spec in cfg.routers:
            assert spec["name"] in routers.router_registry, spec["name"]


def test_a_tiny_test_split_is_warned_about_before_any_number(tmp_path, capsys):
    from evals.paths import repo_datasets_dir

    fixture = repo_datasets_dir() / "fixtures" / "example_outcomes.csv"  # the README's 10-sample example
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        f'[dataset]\nsource = "{fixture.as_posix()}"\n[evaluation]\nn_resamples = 100\n'
        '[[routers]]\nname = "category"\n',
        encoding="utf-8",
    )
    out_json = tmp_path / "summary.json"
    status = main(["eval", str(cfg), "--json", str(out_json), "--out", str(tmp_path / "rep"), "--no-mlflow", "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    first = printed.strip().splitlines()[0]
    assert first.startswith("WARNING: the test split has only") and "minimum 100" in first
    assert printed.index("WARNING") < printed.index("best single model")
    doc = json.loads(out_json.read_text())
    assert doc["n_test"] < 100 and doc["warnings"] and "minimum 100" in doc["warnings"][0]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.index("**Warning:** the test split has only") < md.index("## References")
    assert "Warning" in (tmp_path / "rep" / "report.html").read_text()


def test_a_model_missing_from_most_samples_is_warned_about(tmp_path, capsys):
    source = _write_outcomes(tmp_path / "outcomes.csv")
    frame = pd.read_csv(source)
    # 'mid' answered only the first 60 of 240 samples.
    keep = (frame["model"] != "mid") | frame["sample_id"].isin([f"s{i}" for i in range(60)])
    frame[keep].to_csv(source, index=False)
    cfg = tmp_path / "eval.toml"
    cfg.write_text(
        '[dataset]\nsource = "outcomes.csv"\n[evaluation]\nn_resamples = 100\n[[routers]]\nname = "single"\n',
        encoding="utf-8",
    )
    assert main(["eval", str(cfg), "--out", str(tmp_path / "rep"), "--no-mlflow", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: 180 of 240 samples (75%) were left out because some model did not answer them" in printed


def test_the_same_savings_read_the_same_in_eval_the_report_export_and_its_readme(tmp_path, capsys):
    from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval

    cfg = _config(tmp_path, "max_quality_drop = 0.5")
    out_json = tmp_path / "summary.json"
    assert main(["eval", str(cfg), "--json", str(out_json), "--out", str(tmp_path / "rep"), "--no-mlflow"]) == 0
    eval_out = capsys.readouterr().out
    doc = json.loads(out_json.read_text())
    category = next(r for r in doc["routers"] if r["label"] == "category")
    assert category["at_calibrated_point"] == POINT_VALIDATION_CHOSEN
    assert category["savings_at_parity_point"] == POINT_TEST_FRONTIER
    expected = format_interval(category["at_calibrated"]["savings"], pct=True)
    assert expected.count("%") == 3  # "88.2% [87.7%, 88.8%]": the unit on every number

    # routelab eval: the row of the router, under a column naming the point, and the legend of both points.
    row = next(line for line in eval_out.splitlines() if line.lstrip().startswith("category "))
    assert expected in row
    assert "savings (val-chosen point)" in eval_out and POINT_VALIDATION_CHOSEN in eval_out
    assert "savings@parity (test frontier)" in eval_out and POINT_TEST_FRONTIER in eval_out
    # The report: the calibrated table's row, and the sentence naming both points.
    md = (tmp_path / "rep" / "report.md").read_text()
    md_row = next(line for line in md.splitlines() if line.startswith("| category |") and "target" not in line and
                  "quality >=" in line)
    assert expected in md_row and POINT_VALIDATION_CHOSEN in md and POINT_TEST_FRONTIER in md
    # routelab export of the same router at the point chosen on validation (the config's target).
    folder = tmp_path / "exp"
    assert main(["export", "--config", str(cfg), "--router", "category", "--out", str(folder)]) == 0
    export_out = capsys.readouterr().out
    assert f"savings {expected}" in export_out and POINT_VALIDATION_CHOSEN in export_out
    readme = (folder / "README.md").read_text()
    assert f"savings {expected}" in readme and POINT_VALIDATION_CHOSEN in readme


def test_the_cost_wording_comes_from_the_tables_own_provenance(tmp_path):
    from evals.report import cost_provenance
    from evals.sources import read_outcomes

    measured = read_outcomes(_write_outcomes(tmp_path / "measured.csv", n=30))
    assert cost_provenance(measured) == (
        "Costs are measured per request; the source's method: as recorded in the file "
        "(cost_usd, or tokens x datasets/prices.csv)."
    )
    frame = pd.read_csv(tmp_path / "measured.csv")
    frame["cost_estimated"] = frame["model"].eq("big")
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    mixed = cost_provenance(read_outcomes(tmp_path / "mixed.csv"))
    assert mixed.startswith("**Costs are partly estimated** (30 of 90 rows), the rest measured;")
    frame["cost_estimated"] = True
    frame.to_csv(tmp_path / "estimated.csv", index=False)
    assert cost_provenance(read_outcomes(tmp_path / "estimated.csv")).startswith(
        "**Costs are estimated**, not measured; the source's method: estimated (cost_estimated column)"
    )
    # A source card's own label is not repeated after the head that already says it.
    card_note = "MEASURED: RouterBench's per-query dollar cost"
    table = read_outcomes(tmp_path / "measured.csv")
    table.card = dataclasses.replace(table.card, cost_note=card_note)
    assert cost_provenance(table) == (
        "Costs are measured per request; the source's method: RouterBench's per-query dollar cost."
    )
