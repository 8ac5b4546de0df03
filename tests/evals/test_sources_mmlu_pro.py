"""The MMLU-Pro importer on the real mirror: coverage, extraction rule, accuracy vs the source, costs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from evals import sources
from evals.prices import PriceTable
from evals.sources.mmlu_pro import MODEL_NAMES, compare_with_source, extract_letter, format_prompt


@pytest.fixture(scope="module")
def mmlu_pro(shared_data):
    return sources.load("mmlu-pro", data_dir=shared_data)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("Let's think. The answer is (C).", "C"),
        ("the answer is D because", "D"),
        ("The answer is (B). Later: the answer is (C).", "B"),  # first statement wins, as in the harness
        ("Therefore, the answer is:\n\n\\[ \\boxed{J} \\]", "J"),
        ("The answer is \\(\\boxed{H}\\).", "H"),
        ("\\boxed{\\text{(E)}}", "E"),
        ("I think the second option. A good one.", ""),  # no guessing from stray capitals
        ("The answer is (K).", ""),  # only A-J exist
        ("", ""),
    ],
)
def test_extract_letter_rule(text, letter):
    assert extract_letter(text) == letter


def test_format_prompt_letters_the_options():
    assert format_prompt(" Q? ", ["x", "y"]) == "Q?\n\nOptions:\nA. x\nB. y"


def test_coverage_models_and_categories(mmlu_pro):
    t = mmlu_pro
    assert t.n_models == 14 and set(t.models) == set(MODEL_NAMES.values())
    extra = t.card.extra
    assert extra["questions_total"] == 12032
    # DeepSeek-Coder-V2 covers the fewest questions (10,348); the intersection of all 14 is a bit smaller
    assert extra["covered_per_model"]["DeepSeek-Coder-V2"] == 10348
    assert extra["questions_kept"] == t.n_samples == 10262
    assert extra["incomplete_samples_dropped"] == 12032 - 10262
    assert len(set(t.categories)) == 14 and {"math", "law", "history"} <= set(t.categories)
    assert (t.frame["grader"] == "mcq_letter").all() and t.frame["cost_estimated"].all()
    assert set(t.samples["reference"]) <= set("ABCDEFGHIJ")


def test_accuracy_agrees_with_source_within_two_points(mmlu_pro, shared_data):
    cmp = compare_with_source(mmlu_pro, shared_data / "mmlu-pro-outputs")
    assert len(cmp) == 14
    worst = cmp.loc[cmp["gap_points"].abs().idxmax()]
    assert cmp["gap_points"].abs().max() <= 2.0, f"{worst['model']} is {worst['gap_points']} points off"
    # The re-extraction agrees exactly where the original harness used the same primary pattern.
    assert abs(cmp.set_index("model").loc["Mixtral-8x7B-Instruct", "gap_points"]) < 0.05


def test_scores_follow_the_rule_on_a_real_file(mmlu_pro, shared_data):
    """Recompute a few scores straight from a response file, independently of the importer's frame code."""
    path = shared_data / "mmlu-pro-outputs" / "responses" / "gemini-1.5-pro-002.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        recs = {str(r["question_id"]): r["output"] for r in map(json.loads, fh)}
    t = mmlu_pro.select(models=["gemini-1.5-pro-002"])
    ref = dict(zip(t.sample_ids, t.samples["reference"], strict=True))
    for sid, score in list(zip(t.sample_ids, t.quality[:, 0], strict=True))[:300]:
        assert score == float(extract_letter(recs[sid]) == ref[sid])


def test_no_letter_counts_are_in_the_card(mmlu_pro):
    f = mmlu_pro.frame
    no_letter = mmlu_pro.card.extra["no_letter"]
    assert set(no_letter) == set(mmlu_pro.models)
    for model in ("gpt-4o-2024-05-13", "jamba-1.5-large"):
        rows = f[f["model"] == model]
        assert no_letter[model] == int((rows["extracted"] == "").sum()) > 0
        assert (rows.loc[rows["extracted"] == "", "score"] == 0).all()


def test_cost_convention(mmlu_pro):
    f = mmlu_pro.frame
    row = f[f["model"] == "gpt-4o-2024-05-13"].iloc[0]
    tin = 1500 + len(row["prompt"]) / 4
    tout = len(row["response"]) / 4
    assert row["input_tokens"] == pytest.approx(tin) and row["output_tokens"] == pytest.approx(tout)
    assert row["cost_usd"] == pytest.approx((tin * 5 + tout * 15) / 1e6)
    prices = PriceTable.load()
    for model in mmlu_pro.models:  # every model priced by its default row, as the price list says
        rows = f[f["model"] == model]
        p = prices.price(model)
        expect = (rows["input_tokens"] * p.input_per_1m + rows["output_tokens"] * p.output_per_1m) / 1e6
        assert np.allclose(rows["cost_usd"], expect)
    # the cheap/expensive spread the sources promise: gpt-4o costs far more than gemini flash per request
    summary = mmlu_pro.model_summary().set_index("model")
    assert (
        summary.loc["gpt-4o-2024-05-13", "cost_per_1k"]
        > 50 * summary.loc["gemini-1.5-flash-002", "cost_per_1k"]
    )
