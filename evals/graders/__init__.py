"""Graders: turn a model's answer into a score in [0, 1].

Registered by name like routers (``get_grader(name, **params)``):

================ ==========================================================================================
``mcq_letter``   multiple-choice letter, the MMLU-Pro importer's extraction rule (:mod:`.extract`)
``number``       final number, GSM8K style (``#### N``, else the last number)
``text``         normalised text (lower case, no punctuation or articles)
``judge_single`` LLM judge, rubric score 1-10 (``reference=True`` for reference-guided), mapped to [0, 1]
``judge_pairwise`` LLM judge, candidate vs a baseline model's answer, both orders averaged
================ ==========================================================================================

Example:
    >>> from evals.graders import GradeInput, get_grader
    >>> get_grader("number").grade(GradeInput("2+2?", "It is 4.", reference="#### 4")).score
    1.0
"""

from evals.graders._base import (
    Grade,
    GradeInput,
    Grader,
    JudgeCall,
    get_grader,
    grader_registry,
    register_grader,
)
from evals.graders.exact import FinalNumber, MCQLetter, NormalizedText
from evals.graders.extract import extract_letter, extract_number, normalize_text
from evals.graders.judge import (
    JudgePairwise,
    JudgeSingle,
    fence_token,
    load_template,
    parse_pairwise,
    parse_rating,
    rating_to_score,
)

__all__ = [
    "FinalNumber",
    "Grade",
    "GradeInput",
    "Grader",
    "JudgeCall",
    "JudgePairwise",
    "JudgeSingle",
    "MCQLetter",
    "NormalizedText",
    "extract_letter",
    "extract_number",
    "fence_token",
    "get_grader",
    "grader_registry",
    "load_template",
    "normalize_text",
    "parse_pairwise",
    "parse_rating",
    "rating_to_score",
    "register_grader",
]
