"""LLM-judge graders: a single-answer rubric score (1-10) and a pairwise comparison in both orders.

Templates are data (``templates/*.toml``: ``system`` and ``user`` text with ``{placeholders}``), so a team
can add or edit one without touching code (pass ``template="path/to/mine.toml"``).

**Fencing.** Everything a judge reads that is not ours (the question, the reference and above all the
answer under review) is enclosed in tags carrying a token derived from a hash of that content
(:func:`fence_token`). The system prompt says text inside the tags is data, never instructions. An answer
cannot close the fence early because it cannot know the token (the token depends on the answer itself), and
rendering is a single pass over the template, so ``{...}`` inside an answer is never substituted. The token
is deterministic so the judge's request, and therefore its cached verdict, is the same on every run.

**Verdicts** are parsed by :func:`parse_rating` / :func:`parse_pairwise`, which never raise on odd text and
never guess: no verdict, an out-of-range rating, or two different verdicts in one reply give ``None``; the
runner counts and reports those.

**Scores** in [0, 1]: a rating r on the 1-10 scale maps to ``(r - 1) / 9``. A pairwise verdict for the
candidate maps win 1, tie 0.5, loss 0 (arena-hard's strong labels: ``A>>B`` 1, ``A>B`` 0.75, ``A=B`` 0.5,
``B>A`` 0.25, ``B>>A`` 0); the two orders are averaged.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from evals.exceptions import ConfigError
from evals.graders._base import Grade, GradeInput, Grader, JudgeCall, register_grader

__all__ = [
    "JudgePairwise",
    "JudgeSingle",
    "Template",
    "fence_token",
    "load_template",
    "parse_pairwise",
    "parse_rating",
    "rating_to_score",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_PAIR = re.compile(r"\[\[\s*(A>>B|A>B|A=B|B>A|B>>A|A|B|C)\s*\]\]")
#: Pairwise verdict label -> score of assistant A.
PAIR_SCORES: dict[str, float] = {
    "A>>B": 1.0,
    "A>B": 0.75,
    "A=B": 0.5,
    "B>A": 0.25,
    "B>>A": 0.0,
    "A": 1.0,
    "C": 0.5,
    "B": 0.0,
}


@dataclass(frozen=True)
class Template:
    """A judge prompt: system and user text with ``{placeholder}`` fields."""

    name: str
    system: str
    user: str
    low: float = 1.0
    high: float = 10.0

    def render(self, **values: str) -> list[dict[str, str]]:
        """The chat messages with every placeholder filled in one pass (inserted text is never re-scanned).

        Raises:
            ConfigError: if the template uses a placeholder that was not given.
        """

        def fill(text: str) -> str:
            def sub(m: re.Match[str]) -> str:
                key = m.group(1)
                if key not in values:
                    raise ConfigError(
                        f"judge template {self.name!r} uses {{{key}}}, which is not provided "
                        f"(available: {', '.join(sorted(values))})"
                    )
                return values[key]

            return _PLACEHOLDER.sub(sub, text)

        return [
            {"role": "system", "content": fill(self.system)},
            {"role": "user", "content": fill(self.user)},
        ]


@lru_cache(maxsize=32)
def load_template(name_or_path: str) -> Template:
    """A template by name (``single``, ``single_ref``, ``pairwise``) or by path to a TOML file.

    Raises:
        ConfigError: for an unknown name (listing the built-in ones) or a file without ``system``/``user``.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        names = sorted(p.stem for p in TEMPLATES_DIR.glob("*.toml"))
        raise ConfigError(
            f"judge template {name_or_path!r} not found; built-in templates: {', '.join(names)}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"judge template {str(path)!r} is not valid TOML ({exc})") from None
    missing = [k for k in ("system", "user") if not isinstance(data.get(k), str)]
    if missing:
        raise ConfigError(f"judge template {str(path)!r} lacks text field(s) {missing}")
    return Template(
        str(data.get("name", path.stem)),
        data["system"],
        data["user"],
        float(data.get("low", 1)),
        float(data.get("high", 10)),
    )


def fence_token(*parts: str) -> str:
    """A token for the data fence: 16 hex digits of a SHA-256 over everything that goes inside it."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return "DATA-" + h.hexdigest()[:16].upper()


def _fenced_values(**values: str) -> dict[str, str]:
    token = fence_token(*values.values())
    # The token depends on the content, so content cannot contain it (short of a SHA-256 preimage); check
    # anyway, and salt once more if some text quotes a previous token verbatim.
    salt = 0
    while any(token in v for v in values.values()):
        salt += 1
        token = fence_token(*values.values(), str(salt))
    return {**values, "fence": token}


def parse_rating(text: object, low: float = 1.0, high: float = 10.0) -> float | None:
    """The judge's rating from ``[[r]]`` in its reply, or None when there is no single valid one.

    Every ``[[number]]`` in the reply is read; they must all be the same value and lie in ``[low, high]``.
    Anything else (no rating, ``[[9.5]]`` next to ``[[7]]``, ``[[100]]``, non-text input) gives None.

    Example:
        >>> parse_rating("Good answer. Rating: [[8]]")
        8.0
        >>> parse_rating("I would give it [[100]]") is None
        True
    """
    if not isinstance(text, str):
        return None
    values = {float(v) for v in _RATING.findall(text)}
    if len(values) != 1:
        return None
    (value,) = values
    return value if low <= value <= high else None


def rating_to_score(rating: float | None, low: float = 1.0, high: float = 10.0) -> float | None:
    """Map a rating on ``[low, high]`` to [0, 1] (None stays None)."""
    if rating is None:
        return None
    return (rating - low) / (high - low)


def parse_pairwise(text: object) -> str | None:
    """The pairwise verdict label (``A``, ``B``, ``C``, or arena-hard's ``A>>B``...) or None.

    Example:
        >>> parse_pairwise("Assistant A explains more. [[A]]")
        'A'
        >>> parse_pairwise("Both fine: [[A]] or maybe [[B]]") is None
        True
    """
    if not isinstance(text, str):
        return None
    labels = {m for m in _PAIR.findall(text)}
    if len(labels) != 1:
        return None
    return labels.pop()


@register_grader("judge_single")
class JudgeSingle(Grader):
    """A judge model rates one answer 1-10 (optionally against a reference answer); score = (r - 1) / 9.

    Args:
        template: Built-in template name or a TOML path; default ``single``, or ``single_ref`` when
            ``reference`` is True.
        reference: Show the sample's reference answer to the judge (reference-guided grading).
    """

    needs_judge = True

    def __init__(self, template: str = "", reference: bool = False) -> None:
        self.template = template
        self.reference = reference

    def _template(self) -> Template:
        return load_template(self.template or ("single_ref" if self.reference else "single"))

    def messages(self, item: GradeInput) -> list[dict[str, str]]:
        """The judge's chat messages for one answer (fenced)."""
        values = {"question": item.prompt, "answer": item.response}
        if self.reference:
            values["reference"] = item.reference
        return self._template().render(**_fenced_values(**values))

    async def agrade(self, item: GradeInput, judge: JudgeCall | None = None) -> Grade:
        """Ask the judge and parse its rating; an unparsable verdict gives ``Grade(None)``."""
        if judge is None:
            raise ConfigError(
                f"grader {self.name!r} needs a judge model: set judge_model in the [grader] table"
            )
        tpl = self._template()
        verdict = await judge(self.messages(item))
        rating = parse_rating(verdict, tpl.low, tpl.high)
        if rating is None:
            return Grade(None, "", "unparsable verdict")
        return Grade(rating_to_score(rating, tpl.low, tpl.high), f"{rating:g}")


@register_grader("judge_pairwise")
class JudgePairwise(Grader):
    """A judge compares the answer with a baseline model's answer, in both orders; score in [0, 1].

    The score is the mean of the candidate's result as assistant A and (one minus the result of the
    baseline) as assistant A: a judge that always prefers position A scores every answer 0.5.

    Args:
        baseline: The model whose answers are the comparison point (one of the collected models).
        template: Built-in template name or a TOML path (default ``pairwise``).
    """

    needs_judge = True
    needs_baseline = True

    def __init__(self, baseline: str = "", template: str = "pairwise") -> None:
        self.baseline = baseline
        self.template = template

    def messages(self, item: GradeInput, swap: bool = False) -> list[dict[str, str]]:
        """The judge's messages with the candidate as A (or as B when ``swap``)."""
        a, b = (item.baseline or "", item.response) if swap else (item.response, item.baseline or "")
        return load_template(self.template).render(
            **_fenced_values(question=item.prompt, answer_a=a, answer_b=b)
        )

    async def agrade(self, item: GradeInput, judge: JudgeCall | None = None) -> Grade:
        """Two judge calls (both orders); ``Grade(None)`` unless both verdicts parse."""
        if judge is None:
            raise ConfigError(
                f"grader {self.name!r} needs a judge model: set judge_model in the [grader] table"
            )
        if item.baseline is None:
            raise ConfigError(f"grader {self.name!r} needs the baseline model's answer ({self.baseline!r})")
        if item.response == item.baseline:  # identical answers tie by definition: no call to pay for
            return Grade(0.5, "same", "identical to the baseline answer")
        first = parse_pairwise(await judge(self.messages(item)))
        second = parse_pairwise(await judge(self.messages(item, swap=True)))
        if first is None or second is None:
            return Grade(None, f"{first or '?'}|{second or '?'}", "unparsable verdict")
        score = (PAIR_SCORES[first] + 1.0 - PAIR_SCORES[second]) / 2.0
        return Grade(score, f"{first}|{second}")
