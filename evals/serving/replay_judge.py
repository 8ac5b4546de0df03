"""The replay server's judge: pairwise verdicts decided from the recorded correctness of the two answers.

``evals.graders.judge.JudgePairwise`` asks a judge model to compare two answers to one question; its template
(``templates/pairwise.toml``) fences the question and each answer in tags carrying a token
(``<question-DATA-...>``, ``<answer_a-DATA-...>``, ``<answer_b-DATA-...>``). The replay server answers such a
request sent to its judge model name (``replay-judge`` by default) without any language model: it reads the
three fenced texts, looks both answers up among the recorded answers to that question (every model's
``response`` and its ``score``; answers made wrong by a drift switch count as score 0), and replies in the
format the grader parses: ``[[A]]`` when A's recorded score is higher, ``[[B]]`` when B's is, ``[[C]]`` for a
tie. So a test knows every verdict in advance.

An answer that is not among the recorded ones gets a reply without a verdict (the grader then records an
unparsable verdict, as it would for a real judge that did not decide): the replay judge never guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_JUDGE_MODEL", "PairwiseQuestion", "parse_pairwise_request", "replay_verdict"]

#: The model name the replay server answers as a judge (``--judge-model`` changes it).
DEFAULT_JUDGE_MODEL = "replay-judge"

_TOKEN = r"(DATA-[0-9A-F]{16})"


def _fenced(tag: str) -> re.Pattern[str]:
    # The token derives from the fenced content, so no content can hold the closing tag: a lazy match is exact.
    return re.compile(rf"<{tag}-{_TOKEN}>\n(.*?)\n</{tag}-\1>", re.S)


_QUESTION, _ANSWER_A, _ANSWER_B = _fenced("question"), _fenced("answer_a"), _fenced("answer_b")


@dataclass(frozen=True)
class PairwiseQuestion:
    """The three texts of a pairwise judge request."""

    question: str
    answer_a: str
    answer_b: str


def parse_pairwise_request(user_text: str) -> PairwiseQuestion | None:
    """The fenced question and two answers of a pairwise judge prompt's user turn, or None if it is not one."""
    found = [p.search(user_text) for p in (_QUESTION, _ANSWER_A, _ANSWER_B)]
    if any(m is None for m in found):
        return None
    q, a, b = (m.group(2) for m in found)  # type: ignore[union-attr]
    return PairwiseQuestion(q, a, b)


def replay_verdict(score_a: float | None, score_b: float | None) -> str:
    """The judge's reply text for two recorded scores (None = the answer is not a recorded one).

    Example:
        >>> replay_verdict(1.0, 0.0)[-5:]
        '[[A]]'
    """
    if score_a is None or score_b is None:
        unknown = " and ".join(n for n, s in (("A", score_a), ("B", score_b)) if s is None)
        return (
            f"Replay judge: assistant {unknown}'s answer is not among the recorded answers to this question, "
            "so there is no recorded correctness to compare; no verdict."
        )
    if abs(score_a - score_b) < 1e-9:
        label = "C"
    else:
        label = "A" if score_a > score_b else "B"
    return (
        f"Replay judge: assistant A's answer has recorded score {score_a:g}, assistant B's {score_b:g}. [[{label}]]"
    )
