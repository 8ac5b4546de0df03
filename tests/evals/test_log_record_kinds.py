"""Shadow pairs and grade records (issue 15, item 4): schema, JSON round trip, and reading them from mixed segments."""

from __future__ import annotations

import json

import pytest

from evals.production.log_reader import read_log, segment_name, write_segment
from evals.production.records import (
    Candidate,
    DecisionRecord,
    GradeRecord,
    RecordError,
    ShadowPair,
    prompt_hash,
    record_from_json,
    verdict_of,
)

T0 = 1_764_650_000.0


def _decision(i: int = 0) -> DecisionRecord:
    return DecisionRecord(request_id=f"req-{i}", time=T0 + i, route="router", prompt_hash=prompt_hash(f"p{i}"),
                          status=200, latency_s=0.1, category="math", chosen="cheap",
                          candidates=(Candidate("cheap", 0.6, 0.001), Candidate("strong", 0.9, 0.01)),
                          propensity=0.95, answered_by="cheap", arm="router", shadow=True)


def _pair(i: int = 0, **over) -> ShadowPair:
    base = dict(request_id=f"req-{i}", time=T0 + i + 0.5, route="router", answered_by="cheap", reference="strong",
                reference_status=200, reference_latency_s=0.4, category="math", prompt_text=f"What is {i}+{i}?",
                answer_text=str(2 * i), reference_text=str(2 * i), expected=str(2 * i), answer_cost_usd=0.001,
                reference_cost_usd=0.01)
    base.update(over)
    return ShadowPair(**base)


def _grade(i: int = 0, **over) -> GradeRecord:
    base = dict(request_id=f"req-{i}", time=T0 + 100 + i, grader="judge:judge-model", verdict="win",
                answer_score=0.75, reference_score=0.5, answered_by="cheap", reference="strong", category="math")
    base.update(over)
    return GradeRecord(**base)


def test_shadow_pair_and_grade_round_trip_with_their_kind():
    pair, grade = _pair(2), _grade(2, online=True, detail="A>B|B>A")
    for rec in (pair, grade):
        line = rec.to_json()
        data = json.loads(line)
        assert list(data)[:2] == ["schema_version", "kind"]
        assert type(rec).from_json(line) == rec
        assert record_from_json(line) == rec
    assert json.loads(pair.to_json())["kind"] == "shadow" and json.loads(grade.to_json())["kind"] == "grade"
    assert pair.gradable and grade.key == ("req-2", "judge:judge-model")


def test_decision_lines_carry_kind_and_old_lines_without_it_stay_valid():
    rec = _decision(1)
    data = json.loads(rec.to_json())
    assert data["kind"] == "decision"
    del data["kind"]  # a line written before record kinds existed
    assert record_from_json(json.dumps(data)) == rec
    with pytest.raises(RecordError) as info:
        record_from_json(json.dumps({**data, "kind": "feedbackz"}))
    assert info.value.field == "kind" and "unknown record kind" in str(info.value)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"reference_status": 99}, "reference_status"),
        ({"reference_latency_s": -1.0}, "reference_latency_s"),
        ({"answered_by": ""}, "answered_by"),
        ({"reference_cost_usd": float("nan")}, "reference_cost_usd"),
        ({"reference_text": "key sk-abcdefghijklmnopqrstuvwx"}, "reference_text"),
        ({"kind": "grade"}, "kind"),
        ({"time": "yesterday"}, "time"),
    ],
)
def test_bad_shadow_pairs_are_refused_naming_the_field(over, field):
    with pytest.raises(RecordError) as info:
        _pair(**over)
    assert info.value.field == field and info.value.kind == "shadow"
    assert str(info.value).startswith("shadow record field")


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"verdict": "draw"}, "verdict"),
        ({"verdict": "loss"}, "verdict"),  # disagrees with 0.75 vs 0.5
        ({"answer_score": 1.5}, "answer_score"),
        ({"grader": ""}, "grader"),
        ({"online": 1}, "online"),
    ],
)
def test_bad_grades_are_refused_naming_the_field(over, field):
    with pytest.raises(RecordError) as info:
        _grade(**over)
    assert info.value.field == field and info.value.kind == "grade"


def test_build_caps_and_redacts_the_three_texts():
    pair = ShadowPair.build(cap=10, prompt_text="Bearer abcdefghijklmnop and more", answer_text="short",
                            reference_text="x" * 50, request_id="r", time=T0, route="router", answered_by="cheap",
                            reference="strong", reference_status=200, reference_latency_s=0.1)
    assert pair.prompt_text == "*** and mo" and pair.answer_text == "short" and pair.reference_text == "x" * 10
    assert pair.text_truncated
    failed = _pair(reference_status=504, reference_text=None, reference_error="timeout")
    assert not failed.gradable


def test_verdict_of_orders_scores():
    assert (verdict_of(1, 0), verdict_of(0.5, 0.5), verdict_of(0.25, 0.5)) == ("win", "tie", "loss")


def test_read_log_sorts_kinds_into_their_lists_and_counts_bad_ones(tmp_path):
    lines = [_decision(0).to_json(), _pair(0).to_json(), _decision(1).to_json(), _grade(0).to_json(),
             json.dumps({**_pair(1).to_dict(), "reference_status": 1000}),
             json.dumps({**_grade(1).to_dict(), "verdict": "tie"}),
             json.dumps({**_grade(1).to_dict(), "kind": "mystery"})]
    (tmp_path / segment_name(T0, 0)).write_text("\n".join(lines) + "\n", encoding="utf-8")
    written = write_segment(tmp_path, [_grade(5), _grade(6)], now=T0 + 10)
    assert written is not None and written.name == segment_name(T0 + 10, 0, "grades")
    again = write_segment(tmp_path, [_grade(7)], now=T0 + 10)  # same second: the next sequence number
    assert again is not None and again.name == segment_name(T0 + 10, 1, "grades")
    assert write_segment(tmp_path, []) is None
    result = read_log(tmp_path)
    assert [r.request_id for r in result.records] == ["req-0", "req-1"]
    assert [p.request_id for p in result.shadow_pairs] == ["req-0"]
    assert [g.request_id for g in result.grades] == ["req-0", "req-5", "req-6", "req-7"]
    assert result.errors == {"bad_shadow:reference_status": 1, "bad_grade:verdict": 1, "unknown_kind": 1}
    assert "1 shadow pairs, 4 grades" in result.summary()
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="prefix"):
        segment_name(T0, 0, "other")
