"""The documented token estimator used where a source has text but no usage counts.

Convention (kept everywhere so that estimated costs stay comparable across sources): **one token per four
characters** of text, the usual rule of thumb for English with OpenAI-style BPE tokenizers. Costs built on it
are flagged ``cost_estimated=True`` and every card says so.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["CHARS_PER_TOKEN", "MMLU_PRO_FEWSHOT_TOKENS", "estimate_tokens"]

#: Characters per token of the estimator.
CHARS_PER_TOKEN = 4.0
#: Tokens of the 5-shot chain-of-thought prefix that MMLU-Pro's harness puts before every question.
MMLU_PRO_FEWSHOT_TOKENS = 1500.0


def estimate_tokens(texts: Iterable[str] | str) -> np.ndarray | float:
    """Estimated tokens of a text (float) or of each text in an iterable (array): ``len(text) / 4``."""
    if isinstance(texts, str):
        return len(texts) / CHARS_PER_TOKEN
    return np.fromiter((len(t or "") for t in texts), dtype=float) / CHARS_PER_TOKEN
