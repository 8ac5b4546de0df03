"""Promised vs delivered (issue 15, item 5): the report of a decision log served by a real export, with A/B cost,
win/tie/loss, per-category and per-hour tables, off-policy estimates of another operating point and another export,
drift flags; the ``routelab logs report`` command and its MLflow run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import PRICES
from production_logs import served_export, simulate, write_log

from evals.cli import main
from evals.production.log_reader import read_log
from evals.production.propensity import greedy_choice
from evals.workbench.production_report import build_report, prompts_from_table
from routers import make_router
from routers.export import export_router

LAM = 0.05


def _knn(table):
    return make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)


@pytest.fixture(scope="module")
def served(small_table, tmp_path_factory):
    """A knn export with its measurement on the table, and a log of 1,500 requests it served (rollout 0.5)."""
    tmp = tmp_path_factory.mktemp("prod")
    out = served_export(small_table, tmp, lam=LAM, share=0.5, epsilon=0.1, shadow_rate=0.2)
    out["other"] = export_router(_knn(small_table), tmp / "other", lam=0.5, prices=PRICES)
    no_text, _ = simulate(small_table, out["decide"], n=300, lam=LAM, epsilon=0.1, store_text=False,
                          shadow_rate=0.0, seed=3)
    write_log(tmp / "log-no-text", no_text)
    out["no_text"] = tmp / "log-no-text"
    return out


def test_report_sets_the_delivered_saving_beside_the_promise(served):
    rep = build_report(served["log"], served["folder"], n_resamples=300)
    truth, m = served["truth"], served["measurement"]
    saving = rep.delivered["cost"]["saving"]
    assert saving["value"] == pytest.approx(1 - np.mean(truth["router"]["cost"]) / np.mean(truth["control"]["cost"]))
    assert saving["low"] < saving["value"] < saving["high"]
    assert rep.promised["savings"] == m.to_dict()["savings"] and rep.promised["router"] == "knn"
    # The promise measured the exported point's own choices: the verdict compares the router arm without its
    # exploration picks (a random subset), and the delivered saving with them is shown beside it.
    own = rep.delivered["saving_own_choices"]
    assert rep.delivered["saving_compared"] == own and own != saving
    inside = m.savings["low"] <= own["value"] <= m.savings["high"]
    assert rep.saving_inside_promise is inside
    q = rep.delivered["quality"]
    assert q["n"] > 100 and q["graders"] == {"exact": q["n"]}
    assert set(rep.by_category) == {"easy", "medium", "hard"} and rep.bucket == "hour"
    assert sum(s["requests"] for s in rep.by_time.values()) == 1500 == rep.log["requests"]
    md = rep.to_markdown()
    assert "## Promised vs delivered" in md and f"{saving['value']:.1%}" in md
    verdict = f"Delivered saving of the router's own choices {own['value']:.1%} is " + (
        "inside" if inside else "OUTSIDE") + " the promised interval"
    assert verdict in md and f"exploration picks the router arm saved {saving['value']:.1%}" in md
    assert "## Per category" in md and "## Over time (per hour, UTC)" in md and "## Drift flags" in md
    json.dumps(rep.to_dict())  # JSON-able as it is
    explored = [d for d in read_log(served["log"]).records if d.explored and d.arm == "router"]
    assert explored and any(f"{len(explored):,} exploration pick(s)" in n for n in rep.notes)
    assert rep.delivered["saving_own_choices"]["n"] == 1500 - len(explored)
    metrics = rep.metrics()
    assert metrics["delivered_saving"] == pytest.approx(saving["value"]) and metrics["promised_saving"] == 0.5


def test_offpolicy_estimate_of_another_operating_point_covers_its_true_value(served, small_table):
    rep = build_report(served["log"], served["folder"], lams=[0.5], n_resamples=500)
    (est,) = rep.offpolicy
    assert est["key"] == "lam_0.5" and est["quality_reward"] == "exact correctness"
    # The truth: what the lam = 0.5 policy would have cost and scored on exactly these router-arm requests.
    read = read_log(served["log"])
    t = small_table
    index = {p: i for i, p in enumerate(t.prompts)}
    router = [d for d in read.records if d.arm == "router"]
    qhat = np.array([[c.predicted_quality for c in d.candidates] for d in router])
    chat = np.array([[c.predicted_cost for c in d.candidates] for d in router])
    pick = greedy_choice(qhat, chat, 0.5)
    rows = np.array([index[d.prompt_text] for d in router])
    true_cost = t.cost[rows, pick].mean()
    dr = est["estimates"]["cost"]["dr"]
    assert dr["low"] <= true_cost <= dr["high"]
    graded = {g.request_id for g in read.grades}
    sel = np.array([d.request_id in graded for d in router])
    true_quality = t.quality[rows[sel], pick[sel]].mean()
    dr_q = est["estimates"]["quality"]["dr"]
    assert dr_q["low"] <= true_quality <= dr_q["high"]
    assert "## Off-policy estimates" in rep.to_markdown()


def test_offpolicy_estimate_of_another_export_needs_the_prompts(served, small_table):
    rep = build_report(served["log"], served["folder"], compare=[served["other"]], n_resamples=200)
    (est,) = rep.offpolicy
    assert est["label"].startswith("knn (other, lam = 0.5)") and est["n"] > 600
    rep = build_report(served["no_text"], served["folder"], compare=[served["other"]], n_resamples=200)
    assert rep.offpolicy == [] and any("no logged request has its prompt text" in n for n in rep.notes)
    rep = build_report(served["no_text"], served["folder"], compare=[served["other"]], n_resamples=200,
                       prompts=prompts_from_table(small_table))
    (est,) = rep.offpolicy  # every router-arm request: the prompts were found by their hashes
    assert est["n"] + est["left_out"]["control_arm"] == 300


def test_report_without_a_control_arm_says_so(served, small_table, tmp_path):
    records, _ = simulate(small_table, served["decide"], n=200, lam=LAM, share=1.0)
    write_log(tmp_path, records)
    rep = build_report(tmp_path, served["folder"], n_resamples=100)
    assert rep.delivered["cost"]["saving"] is None and rep.saving_inside_promise is None
    assert any("no control arm" in n for n in rep.notes)


def test_cli_report_writes_markdown_and_json(served, small_table, tmp_path, capsys):
    out = tmp_path / "rep"
    offline = small_table.to_parquet(tmp_path / "offline.parquet")
    args = ["logs", "report", str(served["log"]), "--export", str(served["folder"]), "--lam", "0.5", "--out", str(out),
            "--resamples", "200", "--no-mlflow", "--json", str(tmp_path / "r.json"), "--offline", str(offline)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "# Production report: knn" in printed and "knn at lam = 0.5" in printed
    assert "(Offline interval per category: per-category.)" in printed
    doc = json.loads((out / "report.json").read_text())
    assert doc["delivered"]["cost"]["saving"]["n"] == 1500 and (out / "report.md").read_text() in printed + "\n"
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    assert main(["logs", "report", str(tmp_path / "nope"), "--export", str(served["folder"]), "--no-mlflow"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_report_logs_an_mlflow_run(served, tmp_path, mlflow_uri, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert main(["logs", "report", str(served["log"]), "--export", str(served["folder"]), "--out",
                 str(tmp_path / "rep"), "--resamples", "200"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mlflow: run "))
    run = MlflowClient(mlflow_uri).get_run(line.split()[2])
    assert run.data.tags["routelab.kind"] == "production"
    assert 0 < run.data.metrics["delivered_saving"] < 1 and run.data.metrics["promised_saving"] == 0.5
    assert run.data.params["router"] == "knn"


def test_offline_outcomes_give_each_category_its_own_interval(served, small_table):
    rep = build_report(served["log"], served["folder"], offline=small_table, n_resamples=200, min_n=5)
    per = rep.promised["per_category"]
    assert set(per) == {"easy", "medium", "hard"} and sum(v["n"] for v in per.values()) == small_table.n_samples
    assert {f["offline_source"] for f in rep.drift} == {"per-category"}
    for f in rep.drift:
        assert f["offline"] == per[f["category"]]["quality_diff"]
    assert "(Offline interval per category: per-category.)" in rep.to_markdown()
    overall = build_report(served["log"], served["folder"], n_resamples=200, min_n=5)
    assert "pass the evaluation's outcomes (--offline)" in overall.to_markdown()


def test_an_export_without_a_measurement_promises_nothing(served):
    rep = build_report(served["log"], served["other"], n_resamples=100)  # exported without a measurement block
    assert not rep.promised["measured"] and rep.saving_inside_promise is None and rep.drift == []
    assert any("no measurement block" in n for n in rep.notes)
    assert "(no measurement block)" in rep.to_markdown()
