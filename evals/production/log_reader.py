"""Read a decision-log directory: append-only JSON Lines segments, rotated, possibly cut short by a crash.

The writer (the proxy, ``routelab serve``) appends one :class:`~evals.production.records.DecisionRecord` per line
to the current segment and starts a new one by size and time; shadow pairs and online grades
(:class:`~evals.production.records.ShadowPair`, :class:`~evals.production.records.GradeRecord`), upstream
telemetry snapshots (:class:`~evals.production.records.TelemetryRecord`) and client feedback
(:class:`~evals.production.records.FeedbackRecord`) go in the same segments, each line saying its ``kind``.
Segments are named by :func:`segment_name` (``decisions-<UTC start>-<sequence>.jsonl``, optionally gzipped once
closed), so sorting the names gives the order they were written in. ``routelab logs grade`` adds its grades as
whole ``grades-<UTC start>-<sequence>.jsonl`` segments (:func:`write_segment`), so it never appends to a file the
proxy is writing.

Reading never fails on the log's content: a process killed mid-write leaves a last line without its newline, which
is skipped and counted as ``truncated``; a line that is not JSON, or JSON that is not a valid record, is skipped
and counted by kind (``bad_json``, ``bad_record:<field>``, ``unknown_schema``), with the first few examples kept
(file and line) so an operator can look. Only a missing directory is an error.

Example:
    >>> result = read_log("logs/")                         # doctest: +SKIP
    >>> len(result.records), result.errors                 # doctest: +SKIP
    (19996, {'truncated': 1, 'bad_record:propensity': 3})
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from evals.exceptions import DataNotFoundError
from evals.production.records import (
    SCHEMA_VERSION,
    DecisionRecord,
    FeedbackRecord,
    GradeRecord,
    LogRecord,
    RecordError,
    ShadowPair,
    TelemetryRecord,
    record_from_dict,
)

__all__ = ["LogReadResult", "SEGMENT_PATTERN", "list_segments", "read_log", "segment_name", "write_segment"]

#: What a segment's file name looks like: ``decisions-20261202T040000Z-000001.jsonl`` (``.gz`` once closed), or
#: ``grades-...`` for the segments ``routelab logs grade`` writes.
SEGMENT_PATTERN = re.compile(r"^(decisions|grades)-(\d{8}T\d{6}Z)-(\d{6,})\.jsonl(\.gz)?$")
#: The segment name prefixes (who wrote the segment: the proxy, or an offline grading run).
SEGMENT_PREFIXES = ("decisions", "grades")
#: How many example problems (file:line and message) a read keeps.
MAX_EXAMPLES = 20


def segment_name(start_time: float, sequence: int, prefix: str = "decisions") -> str:
    """The file name of a segment started at ``start_time`` (Unix seconds) with a writer's ``sequence`` number.

    The sequence breaks ties between segments started in the same second (rotation by size under heavy load).
    ``prefix`` is ``decisions`` (the proxy) or ``grades`` (``routelab logs grade``).
    """
    if sequence < 0:
        raise ValueError(f"segment sequence must be >= 0, got {sequence}")
    if prefix not in SEGMENT_PREFIXES:
        raise ValueError(f"segment prefix must be one of {SEGMENT_PREFIXES}, got {prefix!r}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start_time))
    return f"{prefix}-{stamp}-{sequence:06d}.jsonl"


def list_segments(log_dir: str | os.PathLike[str]) -> list[Path]:
    """The segment files of a log directory in write order (other files are ignored).

    Raises:
        DataNotFoundError: when ``log_dir`` is not a directory.
    """
    root = Path(log_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"decision log directory {str(root)!r} does not exist (or is not a directory)")

    def order(p: Path) -> tuple[str, int, str]:
        m = SEGMENT_PATTERN.match(p.name)
        assert m is not None
        return (m.group(2), int(m.group(3)), p.name)

    return sorted((p for p in root.iterdir() if p.is_file() and SEGMENT_PATTERN.match(p.name)), key=order)


@dataclass
class LogReadResult:
    """What :func:`read_log` found: the valid records of each kind and a count of everything skipped, by kind."""

    records: list[DecisionRecord] = field(default_factory=list)
    """Valid decision records, in write order."""
    shadow_pairs: list[ShadowPair] = field(default_factory=list)
    """Valid shadow pairs, in write order."""
    grades: list[GradeRecord] = field(default_factory=list)
    """Valid grade records, in write order."""
    telemetry: list[TelemetryRecord] = field(default_factory=list)
    """Valid upstream telemetry snapshots, in write order."""
    feedback: list[FeedbackRecord] = field(default_factory=list)
    """Valid feedback records, in write order."""
    errors: Counter[str] = field(default_factory=Counter)
    """Skipped lines per kind: ``truncated``, ``bad_json``, ``unknown_schema``, ``unknown_kind``,
    ``bad_record:<field>`` (a decision), ``bad_shadow:<field>``, ``bad_grade:<field>``, ``bad_telemetry:<field>``,
    ``bad_feedback:<field>``, ``unreadable_segment``."""
    examples: list[str] = field(default_factory=list)
    """Up to :data:`MAX_EXAMPLES` skipped lines as ``file:line: message``."""
    segments: int = 0
    """Number of segments read."""
    lines: int = 0
    """Number of non-empty lines seen (valid or not)."""

    @property
    def n_skipped(self) -> int:
        """Number of lines (or segments) skipped."""
        return sum(self.errors.values())

    def summary(self) -> str:
        """One line: ``12,345 records from 3 segment(s), 40 shadow pairs, 40 grades; skipped 2 (truncated 1, ...)``
        (telemetry snapshots and feedback are named when there are any)."""
        head = f"{len(self.records):,} records from {self.segments} segment(s)"
        if self.shadow_pairs or self.grades:
            head += f", {len(self.shadow_pairs):,} shadow pairs, {len(self.grades):,} grades"
        if self.telemetry:
            head += f", {len(self.telemetry):,} telemetry snapshots"
        if self.feedback:
            head += f", {len(self.feedback):,} feedback"
        if not self.errors:
            return head + "; nothing skipped"
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.errors.items()))
        return f"{head}; skipped {self.n_skipped:,} ({kinds})"

    def _skip(self, kind: str, where: str, message: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {message}")


def read_log(log_dir: str | os.PathLike[str]) -> LogReadResult:
    """Read every segment of a decision-log directory (see the module docstring); never fails on content.

    Raises:
        DataNotFoundError: when ``log_dir`` is not a directory.
    """
    result = LogReadResult()
    for path in list_segments(log_dir):
        try:
            data = _read_bytes(path)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:  # a gzip cut short, a permission problem
            result._skip("unreadable_segment", path.name, f"{type(exc).__name__}: {exc}")
            continue
        result.segments += 1
        _parse_segment(path.name, data, result)
    return result


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def _parse_segment(name: str, data: bytes, result: LogReadResult) -> None:
    lines = data.split(b"\n")
    # A segment written completely ends with a newline, so the split ends with b"". Anything after the last
    # newline is a line the writer never finished (a crash, or the writer still appending): skip it.
    tail = lines.pop()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        result.lines += 1
        _parse_line(f"{name}:{number}", raw, result)
    if tail.strip():
        result.lines += 1
        result._skip("truncated", f"{name}:{len(lines) + 1}", "last line has no newline (writer cut short)")


def _parse_line(where: str, raw: bytes, result: LogReadResult) -> None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        result._skip("bad_json", where, f"not JSON ({exc})")
        return
    if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
        result._skip("unknown_schema", where, f"schema_version {data.get('schema_version')!r}; this reader knows "
                                              f"{SCHEMA_VERSION}")
        return
    if isinstance(data, dict) and data.get("kind", "decision") not in _LISTS:
        result._skip("unknown_kind", where, f"record kind {data.get('kind')!r}; this reader knows {sorted(_LISTS)}")
        return
    try:
        record = record_from_dict(data)
    except RecordError as exc:
        prefix = {"shadow": "bad_shadow", "grade": "bad_grade", "telemetry": "bad_telemetry",
                  "feedback": "bad_feedback"}.get(exc.kind, "bad_record")
        result._skip(f"{prefix}:{exc.field}", where, str(exc))
        return
    getattr(result, _LISTS[record.kind]).append(record)


#: Record kind -> the LogReadResult list it goes to.
_LISTS = {"decision": "records", "shadow": "shadow_pairs", "grade": "grades", "telemetry": "telemetry",
          "feedback": "feedback"}


def write_segment(log_dir: str | os.PathLike[str], records: list[LogRecord], prefix: str = "grades",
                  now: float | None = None) -> Path | None:
    """Write ``records`` as one new complete segment in ``log_dir``; the path, or None when there is nothing to write.

    The segment appears whole or not at all (written to a hidden temporary file, then renamed), and its name never
    collides with an existing segment (the sequence number is one past the highest of that second's segments).

    Raises:
        DataNotFoundError: when ``log_dir`` is not a directory.
        OSError: when the directory is not writable.
    """
    root = Path(log_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"decision log directory {str(root)!r} does not exist (or is not a directory)")
    if not records:
        return None
    start = time.time() if now is None else now
    sequence = 0
    while True:
        name = segment_name(start, sequence, prefix)
        if not (root / name).exists() and not (root / f"{name}.gz").exists():
            break
        sequence += 1
    tmp = root / f".{name}.tmp"
    tmp.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, root / name)  # atomic: a reader sees the whole segment or none of it
    return root / name
