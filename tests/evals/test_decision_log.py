"""The decision-log record schema and the log reader (issue 15, item 1), on real files in a temporary folder."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from evals.exceptions import DataNotFoundError, SchemaError
from evals.production.log_reader import list_segments, read_log, segment_name
from evals.production.records import (
    SCHEMA_VERSION,
    Candidate,
    DecisionRecord,
    RecordError,
    cap_text,
    prompt_hash,
    redact_secrets,
)

T0 = 1_764_650_000.0  # 2025-12-02, a fixed time


def _record(i: int = 0, **over) -> DecisionRecord:
    base = dict(
        request_id=f"req-{i}",
        time=T0 + i,
        route="router",
        prompt_hash=prompt_hash(f"prompt {i}"),
        status=200,
        latency_s=0.12,
        category="math",
        chosen="cheap",
        candidates=(Candidate("cheap", 0.6, 0.001), Candidate("strong", 0.9, 0.01)),
        propensity=0.975,
        lam=0.01,
        epsilon=0.05,
        answered_by="cheap",
        reason="routed",
        input_tokens=12,
        output_tokens=30,
        cost_usd=0.0011,
        arm="router",
    )
    base.update(over)
    return DecisionRecord(**base)


def _write(path, records, tail: str = "") -> None:
    path.write_text("".join(r.to_json() + "\n" for r in records) + tail, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- records
def test_record_round_trips_through_one_json_line():
    rec = _record(3, prompt_text="What is 2+2?", answer_text="4", shadow=True)
    line = rec.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert list(data)[0] == "schema_version" and data["schema_version"] == SCHEMA_VERSION
    assert data["candidates"][1] == {"model": "strong", "predicted_quality": 0.9, "predicted_cost": 0.01,
                                     "eligible": True}
    back = DecisionRecord.from_json(line)
    assert back == rec
    assert back.chosen_index == 0


def test_prompt_hash_is_sha256_hex():
    assert prompt_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("over", "field", "fragment"),
    [
        ({"request_id": ""}, "request_id", "non-empty"),
        ({"time": -1.0}, "time", "Unix seconds"),
        ({"prompt_hash": "abc"}, "prompt_hash", "sha256"),
        ({"propensity": 0.0}, "propensity", "(0, 1]"),
        ({"propensity": None}, "propensity", "(0, 1]"),
        ({"propensity": 1.5}, "propensity", "(0, 1]"),
        ({"chosen": None}, "propensity", "without a chosen"),
        ({"chosen": "other"}, "chosen", "not one of the candidates"),
        ({"epsilon": 2.0}, "epsilon", "[0, 1]"),
        ({"lam": -0.1}, "lam", ">= 0"),
        ({"status": 42}, "status", "HTTP status"),
        ({"status": True}, "status", "HTTP status"),
        ({"latency_s": float("nan")}, "latency_s", "seconds"),
        ({"input_tokens": -3}, "input_tokens", "whole number"),
        ({"cost_usd": -1.0}, "cost_usd", "dollars"),
        ({"arm": "treatment"}, "arm", "router, control, none"),
        ({"shadow": "yes"}, "shadow", "true or false"),
        ({"candidates": (Candidate("cheap", 0.5, 0.0), Candidate("cheap", 0.6, 0.0))}, "candidates", "twice"),
    ],
)
def test_bad_values_are_refused_naming_the_field(over, field, fragment):
    with pytest.raises(RecordError) as info:
        _record(**over)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert isinstance(info.value, SchemaError)  # the CLI prints it without a traceback


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"predicted_quality": 1.2, "predicted_cost": 0.0}, "predicted_quality"),
        ({"predicted_quality": 0.5, "predicted_cost": -1.0}, "predicted_cost"),
        ({"predicted_quality": 0.5, "predicted_cost": float("inf")}, "predicted_cost"),
    ],
)
def test_bad_candidates_are_refused(kwargs, fragment):
    with pytest.raises(RecordError, match=fragment):
        Candidate("m", **kwargs)


def test_from_dict_refuses_unknown_and_missing_fields():
    data = _record().to_dict()
    with pytest.raises(RecordError) as info:
        DecisionRecord.from_dict({**data, "authorization": "Bearer abc"})
    assert info.value.field == "authorization" and "unknown field" in str(info.value)
    partial = {k: v for k, v in data.items() if k != "status"}
    with pytest.raises(RecordError) as info:
        DecisionRecord.from_dict(partial)
    assert info.value.field == "status"
    with pytest.raises(RecordError) as info:
        DecisionRecord.from_dict({**data, "schema_version": 99})
    assert info.value.field == "schema_version"
    with pytest.raises(RecordError) as info:
        DecisionRecord.from_json("{not json")
    assert info.value.field == "<json>"


def test_non_finite_numbers_never_reach_the_log():
    with pytest.raises(RecordError, match="cost_usd"):
        _record(cost_usd=float("nan"))


def test_texts_are_capped_and_keys_redacted():
    key = "sk-" + "A1b2C3d4" * 4
    text, cut = cap_text(f"my key is {key} thanks", cap=1000)
    assert key not in text and "***" in text and not cut
    text, cut = cap_text("x" * 50, cap=10)
    assert text == "x" * 10 and cut
    assert cap_text(None) == (None, False)
    assert redact_secrets("Authorization: Bearer abcdefghijklmnop") == "Authorization: ***"
    with pytest.raises(ValueError, match="cap"):
        cap_text("x", cap=0)
    # A text that was not passed through cap_text and still holds a key is refused, never written.
    with pytest.raises(RecordError) as info:
        _record(prompt_text=f"here: {key}")
    assert info.value.field == "prompt_text"
    rec = _record(prompt_text=cap_text(f"here: {key}")[0])
    assert key not in rec.to_json()


def test_a_passthrough_record_needs_no_policy_fields():
    rec = _record(route="gpt-4o", chosen=None, candidates=(), propensity=None, lam=None, epsilon=0.0,
                  answered_by="gpt-4o", reason="passthrough", arm="none")
    assert DecisionRecord.from_json(rec.to_json()) == rec
    assert rec.chosen_index is None


# ---------------------------------------------------------------------------------------------- reader
def test_segment_names_sort_in_write_order():
    a = segment_name(T0, 2)
    b = segment_name(T0, 10)  # same second, later sequence
    c = segment_name(T0 + 1, 0)
    assert a == "decisions-20251202T043320Z-000002.jsonl"
    assert sorted([c, b, a]) == [a, b, c]
    with pytest.raises(ValueError):
        segment_name(T0, -1)


def test_reads_rotated_segments_in_order_and_skips_a_truncated_last_line(tmp_path):
    recs = [_record(i) for i in range(7)]
    _write(tmp_path / segment_name(T0 + 60, 1), recs[3:5])
    with gzip.open(tmp_path / (segment_name(T0, 0) + ".gz"), "wt", encoding="utf-8") as fh:
        fh.write("".join(r.to_json() + "\n" for r in recs[:3]))
    # The live segment, cut mid-line by a crash: the half line is skipped and counted.
    half = recs[6].to_json()[:40]
    _write(tmp_path / segment_name(T0 + 120, 2), recs[5:6], tail=half)
    (tmp_path / "README.txt").write_text("not a segment")
    result = read_log(tmp_path)
    assert [r.request_id for r in result.records] == [f"req-{i}" for i in range(6)]
    assert result.errors == {"truncated": 1}
    assert result.segments == 3 and result.lines == 7
    assert "truncated 1" in result.summary() and "6 records from 3 segment(s)" in result.summary()
    assert result.examples[0].startswith(segment_name(T0 + 120, 2) + ":2:")


def test_bad_lines_are_counted_by_kind_and_never_fail(tmp_path):
    good = [_record(i) for i in range(3)]
    bad_record = _record(9).to_dict()
    bad_record["propensity"] = 0.0
    lines = [
        good[0].to_json(),
        "{oops",
        json.dumps(bad_record),
        json.dumps({**good[1].to_dict(), "schema_version": 7}),
        "",
        "[1, 2]",
        good[2].to_json(),
        "\xff",
    ]
    (tmp_path / segment_name(T0, 0)).write_text("\n".join(lines) + "\n", encoding="latin-1")
    result = read_log(tmp_path)
    assert [r.request_id for r in result.records] == ["req-0", "req-2"]
    assert result.errors == {
        "bad_json": 2,  # "{oops" and a byte that is not UTF-8
        "bad_record:propensity": 1,
        "unknown_schema": 1,
        "bad_record:<record>": 1,  # a JSON array, not an object
    }
    assert result.n_skipped == 5
    assert any(e.startswith(f"{segment_name(T0, 0)}:3: ") and "propensity" in e for e in result.examples)


def test_an_empty_or_missing_log(tmp_path):
    result = read_log(tmp_path)
    assert result.records == [] and result.segments == 0 and "nothing skipped" in result.summary()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_log(tmp_path / "nope")


def test_an_unreadable_segment_is_counted_not_fatal(tmp_path):
    _write(tmp_path / segment_name(T0 + 1, 0), [_record(1)])
    (tmp_path / (segment_name(T0, 0) + ".gz")).write_bytes(gzip.compress(b"x" * 100)[:20])  # gzip cut short
    result = read_log(tmp_path)
    assert [r.request_id for r in result.records] == ["req-1"]
    assert result.errors == {"unreadable_segment": 1}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads unreadable files")
def test_a_segment_without_read_permission_is_counted(tmp_path):
    path = tmp_path / segment_name(T0, 0)
    _write(path, [_record(0)])
    path.chmod(0)
    try:
        result = read_log(tmp_path)
    finally:
        path.chmod(0o644)
    assert result.errors == {"unreadable_segment": 1} and list_segments(tmp_path) == [path]
