"""Telemetry snapshots (``kind: telemetry``): one upstream's live latency and error-rate estimates at a moment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from evals.production.records.common import (
    SCHEMA_VERSION,
    RecordError,
    _check_name,
    _check_time,
    _check_version_and_kind,
    _FlatRecord,
    _number,
)


@dataclass(frozen=True)
class TelemetryRecord(_FlatRecord):
    """One upstream's live estimates at a moment (``kind: telemetry``): the proxy's moving averages
    (:mod:`routers.export.proxy.telemetry`) of its latency and error rate, with the attempts behind them.

    Written by the proxy through the decision log every ``[log] telemetry_every_s`` seconds for each upstream with
    new attempts since its last snapshot, and once more at shutdown. ``attempts`` and ``answers`` count from the
    start of the writing proxy process (each worker of ``routelab serve --workers N`` keeps its own).
    """

    KIND: ClassVar[str] = "telemetry"

    upstream: str
    """The upstream's model name (as in the export's ``upstreams.toml``)."""
    time: float
    """When the snapshot was taken, Unix seconds (UTC)."""
    latency_s: float | None = None
    """Moving average of the seconds its answered attempts took (None before its first answer)."""
    error_rate: float | None = None
    """Moving average of its failed attempts (1) against answers (0), in [0, 1] (None before its first attempt)."""
    attempts: int = 0
    """Attempts observed so far."""
    answers: int = 0
    """Attempts that answered so far (<= ``attempts``)."""
    final: bool = False
    """True for the snapshot written when the proxy stopped."""
    kind: str = "telemetry"
    """The record kind (always ``telemetry``)."""
    schema_version: int = field(default=SCHEMA_VERSION)
    """The layout version (:data:`SCHEMA_VERSION`)."""

    def __post_init__(self) -> None:
        k = "telemetry"
        _check_version_and_kind(self, k)
        _check_name(self, "upstream", k)
        _check_time(self, k)
        if self.latency_s is not None and ((v := _number(self.latency_s)) is None or v < 0):
            raise RecordError("latency_s", f"must be seconds >= 0 or null, got {self.latency_s!r}", k)
        if self.error_rate is not None and ((v := _number(self.error_rate)) is None or not 0.0 <= v <= 1.0):
            raise RecordError("error_rate", f"must be in [0, 1] or null, got {self.error_rate!r}", k)
        for name in ("attempts", "answers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RecordError(name, f"must be a whole number >= 0, got {value!r}", k)
        if self.answers > self.attempts:
            raise RecordError("answers", f"{self.answers} answers out of {self.attempts} attempts", k)
        if self.attempts and self.error_rate is None:
            raise RecordError("error_rate", f"is null after {self.attempts} attempts", k)
        if self.answers and self.latency_s is None:
            raise RecordError("latency_s", f"is null after {self.answers} answers", k)
        if not isinstance(self.final, bool):
            raise RecordError("final", f"must be true or false, got {self.final!r}", k)
