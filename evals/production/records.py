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
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from evals.exceptions import SchemaError

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


@dataclass(frozen=True)
class ShadowPair(_FlatRecord):
    """A shadow-sampled request's answer beside the reference model's answer to the same prompt (``kind: shadow``).

    The proxy writes one after the client had its answer and the reference model answered (or failed: then
    ``reference_status`` is not 200 and ``reference_text`` is None). ``request_id`` joins it to its
    :class:`DecisionRecord`. Texts are capped and redacted by :func:`cap_text` like a decision's.
    """

    KIND: ClassVar[str] = "shadow"

    request_id: str
    """The proxy's id of the request (the decision record's ``request_id``)."""
    time: float
    """When the reference model's answer came back (or failed), Unix seconds (UTC)."""
    route: str
    """The route (model name the client asked for)."""
    answered_by: str
    """The model whose answer the client got."""
    reference: str
    """The reference model asked in the shadow."""
    reference_status: int
    """The HTTP status of the reference call (200 when it answered)."""
    reference_latency_s: float
    """Seconds the reference call took (>= 0)."""
    category: str | None = None
    """The ``x-routelab-category`` header, when sent."""
    prompt_text: str | None = None
    """The prompt (capped and redacted)."""
    answer_text: str | None = None
    """The answer the client got (capped and redacted)."""
    reference_text: str | None = None
    """The reference model's answer (capped and redacted); None when it failed."""
    expected: str | None = None
    """The known correct answer (a letter, a number...), when the request carried one: enables exact grading."""
    answer_cost_usd: float | None = None
    """The answer's cost in dollars, when known."""
    reference_cost_usd: float | None = None
    """The reference call's cost in dollars (shadow spend), when known."""
    reference_error: str = ""
    """Why the reference call failed (``timeout``, ``http 503``...); "" when it answered."""
    text_truncated: bool = False
    """Whether a stored text was cut to the cap."""
    kind: str = "shadow"
    """The record kind (always ``shadow``)."""
    schema_version: int = field(default=SCHEMA_VERSION)
    """The layout version (:data:`SCHEMA_VERSION`)."""

    def __post_init__(self) -> None:
        k = "shadow"
        _check_common(self, k)
        for name in ("route", "answered_by", "reference"):
            _check_name(self, name, k)
        if isinstance(self.reference_status, bool) or not isinstance(self.reference_status, int) or not (
            100 <= self.reference_status <= 599
        ):
            raise RecordError("reference_status", f"must be an HTTP status (100..599), got "
                                                  f"{self.reference_status!r}", k)
        if (lat := _number(self.reference_latency_s)) is None or lat < 0:
            raise RecordError("reference_latency_s", f"must be seconds >= 0, got {self.reference_latency_s!r}", k)
        for name in ("answer_cost_usd", "reference_cost_usd"):
            value = getattr(self, name)
            if value is not None and ((c := _number(value)) is None or c < 0):
                raise RecordError(name, f"must be dollars >= 0 or null, got {value!r}", k)
        for name in ("category", "expected"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise RecordError(name, f"must be a string or null, got {getattr(self, name)!r}", k)
        if not isinstance(self.reference_error, str):
            raise RecordError("reference_error", f"must be a string, got {self.reference_error!r}", k)
        if not isinstance(self.text_truncated, bool):
            raise RecordError("text_truncated", f"must be true or false, got {self.text_truncated!r}", k)
        for name in ("prompt_text", "answer_text", "reference_text"):
            _check_text(self, name, k)

    @property
    def gradable(self) -> bool:
        """Whether a judge can grade the pair: the reference answered and the prompt and both answers are stored."""
        return (self.reference_status == 200 and self.prompt_text is not None and self.answer_text is not None
                and self.reference_text is not None)

    @classmethod
    def build(cls, *, cap: int = DEFAULT_TEXT_CAP, prompt_text: str | None = None, answer_text: str | None = None,
              reference_text: str | None = None, **kw: Any) -> ShadowPair:
        """A pair with its three texts passed through :func:`cap_text` (``text_truncated`` set when one was cut)."""
        texts = {name: cap_text(value, cap) for name, value in
                 (("prompt_text", prompt_text), ("answer_text", answer_text), ("reference_text", reference_text))}
        cut = any(flag for _, flag in texts.values())
        return cls(**{name: value for name, (value, _) in texts.items()}, text_truncated=cut, **kw)



def verdict_of(answer_score: float, reference_score: float) -> str:
    """``win``/``tie``/``loss`` of the answer against the reference, from their scores under one grader."""
    return "win" if answer_score > reference_score else "loss" if answer_score < reference_score else "tie"


@dataclass(frozen=True)
class GradeRecord(_FlatRecord):
    """A verdict on one :class:`ShadowPair`: the answer against the reference answer (``kind: grade``).

    Scores are in [0, 1] under one grader. Exact match: each answer's correctness (1 or 0) against the expected
    answer. Pairwise judge (both orders): ``answer_score`` is the answer's pairwise score against the reference
    (0.5 = tie) and ``reference_score`` is 0.5, what the reference scores against itself, so the two are on the
    scale the offline ``judge_pairwise`` grader uses with the reference as baseline. ``verdict`` must agree with
    the scores (:func:`verdict_of`). ``(request_id, grader)`` identifies a grade: a pair is graded once per grader.
    """

    KIND: ClassVar[str] = "grade"

    request_id: str
    """The graded pair's ``request_id``."""
    time: float
    """When the grade was made, Unix seconds (UTC)."""
    grader: str
    """Who graded: ``exact`` or ``judge:<model>``."""
    verdict: str
    """``win``, ``tie`` or ``loss``: the answer against the reference."""
    answer_score: float
    """The answer's score in [0, 1]."""
    reference_score: float
    """The reference answer's score in [0, 1] (0.5 under a pairwise judge)."""
    answered_by: str
    """The model whose answer was graded."""
    reference: str
    """The reference model."""
    category: str | None = None
    """The request's category header, when sent."""
    online: bool = False
    """True when the proxy graded it while serving; False for ``routelab logs grade``."""
    detail: str = ""
    """What the grader read (``A>B|B>A`` for a judge, the extracted letters for exact match)."""
    kind: str = "grade"
    """The record kind (always ``grade``)."""
    schema_version: int = field(default=SCHEMA_VERSION)
    """The layout version (:data:`SCHEMA_VERSION`)."""

    def __post_init__(self) -> None:
        k = "grade"
        _check_common(self, k)
        for name in ("grader", "answered_by", "reference"):
            _check_name(self, name, k)
        for name in ("answer_score", "reference_score"):
            if (v := _number(getattr(self, name))) is None or not 0.0 <= v <= 1.0:
                raise RecordError(name, f"must be in [0, 1], got {getattr(self, name)!r}", k)
        if self.verdict not in VERDICTS:
            raise RecordError("verdict", f"must be one of {', '.join(VERDICTS)}, got {self.verdict!r}", k)
        if self.verdict != (want := verdict_of(self.answer_score, self.reference_score)):
            raise RecordError("verdict", f"{self.verdict!r} disagrees with the scores {self.answer_score:g} vs "
                                         f"{self.reference_score:g} (that is a {want})", k)
        if self.category is not None and not isinstance(self.category, str):
            raise RecordError("category", f"must be a string or null, got {self.category!r}", k)
        if not isinstance(self.online, bool):
            raise RecordError("online", f"must be true or false, got {self.online!r}", k)
        if not isinstance(self.detail, str) or _SECRET.search(self.detail):
            raise RecordError("detail", "must be a string without key-shaped text", k)

    @property
    def key(self) -> tuple[str, str]:
        """``(request_id, grader)``: what makes a grade unique in a log."""
        return (self.request_id, self.grader)



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


def valid_request_id(value: object) -> bool:
    """Whether ``value`` can be a request id a client echoes (printable ASCII without spaces, 1 to
    :data:`MAX_REQUEST_ID_CHARS` characters)."""
    return isinstance(value, str) and _REQUEST_ID.match(value) is not None



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
