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

**Final answer of any format** (:func:`final_answer`, :func:`answer_agreement`), for comparing two models'
answers to the same prompt (a cascade's cheap second opinion), not for grading. The first rule that applies:

1. ``letter``: the multiple-choice rule above;
2. ``number``: a number stated as the answer (after the last ``####``, or ``answer is N``);
3. ``code``: the first fenced block (or ``[PYTHON]...[/PYTHON]``) that defines a function, else the first
   block, normalised by :func:`code_tokens` (parsed; docstrings, comments and top-level example code dropped;
   identifiers renamed in order of appearance): two functions that differ only in names and comments agree;
4. ``number``: else the last number of the text (GSM8K style);
5. ``text``: else the normalised last non-empty line;
6. ``""``: an empty answer.

Two answers agree 1.0 when they are the same letter or equal numbers; for code, ``difflib``'s ratio of their
normalised token sequences (in [0, 1]); for text, the token F1; 0.0 across kinds or when either is empty.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import io
import keyword
import math
import re
import string
import tokenize
import unicodedata
from collections import Counter
from dataclasses import dataclass

__all__ = [
    "FinalAnswer",
    "answer_agreement",
    "code_tokens",
    "extract_code",
    "extract_letter",
    "extract_number",
    "final_answer",
    "normalize_text",
    "numbers_equal",
]

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


# ---------------------------------------------------------------------- final answers of any format
_CODE_BLOCK = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\r?\n(.*?)```|\[PYTHON\][ \t]*\r?\n?(.*?)\[/PYTHON\]", re.DOTALL)
_STATED_NUMBER = re.compile(r"answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
# Names kept as they are when code is normalised: what a function calls says what it does.
_KEPT_NAMES = frozenset(keyword.kwlist) | frozenset(dir(builtins))


@dataclass(frozen=True)
class FinalAnswer:
    """A response's final answer, normalised for comparison (see the module docstring).

    ``kind`` is ``"letter"``, ``"number"``, ``"code"``, ``"text"`` or ``""`` (none); ``value`` the letter,
    the number, or the normalised tokens (a tuple of strings) for code and text.
    """

    kind: str
    value: object = None


def extract_code(text: str) -> str:
    """The code of a response: the first fenced block defining a function, else the first block, else "".

    Example:
        >>> extract_code("Here:\\n```python\\ndef f(x):\\n    return x\\n```")
        'def f(x):\\n    return x\\n'
    """
    blocks = [a or b for a, b in _CODE_BLOCK.findall(text or "")]
    defining = [b for b in blocks if "def " in b]
    return defining[0] if defining else (blocks[0] if blocks else "")


def code_tokens(code: str) -> tuple[str, ...] | None:
    """Normalised tokens of Python code, or None when it does not parse.

    Kept: imports, function and class definitions (without docstrings; comments never survive parsing).
    Dropped: top-level example code (calls, prints, asserts). Identifiers other than keywords and builtins
    become ``v0, v1, ...`` in order of first appearance, so renaming a variable does not change the tokens.

    Example:
        >>> a = code_tokens('def add(a, b):\\n    "Sum."\\n    return a + b  # plus')
        >>> a == code_tokens("def plus(x, y):\\n    return x + y\\nprint(plus(1, 2))")
        True
        >>> code_tokens("def f(:") is None
        True
    """
    try:
        tree = ast.parse(code or "")
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return None
    defining = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    tree.body = [node for node in tree.body if isinstance(node, defining)]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            first = body[0]
            is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            if is_doc and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    names: dict[str, str] = {}
    out = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(ast.unparse(tree)).readline))
    except (tokenize.TokenError, SyntaxError, RecursionError):
        return None
    for tok in tokens:
        if tok.type == tokenize.NAME:
            name = tok.string
            out.append(name if name in _KEPT_NAMES else names.setdefault(name, f"v{len(names)}"))
        elif tok.type in (tokenize.OP, tokenize.NUMBER, tokenize.STRING):
            out.append(tok.string)
    return tuple(out)


def final_answer(text: str) -> FinalAnswer:
    """The final answer of a response of any format, by the first rule that applies (module docstring).

    Example:
        >>> final_answer("... the answer is (C).")
        FinalAnswer(kind='letter', value='C')
        >>> final_answer("She has 3 + 4 = 7 apples.")
        FinalAnswer(kind='number', value=7.0)
        >>> final_answer("The capital is Paris.").value
        ('capital', 'is', 'paris')
    """
    text = text or ""
    letter = extract_letter(text)
    if letter:
        return FinalAnswer("letter", letter)
    stated = _STATED_NUMBER.findall(text)
    if _HASHES in text or stated:
        number = extract_number(text) if _HASHES in text else _to_float(stated[-1])
        if number is not None:
            return FinalAnswer("number", number)
    code = extract_code(text)
    tokens = code_tokens(code) if code else None
    if tokens:
        return FinalAnswer("code", tokens)
    number = extract_number(text)
    if number is not None:
        return FinalAnswer("number", number)
    lines = [line for line in text.splitlines() if line.strip()]
    words = tuple(normalize_text(lines[-1]).split()) if lines else ()
    return FinalAnswer("text", words) if words else FinalAnswer("")


def answer_agreement(a: FinalAnswer, b: FinalAnswer) -> float:
    """How much two final answers agree, in [0, 1] (module docstring): 0.0 across kinds or when one is empty.

    Example:
        >>> answer_agreement(final_answer("#### 18"), final_answer("so 18.00 in all: the answer is 18"))
        1.0
    """
    if not a.kind or a.kind != b.kind:
        return 0.0
    if a.kind == "letter":
        return float(a.value == b.value)
    if a.kind == "number":
        return float(numbers_equal(a.value, b.value))  # type: ignore[arg-type]
    x, y = tuple(a.value), tuple(b.value)  # type: ignore[arg-type]
    if not x or not y:
        return 0.0
    if a.kind == "code":
        return difflib.SequenceMatcher(None, x, y, autojunk=False).ratio()
    common = sum((Counter(x) & Counter(y)).values())  # text: SQuAD's token F1
    return 0.0 if common == 0 else 2.0 * common / (len(x) + len(y))
