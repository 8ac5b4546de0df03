"""Graders on real recorded data: arena-bench-v1 GPT-4 verdicts, MMLU-Pro letters, GSM8K final numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evals.graders import GradeInput, get_grader, parse_rating


def test_verdict_parser_recovers_every_recorded_arena_bench_score(shared_data):
    """All 4,500 recorded GPT-4 verdicts: the parser returns the recorded score wherever one exists."""
    path = shared_data / "arena-bench-v1" / "judgments_gpt4_single.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 4500
    parsed = [parse_rating(r["judgment"]) for r in rows]
    recorded = [(p, r["score"]) for p, r in zip(parsed, rows, strict=True) if r["score"] is not None]
    agree = sum(p == float(s) for p, s in recorded)
    unparsable = sum(p is None for p in parsed)
    print(
        f"\narena-bench-v1 verdicts: {agree}/{len(recorded)} recorded scores recovered; "
        f"{unparsable} of {len(rows)} unparsable (recorded null: {len(rows) - len(recorded)})"
    )
    assert agree == len(recorded) == 4461
    # Where the record has no score, the parser only reads an explicit in-range [[r]] (e.g. [[9.5]]), never
    # a stray bracketed number in code such as `char input[100]`.
    extra = [
        (p, r["judgment"]) for p, r in zip(parsed, rows, strict=True) if r["score"] is None and p is not None
    ]
    assert all(f"[[{p:g}]]" in text for p, text in extra)
    assert unparsable == 39 - len(extra) == 35


@pytest.mark.slow
def test_mcq_letter_grader_equals_the_mmlu_pro_importer_on_every_row():
    from evals import sources

    table = sources.load("mmlu-pro")
    f = table.frame
    grader = get_grader("mcq_letter")
    grades = [
        grader.grade(GradeInput(p, r, ref))
        for p, r, ref in zip(f["prompt"], f["response"], f["reference"], strict=True)
    ]
    scores = np.array([g.score for g in grades])
    assert len(f) > 140_000
    np.testing.assert_array_equal(scores, f["score"].to_numpy())
    assert [g.extracted for g in grades] == f["extracted"].tolist()
    per_model = pd.Series(scores).groupby(f["model"].to_numpy()).mean()
    assert per_model["gpt-4o-2024-05-13"] == pytest.approx(0.72, abs=0.02)


def test_number_grader_on_routellm_gsm8k_responses(shared_data):
    """GSM8K answers of GPT-4 and Mixtral vs gold ``#### N``, and vs RouteLLM's recorded correctness."""
    resp = pd.read_csv(shared_data / "routellm-gpt4-mixtral" / "gsm8k" / "gsm8k_responses.csv")
    gold = {}
    for line in (shared_data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        gold[rec["question"]] = rec["answer"]
    assert resp["prompt"].isin(gold).all()
    grader = get_grader("number")
    for model, min_agree in [("mistralai/Mixtral-8x7B-Instruct-v0.1", 0.99), ("gpt-4-1106-preview", 0.95)]:
        texts = resp[f"{model}_response"].fillna("")
        ours = np.array(
            [
                grader.grade(GradeInput(p, t, gold[p])).score
                for p, t in zip(resp["prompt"], texts, strict=True)
            ]
        )
        recorded = resp[model].astype(bool).to_numpy()
        agree = float((ours == recorded).mean())
        print(
            f"\n{model}: ours {ours.mean():.3f} vs recorded {recorded.mean():.3f}, "
            f"agreement {agree:.3f} (n={len(ours)})"
        )
        assert agree >= min_agree
        if model == "gpt-4-1106-preview":
            # Every answer RouteLLM counted right, we count right; the disagreements are answers without
            # '####' whose final number RouteLLM's checker missed.
            assert int((~ours.astype(bool) & recorded).sum()) == 0
