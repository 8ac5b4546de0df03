"""Exact-match graders: multiple-choice letter, final number (GSM8K style), normalised text.

Each reads the answer with one documented rule of :mod:`evals.graders.extract` and scores 1.0 when what it
read equals the reference, else 0.0. An answer with nothing to read (no letter, no number) scores 0.0 and
is reported as "no answer" (``Grade.parsed`` is False), never guessed.
"""

from __future__ import annotations

from evals.graders._base import Grade, GradeInput, Grader, register_grader
from evals.graders.extract import extract_letter, extract_number, normalize_text, numbers_equal

__all__ = ["MCQLetter", "FinalNumber", "NormalizedText"]


@register_grader("mcq_letter")
class MCQLetter(Grader):
    """Multiple choice: the answer letter (MMLU-Pro importer's rule) must equal the reference letter.

    Args:
        letters: The option letters; an extracted letter outside them counts as no answer.
    """

    def __init__(self, letters: str = "ABCDEFGHIJ") -> None:
        self.letters = letters

    def grade(self, item: GradeInput) -> Grade:
        """1.0 when the extracted letter equals ``item.reference`` (case-insensitive), else 0.0."""
        letter = extract_letter(item.response, self.letters)
        if not letter:
            return Grade(0.0, "", "no letter")
        return Grade(float(letter == item.reference.strip().upper()), letter)


@register_grader("number")
class FinalNumber(Grader):
    """GSM8K style: the final number of the answer must equal the reference's final number.

    The reference may be a bare number (``18``) or a GSM8K solution ending in ``#### 18``.

    Args:
        rel_tol: Relative tolerance of the comparison.
    """

    def __init__(self, rel_tol: float = 1e-6) -> None:
        self.rel_tol = rel_tol

    def grade(self, item: GradeInput) -> Grade:
        """1.0 when the numbers agree within ``rel_tol``, else 0.0 (0.0 with no number found)."""
        value = extract_number(item.response)
        if value is None:
            return Grade(0.0, "", "no number")
        gold = extract_number(item.reference)
        return Grade(float(numbers_equal(value, gold, self.rel_tol)), f"{value:g}")


@register_grader("text")
class NormalizedText(Grader):
    """The normalised answer (lower case, no punctuation or articles) must equal the normalised reference.

    Args:
        contains: If True, it is enough that the normalised reference occurs in the normalised answer.
    """

    def __init__(self, contains: bool = False) -> None:
        self.contains = contains

    def grade(self, item: GradeInput) -> Grade:
        """1.0 on a (normalised) match, else 0.0."""
        got, gold = normalize_text(item.response), normalize_text(item.reference)
        if not got:
            return Grade(0.0, "", "empty answer")
        hit = (gold in got) if self.contains else (got == gold)
        return Grade(float(bool(gold) and hit), got[:80])
