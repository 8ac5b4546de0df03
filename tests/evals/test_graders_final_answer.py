"""Final answers of any format (evals.graders.extract): what a cascade compares between two models' answers."""

from __future__ import annotations

import pytest

from evals.graders.extract import FinalAnswer, answer_agreement, code_tokens, extract_code, final_answer

ADD = "Here you go:\n```python\ndef add(a, b):\n    '''Sum of a and b.'''\n    return a + b  # plus\n```\n"
PLUS = (
    "Sure!\n```python\ndef plus(x, y):\n    return x + y\n\nprint(plus(1, 2))  # 3\n```\n"
    "This works because + adds numbers."
)
SUB = "```python\ndef add(a, b):\n    return a - b\n```"
LOOP = "```\ndef total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n```"


def test_code_is_compared_after_names_comments_docstrings_and_examples_are_dropped() -> None:
    assert final_answer(ADD).kind == "code"
    assert final_answer(ADD) == final_answer(PLUS)
    assert answer_agreement(final_answer(ADD), final_answer(PLUS)) == 1.0
    # One operator differs: similar, not the same.
    near = answer_agreement(final_answer(ADD), final_answer(SUB))
    assert 0.5 < near < 1.0
    # A different algorithm is less similar than a one-token change.
    assert answer_agreement(final_answer(ADD), final_answer(LOOP)) < near


def test_code_blocks_and_parse_failures() -> None:
    assert extract_code("[PYTHON]\ndef f():\n    return 1\n[/PYTHON]\n[TESTS]\nassert f() == 1\n[/TESTS]").startswith(
        "def f()"
    )
    # The block that defines a function wins over an earlier usage block.
    assert extract_code("```\nx = 1\n```\n```python\ndef g(): pass\n```").startswith("def g")
    assert extract_code("no code here") == ""
    assert code_tokens("def f(:\n") is None
    assert code_tokens("print(1)") == ()  # example code only: nothing left to compare
    # Code that does not parse is not a code answer; the last number or line is compared instead.
    assert final_answer("```python\ndef f(:\n```\nIt returns 42").kind == "number"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let's think. The answer is (C).", FinalAnswer("letter", "C")),
        ("9 * 2 = 18\n#### 18", FinalAnswer("number", 18.0)),
        ("So the answer is $1,234.50 in total, not 12.", FinalAnswer("number", 1234.5)),
        ("She has 3 + 4 = 7 apples.", FinalAnswer("number", 7.0)),
        ("I think so.\n\nThe capital is Paris!", FinalAnswer("text", ("capital", "is", "paris"))),
        ("   \n", FinalAnswer("")),
        ("", FinalAnswer("")),
    ],
)
def test_final_answer_rules_in_order(text: str, expected: FinalAnswer) -> None:
    assert final_answer(text) == expected


def test_agreement_by_kind() -> None:
    assert answer_agreement(final_answer("answer is (B)"), final_answer("the answer is B")) == 1.0
    assert answer_agreement(final_answer("answer is (B)"), final_answer("the answer is (C)")) == 0.0
    assert answer_agreement(final_answer("#### 18"), final_answer("so it is 18.00")) == 1.0
    assert answer_agreement(final_answer("#### 18"), final_answer("#### 19")) == 0.0
    # Text: SQuAD token F1 of the last lines ("capital is paris" vs "paris": 2 * 1 / (3 + 1)).
    assert answer_agreement(final_answer("The capital is Paris."), final_answer("Paris")) == pytest.approx(0.5)
    # Across kinds, and with an empty answer, nothing agrees.
    assert answer_agreement(final_answer("#### 7"), final_answer("The answer is (A)")) == 0.0
    assert answer_agreement(final_answer(""), final_answer("")) == 0.0
