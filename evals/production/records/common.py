"""What every decision-log record kind shares: the schema version and kind names, the error type, prompt hashing,
text capping and key redaction, request-id checks, and the validation and JSON helpers of the record classes."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar

from evals.exceptions import SchemaError

#: The version of the record layout; bumped on any change a reader must know about.
SCHEMA_VERSION = 1
#: Rollout arms (item 2): the router's arm, the control model's arm, or no rollout configured.
ARMS = ("router", "control", "none")
#: The record kinds a log line may hold (its ``kind`` field; absent means ``decision``).
KINDS = ("decision", "shadow", "grade", "telemetry", "feedback")
#: A grade's verdict on the answer against the reference answer.
VERDICTS = ("win", "tie", "loss")
#: Default per-field cap on stored texts, in characters (a text longer than this is cut and flagged).
DEFAULT_TEXT_CAP = 4000

# Key-shaped substrings: OpenAI/Anthropic-style secret keys and bearer tokens. Upstream and client keys are also
# scrubbed by the proxy before anything reaches a record; this is the second line of defence for texts.
_SECRET = re.compile(
    r"(?:\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{16,}|\bsk-ant-[A-Za-z0-9_\-]{16,}|\bBearer\s+[A-Za-z0-9._\-]{12,}"
    r"|\bAIza[0-9A-Za-z_\-]{30,})"
)
_HASH = re.compile(r"^[0-9a-f]{64}$")
#: The longest request id a feedback may name (the proxy's own are 32 hex digits).
MAX_REQUEST_ID_CHARS = 128
# A request id as a client may echo it: printable ASCII without spaces (no control characters in the log).
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,%d}$" % MAX_REQUEST_ID_CHARS)


class RecordError(SchemaError):
    """A log record that does not match the schema; ``field`` names the offending field, ``kind`` the record kind."""

    def __init__(self, field_name: str, message: str, kind: str = "decision") -> None:
        super().__init__(f"{kind} record field {field_name!r}: {message}")
        self.field = field_name
        self.kind = kind


def prompt_hash(prompt: str) -> str:
    """The sha256 hex digest of a prompt's UTF-8 text: how a record names its prompt without storing it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def redact_secrets(text: str) -> str:
    """``text`` with every key-shaped substring (``sk-...``, ``Bearer ...``, Google ``AIza...``) replaced by ``***``."""
    return _SECRET.sub("***", text)


def cap_text(text: str | None, cap: int = DEFAULT_TEXT_CAP) -> tuple[str | None, bool]:
    """``(text redacted and cut to at most cap characters, whether it was cut)``; ``(None, False)`` for None.

    Raises:
        ValueError: for a cap below 1.
    """
    if cap < 1:
        raise ValueError(f"text cap must be >= 1 character, got {cap}")
    if text is None:
        return None, False
    clean = redact_secrets(str(text))
    return (clean[:cap], True) if len(clean) > cap else (clean, False)


def valid_request_id(value: object) -> bool:
    """Whether ``value`` can be a request id a client echoes (printable ASCII without spaces, 1 to
    :data:`MAX_REQUEST_ID_CHARS` characters)."""
    return isinstance(value, str) and _REQUEST_ID.match(value) is not None


def _number(x: Any) -> float | None:
    """``x`` as a finite float, or None for anything else (bools and strings included)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


class _FlatRecord:
    """JSON lines for a record of flat fields with a ``kind`` (shadow pairs and grades share this)."""

    KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``schema_version`` and ``kind`` first)."""
        return _ordered(asdict(self))  # type: ignore[call-overload]

    def to_json(self) -> str:
        """One compact JSON line (no trailing newline; NaN and infinities refused)."""
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build and validate a record from :meth:`to_dict`'s form (raises :class:`RecordError` naming the field)."""
        return _build(cls, _checked_fields(cls, data, cls.KIND), cls.KIND)

    @classmethod
    def from_json(cls, line: str) -> Any:
        """Parse and validate one JSON line (raises :class:`RecordError`)."""
        return cls.from_dict(_json_object(line, cls.KIND))


# ---------------------------------------------------------------------- shared helpers
def _json_object(line: str, kind: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise RecordError("<json>", f"not valid JSON ({exc})", kind) from None


def _checked_fields(cls: type, data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``data`` as constructor kwargs, refusing unknown fields and a missing or foreign schema version."""
    if not isinstance(data, Mapping):
        raise RecordError("<record>", f"must be a JSON object, got {type(data).__name__}", kind)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:  # never carry a field the schema does not know (that is how a header or key would leak)
        raise RecordError(unknown[0], f"unknown field (schema version {SCHEMA_VERSION} knows {sorted(known)})", kind)
    if "schema_version" not in data:
        raise RecordError("schema_version", "missing", kind)
    if data["schema_version"] != SCHEMA_VERSION:
        raise RecordError("schema_version", f"this reader knows version {SCHEMA_VERSION}, got "
                                            f"{data['schema_version']!r}", kind)
    return dict(data)


def _build(cls: Any, kwargs: dict[str, Any], kind: str) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field missing
        missing = re.search(r"argument[s]?: '([^']+)'", str(exc))
        raise RecordError(missing.group(1) if missing else "<record>", str(exc), kind) from None


def _check_common(rec: Any, kind: str) -> None:
    """schema_version, kind, request_id and time: what the per-request record kinds check the same way."""
    _check_version_and_kind(rec, kind)
    _check_name(rec, "request_id", kind)
    _check_time(rec, kind)


def _check_version_and_kind(rec: Any, kind: str) -> None:
    if rec.schema_version != SCHEMA_VERSION:
        raise RecordError("schema_version", f"this reader knows version {SCHEMA_VERSION}, got "
                                            f"{rec.schema_version!r}", kind)
    if rec.kind != kind:
        raise RecordError("kind", f"a {kind} record's kind is {kind!r}, got {rec.kind!r}", kind)


def _check_time(rec: Any, kind: str) -> None:
    if (t := _number(rec.time)) is None or t < 0:
        raise RecordError("time", f"must be Unix seconds (a number >= 0), got {rec.time!r}", kind)


def _check_name(rec: Any, name: str, kind: str) -> None:
    value = getattr(rec, name)
    if not isinstance(value, str) or not value:
        raise RecordError(name, f"must be a non-empty string, got {value!r}", kind)


def _check_text(rec: Any, name: str, kind: str) -> None:
    value = getattr(rec, name)
    if value is None:
        return
    if not isinstance(value, str):
        raise RecordError(name, f"must be a string or null, got {type(value).__name__}", kind)
    if _SECRET.search(value):  # texts are redacted by cap_text before they get here; a key never stays
        raise RecordError(name, "contains a key-shaped string; pass texts through cap_text()", kind)


def _ordered(d: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": d.pop("schema_version"), "kind": d.pop("kind"), **d}


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
