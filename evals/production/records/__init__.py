"""The decision-log record: one JSON line per request the proxy answered (or failed to answer).

What a record holds (issue 15, item 1): the request id and time, the route name and category header, a hash of the
prompt, the model the router chose with every candidate's predicted quality and cost, **the propensity of the
chosen model under the serving policy** (what makes off-policy estimates possible, :mod:`evals.production.offpolicy`),
the model that answered after fallback and why, the HTTP status, latency, usage and cost, the rollout arm and the
shadow flag. Prompt and answer texts only when the operator opts in (``[log] store_text = true``), each cut to a
per-field cap (:func:`cap_text`) and with anything key-shaped redacted (:func:`redact_secrets`).

Keys never appear, by construction: the record has no field that could hold a header, and :meth:`DecisionRecord.
from_dict` refuses unknown fields, so a writer cannot smuggle one in. Texts are redacted on the way in.

A record is a frozen dataclass, validated on construction (a :class:`RecordError` names the field and what would be
valid), written as one compact JSON object per line with ``schema_version``::

    rec = DecisionRecord(request_id="r1", time=1764650000.0, route="router", prompt_hash=prompt_hash("hi"), ...)
    line = rec.to_json()                      # one line, no newline
    same = DecisionRecord.from_json(line)     # validated again

Two more record kinds share the log's segments (each line says which it is in ``kind``; a line without ``kind`` is a
decision, as every line was before they existed):

- :class:`ShadowPair` (``kind = "shadow"``): a sampled request's answer beside the reference model's answer to the
  same prompt, asked after the client had its answer (issue 15, item 4). Texts capped and redacted like a
  decision's; written by the proxy's shadow sampler.
- :class:`GradeRecord` (``kind = "grade"``): a verdict on one shadow pair, the answer against the reference
  (``win``/``tie``/``loss``), from a judge or exact match, written online by the proxy or offline by
  ``routelab logs grade``.
- :class:`TelemetryRecord` (``kind = "telemetry"``): one upstream's live latency and error-rate estimates (the
  proxy's moving averages, issue 15 item 7) at a moment, written periodically and at shutdown.
- :class:`FeedbackRecord` (``kind = "feedback"``): one score a client posted to ``/v1/feedback``, with the
  ``x-routelab-request-id`` of the answer it scores when the client sent it.

:func:`record_from_dict` / :func:`record_from_json` read any of them.

One module per kind (``decision``, ``shadow`` for pairs and their grades, ``telemetry``, ``feedback``) and
``common`` for what they share; import the names from this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evals.production.records.common import (
    ARMS,
    DEFAULT_TEXT_CAP,
    KINDS,
    MAX_REQUEST_ID_CHARS,
    SCHEMA_VERSION,
    VERDICTS,
    RecordError,
    _json_object,
    cap_text,
    prompt_hash,
    redact_secrets,
    valid_request_id,
)
from evals.production.records.decision import Candidate, DecisionRecord
from evals.production.records.feedback import FeedbackRecord
from evals.production.records.shadow import GradeRecord, ShadowPair, verdict_of
from evals.production.records.telemetry import TelemetryRecord

__all__ = [
    "ARMS",
    "Candidate",
    "DEFAULT_TEXT_CAP",
    "DecisionRecord",
    "FeedbackRecord",
    "GradeRecord",
    "KINDS",
    "LogRecord",
    "MAX_REQUEST_ID_CHARS",
    "RecordError",
    "SCHEMA_VERSION",
    "ShadowPair",
    "TelemetryRecord",
    "VERDICTS",
    "cap_text",
    "prompt_hash",
    "record_from_dict",
    "record_from_json",
    "redact_secrets",
    "valid_request_id",
    "verdict_of",
]

#: Any record a log line may hold.
LogRecord = DecisionRecord | ShadowPair | GradeRecord | TelemetryRecord | FeedbackRecord
_BY_KIND: dict[str, Any] = {
    "decision": DecisionRecord, "shadow": ShadowPair, "grade": GradeRecord, "telemetry": TelemetryRecord,
    "feedback": FeedbackRecord,
}


def record_from_dict(data: Mapping[str, Any]) -> LogRecord:
    """The record a log line's object holds, by its ``kind`` (absent = ``decision``).

    Raises:
        RecordError: for an unknown kind (field ``kind``) or an invalid record.
    """
    if not isinstance(data, Mapping):
        raise RecordError("<record>", f"must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind", "decision")
    if kind not in _BY_KIND:
        raise RecordError("kind", f"unknown record kind {kind!r} (known: {', '.join(KINDS)})", str(kind))
    return _BY_KIND[kind].from_dict(data)


def record_from_json(line: str) -> LogRecord:
    """Parse one log line into its record (see :func:`record_from_dict`)."""
    return record_from_dict(_json_object(line, "<line>"))
