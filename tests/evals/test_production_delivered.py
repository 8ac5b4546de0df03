"""Live numbers from a decision log (issue 15, items 5 and 6): A/B cost and saving against control, win/tie/loss
against the reference, drift flags, and graded pairs turned into an OutcomeTable that ``routelab eval`` takes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from production_logs import T0, Drift, oracle_decide, simulate, write_log

from evals.cli import main
from evals.exceptions import DataNotFoundError
from evals.outcomes import OutcomeTable
from evals.production.delivered import bucket_of, choose_bucket, cost_ab, graded_rows, verdict_summary
from evals.production.drift import drift_flags
from evals.production.log_reader import read_log
from evals.production.records import GradeRecord
from evals.production.to_outcomes import PROVENANCE, to_outcomes
from evals.sources import load


def _world(n: int = 240, seed: int = 0) -> OutcomeTable:
    """cheap right on most easy prompts, mid on easy and medium, big on nearly everything; responses and tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cat = ["easy", "medium", "hard"][i % 3]
        for model, cost, p in [("cheap", 0.0002, {"easy": 0.95, "medium": 0.5, "hard": 0.1}),
                               ("mid", 0.001, {"easy": 0.97, "medium": 0.85, "hard": 0.3}),
                               ("big", 0.005, {"easy": 0.98, "medium": 0.9, "hard": 0.8})]:
            rows.append(dict(sample_id=f"s{i}", category=cat, prompt=f"{cat} question {i}", model=model,
                             score=float(rng.random() < p[cat]), cost_usd=cost, response=f"{model} on {i}"))
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.fixture(scope="module")
def log(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("log")
    records, truth = simulate(world, oracle_decide(world), n=1200, lam=0.01, share=0.5, shadow_rate=0.3, seed=1)
    write_log(folder, records)
    return folder, truth


def test_cost_ab_matches_the_served_costs_and_its_interval_covers_the_truth(log, world):
    folder, truth = log
    ab = cost_ab(read_log(folder).records, n_resamples=500)
    r, c = np.mean(truth["router"]["cost"]), np.mean(truth["control"]["cost"])
    assert ab["router"]["n"] == len(truth["router"]["cost"]) and ab["control"]["n"] == len(truth["control"]["cost"])
    assert ab["router"]["cost_per_request"]["value"] == pytest.approx(r)
    assert ab["control"]["cost_per_1k"]["value"] == pytest.approx(1000 * c)
    saving = ab["saving"]
    assert saving["value"] == pytest.approx(1 - r / c)
    # The saving the policy gets on the whole table (no sampling noise) lies inside the interval.
    decide = oracle_decide(world)
    choice = [int(np.argmax(0.01 * decide(p, "")[0] - decide(p, "")[1])) for p in world.prompts]
    whole = 1 - world.cost[np.arange(world.n_samples), choice].mean() / world.cost[:, 2].mean()
    assert saving["low"] < whole < saving["high"] and saving["high"] - saving["low"] < 0.2


def test_cost_ab_without_a_control_arm_or_costs():
    from production_logs import simulate as sim

    table = _world(30)
    records, _ = sim(table, oracle_decide(table), n=50, lam=0.01, share=1.0, shadow_rate=0.0)
    ab = cost_ab(records, n_resamples=100)
    assert ab["control"] is None and ab["saving"] is None and ab["router"]["n"] == 50
    import dataclasses

    no_cost = [dataclasses.replace(r, cost_usd=None) for r in records]
    ab = cost_ab(no_cost, n_resamples=100)
    assert ab["router"]["n_cost_unknown"] == 50 and ab["router"]["cost_per_request"] is None


def test_verdicts_and_quality_delta_against_the_reference(log):
    folder, _ = log
    read = read_log(folder)
    rows = graded_rows(read.records, read.grades)
    assert len(rows) == len(read.grades) and {r.arm for r in rows} == {"router", "control"}
    router = [r for r in rows if r.arm == "router"]
    s = verdict_summary(router, n_resamples=300)
    shares = {v: sum(r.verdict == v for r in router) / len(router) for v in ("win", "tie", "loss")}
    for v, share in shares.items():
        assert s[v]["value"] == pytest.approx(share) and s[v]["low"] <= share <= s[v]["high"]
    assert s["quality_delta"]["value"] == pytest.approx(shares["win"] - shares["loss"])
    assert s["answer_quality"]["value"] - s["reference_quality"]["value"] == pytest.approx(
        s["quality_delta"]["value"])
    control = verdict_summary([r for r in rows if r.arm == "control"], n_resamples=100)
    assert control["tie"]["value"] == 1.0  # the control model is the reference: always a tie
    assert verdict_summary([]) == {"n": 0}


def test_an_online_and_an_offline_grade_of_one_request_count_once(log):
    folder, _ = log
    read = read_log(folder)
    g = read.grades[0]
    judge = GradeRecord(request_id=g.request_id, time=g.time + 5, grader="judge:j", verdict="win", answer_score=1.0,
                        reference_score=0.5, answered_by=g.answered_by, reference=g.reference)
    rows = graded_rows(read.records, [*read.grades, judge])
    assert len(rows) == len(read.grades)
    assert next(r for r in rows if r.request_id == g.request_id).grader == "exact"  # exact preferred
    only_judge = graded_rows(read.records, [*read.grades, judge], grader="judge:j")
    assert [(r.request_id, r.delta) for r in only_judge] == [(g.request_id, 1.0)]


def test_drift_is_flagged_only_where_a_model_got_worse_and_says_since_when(world, tmp_path):
    # From request 200 on (100 minutes in), mid's answers to medium prompts are wrong. Before that the router
    # (an oracle) never loses against the reference, as the offline interval below promises.
    start = T0 + 200 * 30
    records, _ = simulate(world, oracle_decide(world), n=1200, lam=0.01, shadow_rate=1.0, seed=2,
                          drift=Drift("mid", "medium", start))
    read_rows = graded_rows([r for r in records if r.kind == "decision"], [r for r in records if r.kind == "grade"])
    offline = {"quality_diff": {"value": 0.03, "low": 0.0, "high": 0.06}}
    flags = {f.category: f for f in drift_flags(read_rows, offline, bucket="hour", min_n=20, n_resamples=300)}
    assert set(flags) == {"easy", "medium", "hard"}
    assert flags["medium"].flagged and flags["medium"].confirmed and flags["medium"].offline_source == "overall"
    assert not flags["easy"].flagged and not flags["hard"].flagged
    assert flags["medium"].since is not None and flags["medium"].since >= bucket_of(start - 3600, "hour")
    per_cat = {"quality_diff": offline["quality_diff"],
               "extra": {"per_category": {"medium": {"quality_diff": {"value": -0.9, "low": -0.95, "high": -0.8}}}}}
    flags = {f.category: f for f in drift_flags(read_rows, per_cat, min_n=20, n_resamples=300)}
    assert not flags["medium"].flagged and flags["medium"].offline_source == "per-category"
    assert drift_flags(read_rows, {}, min_n=20) == []  # nothing promised: nothing to compare


def test_time_buckets():
    assert bucket_of(T0, "hour") == "2025-12-02T04" and bucket_of(T0, "day") == "2025-12-02"
    assert choose_bucket([T0, T0 + 86400]) == "hour" and choose_bucket([T0, T0 + 5 * 86400]) == "day"
    with pytest.raises(ValueError, match="bucket"):
        bucket_of(T0, "week")


def test_to_outcomes_builds_a_production_table_of_the_graded_pairs(log):
    folder, _ = log
    read = read_log(folder)
    built = to_outcomes(read, origin=str(folder))
    t = built.table
    assert t.card.extra["provenance"] == PROVENANCE and built.grader == "exact"
    assert built.models[0] == "big" and set(t.frame["model"]) == set(built.models)
    pairs = {p.request_id: p for p in read.shadow_pairs}
    row = t.frame[t.frame["model"] == built.models[1]].iloc[0]
    pair = pairs[row["request_id"]]
    assert row["prompt"] == pair.prompt_text and row["response"] == pair.answer_text and row["task"] == PROVENANCE
    assert set(t.frame["score"]) <= {0.0, 1.0} and (t.frame["cost_usd"] > 0).all()
    assert t.frame.groupby("sample_id")["model"].size().eq(2).all()  # complete: every sample has both models
    assert built.left_out["sample without every model"] > 0  # prompts answered by another model
    with pytest.raises(DataNotFoundError, match="keep fewer models"):  # no prompt was seen with all three
        to_outcomes(read, models=["cheap", "mid", "big"])
    with pytest.raises(DataNotFoundError, match="no grades by"):
        to_outcomes(read, grader="judge:nobody")


def test_to_outcomes_without_grades_says_to_grade_first(tmp_path):
    table = _world(30)
    records, _ = simulate(table, oracle_decide(table), n=40, lam=0.01, grade=False)
    write_log(tmp_path, records)
    with pytest.raises(DataNotFoundError, match="routelab logs grade"):
        to_outcomes(read_log(tmp_path))


@pytest.mark.slow
def test_routelab_eval_runs_on_the_production_outcomes(log, tmp_path, capsys):
    folder, _ = log
    out = tmp_path / "production.parquet"
    assert main(["logs", "to-outcomes", str(folder), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "provenance production" in printed and out.is_file()
    table = load(str(out))
    assert table.card.extra["provenance"] == PROVENANCE and table.n_models == 2
    cfg = tmp_path / "eval.toml"
    cfg.write_text(f'name = "production"\n[dataset]\nsource = "{out}"\n[evaluation]\nn_resamples = 100\n'
                   '[[routers]]\nname = "category"\n[[routers]]\nname = "single"\n', encoding="utf-8")
    summary = tmp_path / "summary.json"
    assert main(["eval", str(cfg), "--no-mlflow", "--quiet", "--out", str(tmp_path / "report"), "--json",
                 str(summary)]) == 0
    doc = json.loads(summary.read_text())
    assert doc["n_test"] > 0 and {r["label"] for r in doc["routers"]} >= {"category", "single"}
