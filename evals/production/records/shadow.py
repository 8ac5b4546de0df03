"""Shadow pairs (``kind: shadow``) and the grades given to them (``kind: grade``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from evals.production.records.common import (
    _SECRET,
    DEFAULT_TEXT_CAP,
    SCHEMA_VERSION,
    VERDICTS,
    RecordError,
    _check_common,
    _check_name,
    _check_text,
    _FlatRecord,
    _number,
    cap_text,
)


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
