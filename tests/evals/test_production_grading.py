"""Grading shadow pairs (issue 15, item 4): pairwise judge in both orders through the replay server's judge on
loopback, exact match where the expected answer is known, idempotent ``routelab logs grade``."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from evals.cli import main
from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.production.grading import agrade_pair, grade_exact, grade_log, http_judge
from evals.production.log_reader import read_log, segment_name
from evals.production.records import ShadowPair
from evals.serving import ReplayServer

T0 = 1_764_650_000.0


def _table() -> OutcomeTable:
    """cheap right on "easy" only, big right everywhere (the replay judge decides from these scores)."""
    rows = []
    for cat in ("easy", "hard"):
        for i in range(4):
            for model in ("cheap", "big"):
                right = model == "big" or cat == "easy"
                rows.append(dict(sample_id=f"{cat}-{i}", category=cat, prompt=f"{cat} q{i}", model=model,
                                 response=f"{model} answers {cat} q{i}", score=float(right), cost_usd=0.0))
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def server():
    with ReplayServer(_table()) as srv:
        yield srv


def _pair(rid: str, cat: str, i: int, answered_by: str = "cheap", **over) -> ShadowPair:
    base = dict(request_id=rid, time=T0, route="router", answered_by=answered_by, reference="big",
                reference_status=200, reference_latency_s=0.1, category=cat, prompt_text=f"{cat} q{i}",
                answer_text=f"{answered_by} answers {cat} q{i}", reference_text=f"big answers {cat} q{i}")
    base.update(over)
    return ShadowPair(**base)


def _write(folder, records) -> None:
    folder.mkdir(exist_ok=True)
    (folder / segment_name(T0, 0)).write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")


def test_judge_grades_both_orders_with_known_verdicts(server):
    async def go():
        async with http_judge(server.base_url, "replay-judge") as judge:
            lose = await agrade_pair(_pair("r1", "hard", 0), judge=judge, judge_model="replay-judge", now=T0)
            tie = await agrade_pair(_pair("r2", "easy", 1), judge=judge, judge_model="replay-judge", now=T0)
            unknown = await agrade_pair(_pair("r3", "easy", 2, answer_text="made up"), judge=judge,
                                        judge_model="replay-judge")
            return lose, tie, unknown

    before = server.stats()["judged"]
    lose, tie, unknown = asyncio.run(go())
    assert (lose.verdict, lose.answer_score, lose.reference_score) == ("loss", 0.0, 0.5)
    assert lose.grader == "judge:replay-judge" and lose.detail == "B|A" and not lose.online
    assert (tie.verdict, tie.answer_score) == ("tie", 0.5)
    assert unknown is None  # the judge gave no verdict: never guessed
    assert server.stats()["judged"] - before == 6  # both orders, three pairs


def test_exact_grading_uses_the_expected_answer():
    pair = _pair("r1", "math", 0, answer_text="So the answer is (B).", reference_text="The answer is (C)",
                 expected="C", prompt_text="Which? (A) (B) (C)")
    g = grade_exact(pair, now=T0, online=True)
    assert (g.grader, g.verdict, g.answer_score, g.reference_score, g.online) == ("exact", "loss", 0.0, 1.0, True)
    assert g.detail.startswith("mcq_letter: B|C")
    both = grade_exact(_pair("r2", "math", 0, answer_text="The answer is (C)", reference_text="The answer is (C)",
                             expected="C"))
    assert both.verdict == "tie" and both.answer_score == 1.0
    assert grade_exact(_pair("r3", "m", 0, expected="C", reference_status=504, reference_text=None)) is None
    with pytest.raises(ConfigError, match="needs a judge"):
        grade_exact(pair, "judge_pairwise")


def test_agrade_pair_needs_a_judge_name_and_skips_pairs_it_cannot_grade():
    async def judge(messages):  # never called
        raise AssertionError

    with pytest.raises(ConfigError, match="judge_model"):
        asyncio.run(agrade_pair(_pair("r", "easy", 0), judge=judge))
    assert asyncio.run(agrade_pair(_pair("r", "easy", 0))) is None  # no expected answer, no judge


def test_grade_log_is_idempotent_and_counts_what_it_skipped(server, tmp_path):
    pairs = [_pair(f"h{i}", "hard", i) for i in range(4)] + [_pair(f"e{i}", "easy", i) for i in range(4)]
    pairs += [_pair("x1", "easy", 0, reference_status=429, reference_text=None, reference_error="http 429"),
              _pair("x2", "easy", 0, prompt_text=None),
              _pair("x3", "easy", 0, answer_text="The answer is (A)", reference_text="The answer is (B)", expected="A")]
    _write(tmp_path, pairs)

    async def go():
        async with http_judge(server.base_url, "replay-judge") as judge:
            return await grade_log(tmp_path, judge=judge, judge_model="replay-judge", concurrency=3)

    run = asyncio.run(go())
    assert len(run.graded) == 9 and len(run.segments) == 1 and run.segments[0].name.startswith("grades-")
    assert run.skipped == {"reference failed": 1, "texts not stored": 1}
    verdicts = {g.request_id: g.verdict for g in run.graded}
    assert all(verdicts[f"h{i}"] == "loss" and verdicts[f"e{i}"] == "tie" for i in range(4))
    assert verdicts["x3"] == "win" and "graded 9 pair(s) (exact 1, judge 8): 1 win, 4 tie, 4 loss" in run.summary()
    again = asyncio.run(go())
    assert again.graded == [] and again.skipped["already graded"] == 9 and again.segments == []
    assert len(read_log(tmp_path).grades) == 9


def test_cli_grade_writes_grades_once(server, tmp_path, capsys):
    _write(tmp_path, [_pair("h0", "hard", 0), _pair("e0", "easy", 0)])
    args = ["logs", "grade", str(tmp_path), "--judge-url", server.base_url, "--judge-model", "replay-judge"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "graded 2 pair(s) (exact 0, judge 2): 0 win, 1 tie, 1 loss" in out and "wrote " in out
    assert main(args) == 0
    assert "graded 0 pair(s)" in capsys.readouterr().out and len(read_log(tmp_path).grades) == 2
    assert main(["logs", "grade", str(tmp_path), "--judge-url", server.base_url]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["logs", "grade", str(tmp_path / "missing")]) == 2


def test_cli_grade_without_a_judge_says_which_pairs_need_one(tmp_path, capsys):
    _write(tmp_path, [_pair("h0", "hard", 0)])
    assert main(["logs", "grade", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "skipped needs a judge 1" in captured.out and "--judge-url" in captured.err
