"""Telemetry snapshots and client feedback are log records like the others: validated on construction (the error
names the field), round-tripped through JSON, read by ``read_log`` into their own lists, and a bad line of either
kind is skipped and counted by kind and field, never failing the read."""

from __future__ import annotations

import json

import pytest

from evals.production.log_reader import read_log, segment_name
from evals.production.records import (
    KINDS,
    MAX_REQUEST_ID_CHARS,
    DecisionRecord,
    FeedbackRecord,
    RecordError,
    TelemetryRecord,
    prompt_hash,
    record_from_json,
    valid_request_id,
)

T0 = 1_764_650_000.0


def telemetry(**kw) -> TelemetryRecord:
    base = dict(upstream="cheap", time=T0, latency_s=0.12, error_rate=0.25, attempts=8, answers=6)
    return TelemetryRecord(**{**base, **kw})


def test_telemetry_and_feedback_round_trip_through_json_with_their_kind():
    t = telemetry(final=True)
    f = FeedbackRecord(time=T0, model="cheap", score=0.0, request_id="a" * 32, category="math")
    assert {"telemetry", "feedback"} <= set(KINDS)
    for rec, kind in ((t, "telemetry"), (f, "feedback")):
        line = rec.to_json()
        assert "\n" not in line and json.loads(line)["kind"] == kind and json.loads(line)["schema_version"] == 1
        assert record_from_json(line) == rec
    # Before any attempt an upstream has no estimates, and feedback need not name a request.
    assert record_from_json(telemetry(latency_s=None, error_rate=None, attempts=0, answers=0).to_json()).attempts == 0
    assert record_from_json(FeedbackRecord(time=T0, model="m", score=1).to_json()).request_id is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(upstream=""), "upstream"),
        (dict(time=-1.0), "time"),
        (dict(time=float("nan")), "time"),
        (dict(latency_s=-0.1), "latency_s"),
        (dict(latency_s="fast"), "latency_s"),
        (dict(error_rate=1.5), "error_rate"),
        (dict(attempts=-1), "attempts"),
        (dict(attempts=True), "attempts"),
        (dict(answers=9), "answers"),  # more answers than attempts
        (dict(error_rate=None), "error_rate"),  # attempts but no error rate
        (dict(latency_s=None), "latency_s"),  # answers but no latency
        (dict(final="yes"), "final"),
        (dict(kind="grade"), "kind"),
    ],
)
def test_a_telemetry_record_the_schema_refuses_names_the_field(kw, field):
    with pytest.raises(RecordError) as err:
        telemetry(**kw)
    assert err.value.field == field and err.value.kind == "telemetry"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(model=""), "model"),
        (dict(score=1.01), "score"),
        (dict(score=True), "score"),
        (dict(score=float("inf")), "score"),
        (dict(request_id=""), "request_id"),
        (dict(request_id="has space"), "request_id"),
        (dict(request_id="line\nbreak"), "request_id"),
        (dict(request_id="é"), "request_id"),
        (dict(request_id="x" * (MAX_REQUEST_ID_CHARS + 1)), "request_id"),
        (dict(request_id=12), "request_id"),
        (dict(category=3), "category"),
    ],
)
def test_a_feedback_record_the_schema_refuses_names_the_field(kw, field):
    with pytest.raises(RecordError) as err:
        FeedbackRecord(**{**dict(time=T0, model="cheap", score=0.5), **kw})
    assert err.value.field == field and err.value.kind == "feedback"


def test_request_ids_a_client_echoes_are_printable_ascii_of_sane_length():
    assert valid_request_id("0f" * 16) and valid_request_id("req-42_A.b:c") and valid_request_id("x" * 128)
    for bad in ("", " ", "a b", "x" * 129, "tab\t", None, 5, b"bytes"):
        assert not valid_request_id(bad), bad


def test_an_unknown_field_in_a_feedback_line_is_refused_so_nothing_can_be_smuggled_in():
    line = json.loads(FeedbackRecord(time=T0, model="cheap", score=1.0).to_json())
    with pytest.raises(RecordError, match="unknown field") as err:
        record_from_json(json.dumps({**line, "authorization": "Bearer x"}))
    assert err.value.field == "authorization"


def test_the_reader_puts_each_kind_in_its_list_and_counts_bad_lines_by_kind_and_field(tmp_path):
    decision = DecisionRecord(request_id="r1", time=T0, route="router", prompt_hash=prompt_hash("hi"), status=200,
                              latency_s=0.1)
    good = [decision, telemetry(), telemetry(upstream="big", time=T0 + 60, final=True),
            FeedbackRecord(time=T0 + 1, model="cheap", score=1.0, request_id="r1"),
            FeedbackRecord(time=T0 + 2, model="cheap", score=0.0)]
    bad_telemetry = {**json.loads(telemetry().to_json()), "answers": 99}
    bad_feedback = {**json.loads(FeedbackRecord(time=T0, model="m", score=0.5).to_json()), "score": 2}
    lines = [r.to_json() for r in good] + [json.dumps(bad_telemetry), json.dumps(bad_feedback)]
    (tmp_path / segment_name(T0, 0)).write_text("\n".join(lines) + "\n")
    result = read_log(tmp_path)
    assert result.records == [decision]
    assert [t.upstream for t in result.telemetry] == ["cheap", "big"] and result.telemetry[1].final
    assert [f.request_id for f in result.feedback] == ["r1", None]
    assert dict(result.errors) == {"bad_telemetry:answers": 1, "bad_feedback:score": 1}
    assert "2 telemetry snapshots" in result.summary() and "2 feedback" in result.summary()
