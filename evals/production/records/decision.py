"""The decision record (``kind: decision``): one per request the proxy answered or failed to answer, with the
router's candidates and the propensity of its choice (see the package docstring)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from evals.production.records.common import (
    _HASH,
    ARMS,
    SCHEMA_VERSION,
    RecordError,
    _build,
    _check_text,
    _checked_fields,
    _json_object,
    _number,
)


@dataclass(frozen=True)
class Candidate:
    """One model the router weighed for a request, with what it predicted for it."""

    model: str
    """The model's name (as in the export)."""
    predicted_quality: float
    """The router's predicted quality in [0, 1]."""
    predicted_cost: float
    """The router's predicted cost in dollars (>= 0)."""
    eligible: bool = True
    """False when the model could not be chosen for this request (e.g. its upstream's circuit was open)."""

    def __post_init__(self) -> None:
        q, c = self.predicted_quality, self.predicted_cost
        # The common case in one expression (the proxy's writer builds a record per request, with a candidate per
        # model): plain floats in range and a real name pass without the checks below, which name what is wrong.
        if type(q) is float and type(c) is float and 0.0 <= q <= 1.0 and 0.0 <= c < math.inf \
                and type(self.eligible) is bool and type(self.model) is str and self.model:  # fmt: skip
            return
        if not isinstance(self.model, str) or not self.model:
            raise RecordError("candidates", f"a candidate needs a non-empty model name, got {self.model!r}")
        q, c = _number(self.predicted_quality), _number(self.predicted_cost)
        if q is None or not 0.0 <= q <= 1.0:
            raise RecordError("candidates", f"{self.model}: predicted_quality must be in [0, 1], got "
                                            f"{self.predicted_quality!r}")
        if c is None or c < 0:
            raise RecordError("candidates", f"{self.model}: predicted_cost must be a number >= 0, got "
                                            f"{self.predicted_cost!r}")
        if not isinstance(self.eligible, bool):
            raise RecordError("candidates", f"{self.model}: eligible must be true or false, got {self.eligible!r}")


@dataclass(frozen=True)
class DecisionRecord:
    """One request as the proxy saw and served it (see the module docstring)."""

    request_id: str
    """The proxy's id of the request (unique within a log)."""
    time: float
    """When the request arrived, Unix seconds (UTC)."""
    route: str
    """The model name the client asked for: a route name (routed) or a model (passthrough)."""
    prompt_hash: str
    """:func:`prompt_hash` of the routed prompt (64 lowercase hex digits)."""
    status: int
    """The HTTP status the client got."""
    latency_s: float
    """Seconds from arrival to the answer's headers (>= 0)."""
    category: str | None = None
    """The ``x-routelab-category`` header, when sent."""
    chosen: str | None = None
    """The model the serving policy chose (None when nothing was routed: passthrough, or refused before routing)."""
    candidates: tuple[Candidate, ...] = ()
    """Every model the router weighed, in the export's model order, with its predictions."""
    propensity: float | None = None
    """Probability that the serving policy chooses ``chosen`` for this request (in (0, 1]; required with it)."""
    lam: float | None = None
    """The operating point the policy decided at (dollars per +1.0 of quality)."""
    epsilon: float = 0.0
    """The exploration rate: the share of requests sent to a uniformly random eligible model."""
    explored: bool = False
    """Whether this request was one of the explored ones (chosen at random, not by the router)."""
    answered_by: str | None = None
    """The model that answered (after fallback); None when none did."""
    reason: str = ""
    """Why ``answered_by`` answered: ``routed``, ``fallback from <model>``, ``passthrough``, ``failed``, ..."""
    input_tokens: int | None = None
    """Prompt tokens reported by the upstream's usage."""
    output_tokens: int | None = None
    """Completion tokens reported by the upstream's usage."""
    cost_usd: float | None = None
    """The answer's cost in dollars (usage x price table), when known."""
    arm: str = "none"
    """Rollout arm: ``router``, ``control`` or ``none`` (no rollout configured)."""
    shadow: bool = False
    """Whether the request was sampled for shadow grading."""
    prompt_text: str | None = None
    """The prompt (only with ``store_text``; capped and redacted)."""
    answer_text: str | None = None
    """The answer (only with ``store_text``; capped and redacted)."""
    text_truncated: bool = False
    """Whether a stored text was cut to the cap."""
    kind: str = "decision"
    """The record kind (always ``decision``; lines written before kinds existed have none and read as this)."""
    schema_version: int = field(default=SCHEMA_VERSION)
    """The layout version this record was written with (:data:`SCHEMA_VERSION`)."""

    def __post_init__(self) -> None:
        if self.kind != "decision":
            raise RecordError("kind", f"a decision record's kind is 'decision', got {self.kind!r}")
        self._check_identity()
        self._check_policy()
        self._check_outcome()

    # ------------------------------------------------------------------ validation
    def _check_identity(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise RecordError("schema_version", f"this reader knows version {SCHEMA_VERSION}, got "
                                                f"{self.schema_version!r}")
        for name in ("request_id", "route"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise RecordError(name, f"must be a non-empty string, got {value!r}")
        t = _number(self.time)
        if t is None or t < 0:
            raise RecordError("time", f"must be Unix seconds (a number >= 0), got {self.time!r}")
        if not isinstance(self.prompt_hash, str) or not _HASH.match(self.prompt_hash):
            raise RecordError("prompt_hash", f"must be a sha256 hex digest (64 lowercase hex digits), got "
                                             f"{self.prompt_hash!r}")
        if self.category is not None and not isinstance(self.category, str):
            raise RecordError("category", f"must be a string or null, got {self.category!r}")

    def _check_policy(self) -> None:
        if not isinstance(self.candidates, tuple) or not all(isinstance(c, Candidate) for c in self.candidates):
            raise RecordError("candidates", "must be a tuple of Candidate")
        names = [c.model for c in self.candidates]
        if len(set(names)) != len(names):
            raise RecordError("candidates", f"a model appears twice: {names}")
        eps = _number(self.epsilon)
        if eps is None or not 0.0 <= eps <= 1.0:
            raise RecordError("epsilon", f"must be in [0, 1], got {self.epsilon!r}")
        if self.lam is not None and ((lam := _number(self.lam)) is None or lam < 0):
            raise RecordError("lam", f"must be a number >= 0 or null, got {self.lam!r}")
        if not isinstance(self.explored, bool):
            raise RecordError("explored", f"must be true or false, got {self.explored!r}")
        if self.chosen is None:
            if self.propensity is not None:
                raise RecordError("propensity", "given without a chosen model")
            return
        if not isinstance(self.chosen, str) or not self.chosen:
            raise RecordError("chosen", f"must be a model name or null, got {self.chosen!r}")
        if names and self.chosen not in names:
            raise RecordError("chosen", f"{self.chosen!r} is not one of the candidates {names}")
        p = _number(self.propensity)
        if p is None or not 0.0 < p <= 1.0:
            raise RecordError("propensity", f"a routed record needs the chosen model's propensity in (0, 1], "
                                            f"got {self.propensity!r}")

    def _check_outcome(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise RecordError("status", f"must be an HTTP status (100..599), got {self.status!r}")
        lat = _number(self.latency_s)
        if lat is None or lat < 0:
            raise RecordError("latency_s", f"must be seconds >= 0, got {self.latency_s!r}")
        for name in ("answered_by",):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise RecordError(name, f"must be a model name or null, got {value!r}")
        if not isinstance(self.reason, str):
            raise RecordError("reason", f"must be a string, got {self.reason!r}")
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise RecordError(name, f"must be a whole number >= 0 or null, got {value!r}")
        if self.cost_usd is not None and ((c := _number(self.cost_usd)) is None or c < 0):
            raise RecordError("cost_usd", f"must be dollars >= 0 or null, got {self.cost_usd!r}")
        if self.arm not in ARMS:
            raise RecordError("arm", f"must be one of {', '.join(ARMS)}, got {self.arm!r}")
        for name in ("shadow", "text_truncated"):
            if not isinstance(getattr(self, name), bool):
                raise RecordError(name, f"must be true or false, got {getattr(self, name)!r}")
        for name in ("prompt_text", "answer_text"):
            _check_text(self, name, "decision")

    # ------------------------------------------------------------------ derived
    @property
    def chosen_index(self) -> int | None:
        """Index of ``chosen`` among the candidates (None when not routed or candidates not logged)."""
        names = [c.model for c in self.candidates]
        return names.index(self.chosen) if self.chosen is not None and self.chosen in names else None

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (candidates as a list of dicts; ``schema_version`` first)."""
        d = asdict(self)
        d["candidates"] = [asdict(c) for c in self.candidates]
        return {"schema_version": d.pop("schema_version"), "kind": d.pop("kind"), **d}

    def to_json(self) -> str:
        """One compact JSON line (no trailing newline; NaN and infinities refused)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRecord:
        """Build and validate a record from :meth:`to_dict`'s form.

        Raises:
            RecordError: for a missing or unknown field, or a value the schema refuses (names the field).
        """
        kwargs = _checked_fields(cls, data, "decision")
        raw = kwargs.get("candidates", [])
        if not isinstance(raw, list) or not all(isinstance(c, Mapping) for c in raw):
            raise RecordError("candidates", "must be a list of objects")
        try:
            kwargs["candidates"] = tuple(Candidate(**c) for c in raw)
        except TypeError as exc:  # a candidate with a wrong or missing key
            raise RecordError("candidates", str(exc)) from None
        return _build(cls, kwargs, "decision")

    @classmethod
    def from_json(cls, line: str) -> DecisionRecord:
        """Parse and validate one JSON line.

        Raises:
            RecordError: for a line that is not JSON (field ``<json>``) or not a valid record.
        """
        return cls.from_dict(_json_object(line, "decision"))
