"""Feedback records (``kind: feedback``): one score a client posted to ``/v1/feedback``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from evals.production.records.common import (
    MAX_REQUEST_ID_CHARS,
    SCHEMA_VERSION,
    RecordError,
    _check_name,
    _check_time,
    _check_version_and_kind,
    _FlatRecord,
    _number,
    valid_request_id,
)


@dataclass(frozen=True)
class FeedbackRecord(_FlatRecord):
    """One score a client posted to ``POST /v1/feedback`` (``kind: feedback``).

    ``request_id`` is the ``x-routelab-request-id`` header of the answer the score is about, when the client sent
    it: it joins the feedback to its :class:`DecisionRecord` (``routelab logs to-outcomes`` turns feedback on a
    request whose prompt was stored into an outcome of the model that answered). Without it the feedback still
    counts for an adaptive export, and is logged, but names no request.
    """

    KIND: ClassVar[str] = "feedback"

    time: float
    """When the feedback was accepted, Unix seconds (UTC)."""
    model: str
    """The model the score is for (the ``x-routelab-model`` that answered)."""
    score: float
    """The answer's score in [0, 1] (1 = success, 0 = failure)."""
    request_id: str | None = None
    """The scored answer's ``x-routelab-request-id`` (printable ASCII, at most :data:`MAX_REQUEST_ID_CHARS`
    characters), or None when the client did not send one."""
    category: str | None = None
    """The category the feedback was posted with (None: the unknown category)."""
    kind: str = "feedback"
    """The record kind (always ``feedback``)."""
    schema_version: int = field(default=SCHEMA_VERSION)
    """The layout version (:data:`SCHEMA_VERSION`)."""

    def __post_init__(self) -> None:
        k = "feedback"
        _check_version_and_kind(self, k)
        _check_time(self, k)
        _check_name(self, "model", k)
        if (v := _number(self.score)) is None or not 0.0 <= v <= 1.0:
            raise RecordError("score", f"must be in [0, 1], got {self.score!r}", k)
        if self.request_id is not None and not valid_request_id(self.request_id):
            raise RecordError("request_id", f"must be printable ASCII without spaces, 1 to {MAX_REQUEST_ID_CHARS} "
                                            f"characters, or null; got {str(self.request_id)[:40]!r}", k)
        if self.category is not None and not isinstance(self.category, str):
            raise RecordError("category", f"must be a string or null, got {self.category!r}", k)
