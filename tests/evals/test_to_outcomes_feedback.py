"""Client feedback that names its request becomes production outcomes (issue 15, item 6): joined to the decision
through ``request_id``, scored for the model that answered, on the prompt the log stored; one grader's scale per
table (feedback is its own ``feedback`` label, never mixed with shadow grades); feedback that cannot be used is
counted in ``left_out`` with its reason; ``routelab logs to-outcomes`` says how many samples came from feedback."""

from __future__ import annotations

import pytest
from production_logs import T0, write_log

from evals.cli import main
from evals.exceptions import DataNotFoundError
from evals.production.log_reader import read_log
from evals.production.records import DecisionRecord, FeedbackRecord, GradeRecord, ShadowPair, prompt_hash
from evals.production.to_outcomes import FEEDBACK_GRADER, PROVENANCE, to_outcomes
from evals.sources import load

N = 10  # prompts answered by both cheap and big, each answer scored by the client


def decision(rid: str, prompt: str | None, model: str, *, cost: float | None = 0.001, t: float = T0,
             category: str = "math") -> DecisionRecord:
    return DecisionRecord(request_id=rid, time=t, route="router", prompt_hash=prompt_hash(prompt or rid), status=200,
                          latency_s=0.2, category=category, answered_by=model, reason="passthrough", input_tokens=30,
                          output_tokens=9, cost_usd=cost, prompt_text=prompt,
                          answer_text=None if prompt is None else f"{model} says {prompt}")


def fb(rid: str | None, model: str, score: float, t: float = T0 + 10) -> FeedbackRecord:
    return FeedbackRecord(time=t, model=model, score=score, request_id=rid, category="math")


def scenario() -> list:
    """A log of N prompts each answered by cheap and by big with feedback on both, plus every kind of unusable
    feedback, and one exactly graded shadow pair."""
    records: list = []
    for i in range(N):
        p = f"question {i}"
        records += [decision(f"c{i}", p, "cheap", cost=0.0002), decision(f"b{i}", p, "big", cost=0.005)]
        records += [fb(f"c{i}", "cheap", float(i % 2)), fb(f"b{i}", "big", 1.0)]
    records += [
        fb("c0", "cheap", 0.5, t=T0 + 99),  # a later score of c0: it replaces the first
        fb(None, "cheap", 1.0),  # no request id
        fb("nobody", "cheap", 1.0),  # names no logged request
        decision("hidden", None, "cheap"), fb("hidden", "cheap", 1.0),  # the log stored no prompt
        fb("b1", "cheap", 0.0),  # says cheap, but big answered b1
        decision("only-cheap", "lonely question", "cheap"), fb("only-cheap", "cheap", 1.0),  # no big outcome
        decision("free", "question 0", "big", cost=None), fb("free", "big", 1.0),  # no cost: not an outcome
    ]
    pair = ShadowPair(request_id="c1", time=T0 + 5, route="router", answered_by="cheap", reference="big",
                      reference_status=200, reference_latency_s=0.3, category="math", prompt_text="question 1",
                      answer_text="cheap says question 1", reference_text="big says 1", expected="A",
                      answer_cost_usd=0.0002, reference_cost_usd=0.005)
    grade = GradeRecord(request_id="c1", time=T0 + 6, grader="exact", verdict="loss", answer_score=0.0,
                        reference_score=1.0, answered_by="cheap", reference="big", category="math")
    return [*records, pair, grade]


@pytest.fixture()
def log_dir(tmp_path):
    folder = tmp_path / "log"
    write_log(folder, scenario())
    return folder


def test_feedback_naming_its_request_becomes_the_answering_models_outcome_on_that_prompt(log_dir):
    read = read_log(log_dir)
    assert not read.errors and len(read.feedback) == 2 * N + 7
    built = to_outcomes(read, origin=str(log_dir))  # feedback has the most scores: it is the default label
    t = built.table
    assert built.grader == FEEDBACK_GRADER and set(built.models) == {"cheap", "big"}
    assert t.n_samples == N and built.samples_from_feedback == N and set(t.frame["grader"]) == {FEEDBACK_GRADER}
    assert t.card.extra["provenance"] == PROVENANCE and t.card.extra["samples_from_feedback"] == N
    by = {(r.sample_id, r.model): r for r in t.frame.itertuples()}
    for i in range(N):
        p = f"question {i}"
        cheap, big = by[(prompt_hash(p), "cheap")], by[(prompt_hash(p), "big")]
        assert cheap.prompt == p and cheap.response == f"cheap says {p}" and cheap.category == "math"
        assert cheap.score == (0.5 if i == 0 else float(i % 2))  # the latest feedback of a request counts
        assert big.score == 1.0 and big.cost_usd == 0.005 and cheap.cost_usd == 0.0002
        assert cheap.request_id == f"c{i}" and cheap.latency_s == 0.2 and cheap.input_tokens == 30
    assert built.left_out == {
        "feedback without request id": 1, "feedback without its decision": 1,
        "feedback on a decision without stored prompt": 1, "feedback for another model than answered": 1,
        "feedback superseded by a later one": 1, "cost unknown": 1, "sample without every model": 1,
        "other grader": 1,  # the exact grade: another scale, not mixed in
    }
    assert f"{N} sample(s) from feedback" in built.summary()


def test_grades_and_feedback_are_never_mixed_in_one_table(log_dir):
    read = read_log(log_dir)
    graded = to_outcomes(read, grader="exact")
    assert graded.grader == "exact" and set(graded.table.frame["grader"]) == {"exact"}
    assert graded.samples_from_feedback == 0 and "0 sample(s) from feedback" in graded.summary()
    # Every usable feedback is reported as another grader's score (2 per prompt, the lonely one, the free one).
    assert graded.left_out["feedback: another grader"] == 2 * N + 2
    assert graded.left_out["feedback without request id"] == 1  # unusable feedback is reported either way
    with pytest.raises(DataNotFoundError, match="no grades by 'judge:x'"):
        to_outcomes(read, grader="judge:x")


def test_feedback_models_can_be_chosen_and_a_log_without_usable_feedback_says_why(log_dir, tmp_path):
    only_cheap = to_outcomes(read_log(log_dir), grader=FEEDBACK_GRADER, models=["cheap"])
    assert only_cheap.models == ("cheap",) and only_cheap.table.n_samples == N + 1  # the lonely prompt too
    assert only_cheap.left_out["model not kept"] == N + 1  # big's outcomes (the free one included)
    empty = tmp_path / "no-texts"
    write_log(empty, [decision("r1", None, "cheap"), fb("r1", "cheap", 1.0), fb(None, "cheap", 0.0)])
    with pytest.raises(DataNotFoundError, match="no usable feedback") as err:
        to_outcomes(read_log(empty))
    assert "without stored prompt" in str(err.value) and "without request id" in str(err.value)


def test_cli_to_outcomes_says_how_many_samples_came_from_feedback(log_dir, tmp_path, capsys):
    out = tmp_path / "production.parquet"
    assert main(["logs", "to-outcomes", str(log_dir), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{N} sample(s) from feedback" in printed and "answered models' feedback" in printed
    table = load(str(out))
    assert table.n_samples == N and set(table.models) == {"cheap", "big"}
    assert main(["logs", "to-outcomes", str(log_dir), "-o", str(tmp_path / "g.parquet"), "--grader", "exact"]) == 0
    printed = capsys.readouterr().out
    assert "0 sample(s) from feedback" in printed and "from exact grades" in printed
