"""The documented extraction rules of the exact-match graders.

**Multiple-choice letter** (:func:`extract_letter`): the one rule, here; the MMLU-Pro importer
(:mod:`evals.sources.mmlu_pro`) imports it, so that a collected answer and an imported one are read the same
way:

1. the first ``answer is \\(?([A-J])\\)?`` (the MMLU-Pro harness's first pattern);
2. else the first ``\\boxed{X}`` (also ``\\boxed{\\text{(X)}}``): the same final-answer statement written in
   LaTeX, which is how DeepSeek-Coder-V2 ends ~12% of its MMLU-Pro answers;
3. else no letter: the answer scores 0 and is counted as "no answer". No last-capital-letter guess (it would
   match the pronoun "I" and the article "A").

**Final number** (:func:`extract_number`), GSM8K style: the number after the last ``####`` if there is one,
else the last number in the text. Thousands separators (``1,234``), currency signs (``$``), a trailing
``%`` and a sentence-final period are ignored; ``-3``, ``2.50`` and ``.5`` are numbers. Numbers compare equal
within a relative tolerance of 1e-6 (so ``18`` equals ``18.00``).

**Normalised text** (:func:`normalize_text`), SQuAD style: lower case, punctuation removed, the articles
``a``/``an``/``the`` removed, whitespace collapsed.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata

__all__ = ["extract_letter", "extract_number", "normalize_text", "numbers_equal"]

# A minus sign right after a digit is subtraction ("16-3"), not a negative number.
_NUMBER = re.compile(
    r"(?:(?<![\d])-)?\$?\s?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?|(?:(?<![\d])-)?\$?\.\d+"
)
_HASHES = "####"
_LETTER_PRIMARY = re.compile(r"answer is \(?([A-J])\)?")
_LETTER_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?\(?([A-J])\)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def extract_letter(text: str, letters: str = "ABCDEFGHIJ") -> str:
    """The answer letter of ``text`` by the multiple-choice rule (module docstring), or "" when there is none.

    Args:
        text: The model's answer.
        letters: The option letters of the question; a letter outside them counts as no answer.

    Example:
        >>> extract_letter("... so the answer is (C).")
        'C'
        >>> extract_letter("Therefore, the answer is \\\\(\\\\boxed{H}\\\\).")
        'H'
        >>> extract_letter("I am not sure.")
        ''
    """
    text = text or ""
    m = _LETTER_PRIMARY.search(text) or _LETTER_BOXED.search(text)
    letter = m.group(1) if m else ""
    return letter if letter and letter in letters else ""


def _to_float(token: str) -> float | None:
    cleaned = token.replace(",", "").replace("$", "").replace(" ", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def extract_number(text: str) -> float | None:
    """The final number of an answer, GSM8K style (see the module docstring), or None when there is none.

    Example:
        >>> extract_number("She makes 9 * 2 = $18 every day.\\n#### 18")
        18.0
        >>> extract_number("The total is $1,234.50.")
        1234.5
        >>> extract_number("no digits here") is None
        True
    """
    if not text:
        return None
    if _HASHES in text:
        tail = text.rsplit(_HASHES, 1)[1]
        found = _NUMBER.findall(tail)
        if found:
            return _to_float(found[0])
    found = _NUMBER.findall(text)
    return _to_float(found[-1]) if found else None


def numbers_equal(a: float | None, b: float | None, rel_tol: float = 1e-6) -> bool:
    """True when both numbers exist and agree within ``rel_tol`` (absolute 1e-9 near zero)."""
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def normalize_text(text: str) -> str:
    """SQuAD-style normal form: lower case, no punctuation, no articles, single spaces.

    Example:
        >>> normalize_text("  The Eiffel   Tower! ")
        'eiffel tower'
    """
    text = unicodedata.normalize("NFKC", text or "").lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())
