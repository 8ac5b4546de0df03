"""The static encoder's fast tokenisation path gives exactly the tokenizer's ids (``routers.runtime.StaticTokenIds``).

An exported ``minilm-static`` router and the workbench both embed through it, so a difference would not break
parity between them, but it would silently change the encoder the measured numbers came from.
"""

from __future__ import annotations

import random

import pytest

from evals import sources
from routers.encoders.minilm import minilm_path
from routers.runtime import StaticTokenIds, static_token_ids, static_tokenizer

# ASCII (controls included) plus the non-ASCII that BERT treats specially: accents and combining marks (stripped),
# Unicode spaces (split), zero-width and format characters (dropped), CJK (split per character), case mappings
# that change length, punctuation outside ASCII, emoji, the replacement character.
UNICODE = list("éÉüßİıΣσς\u00a0\u2009\u200b\ufeff\u3000中文字¿¡—–“”’…°×÷±√∞πµ\u0301\u0308ﬁ①Ⅷ😀\ufffd\x85\u2028")
EDGE_CASES = [
    "",
    " ",
    "\x00\x0b\x0c\x1c\x7f",
    "a\tb\nc\rd",
    "a\x0bb",  # vertical tab: a control character BERT drops, not a space
    "don't U.S.A. 1,000.50$ a_b snake_case CamelCase",
    "[CLS] the [MASK] token [SEP]",  # added tokens match in the raw text
    "[cls] is not [CLS]",
    "x" * 150,  # longer than WordPiece's 100 characters: [UNK]
    "word " * 700,  # truncated at max_tokens
    "é" * 300,
    "x" * 150 + "é",
    "naïve café 中文 text",
]


@pytest.fixture(scope="module")
def tokenizer():
    return static_tokenizer(minilm_path() / "tokenizer.json", 512)


def assert_same_ids(tokenizer, texts: list[str]) -> None:
    fast = StaticTokenIds(tokenizer)
    assert fast.fast, "the MiniLM tokenizer should take the fast path"
    expected = [static_token_ids(tokenizer, [t])[0] for t in texts]
    got = fast(texts)
    wrong = [t for t, a, b in zip(texts, expected, got, strict=True) if a != b]
    assert not wrong, f"{len(wrong)} of {len(texts)} texts tokenised differently, e.g. {wrong[0][:200]!r}"
    assert [fast([t])[0] for t in texts[:300]] == got[:300]  # one at a time = in a batch


def random_texts(seed: int, n: int, alphabet: list[str]) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))) for _ in range(n)]


@pytest.mark.slow
def test_fast_path_matches_the_tokenizer_on_edge_cases_and_random_text(tokenizer):
    ascii_chars = [chr(i) for i in range(128)]
    texts = EDGE_CASES + random_texts(0, 1500, ascii_chars) + random_texts(1, 1500, ascii_chars + UNICODE)
    assert_same_ids(tokenizer, texts)


@pytest.mark.slow
def test_fast_path_matches_the_tokenizer_on_mmlu_pro_prompts(tokenizer, shared_data):
    prompts = [str(p) for p in sources.load("mmlu-pro").prompts[:2000]]
    assert any(not p.isascii() for p in prompts)  # both paths are exercised
    assert_same_ids(tokenizer, prompts)


def test_a_tiny_word_cache_is_still_exact(tokenizer):
    fast = StaticTokenIds(tokenizer, max_words=3)
    texts = EDGE_CASES + random_texts(2, 200, [chr(i) for i in range(32, 127)] + UNICODE)
    assert fast(texts) == [static_token_ids(tokenizer, [t])[0] for t in texts]
    assert len(fast._words) <= 3


def test_a_tokenizer_it_does_not_know_keeps_its_own_path():
    class Double:  # not a tokenizers.Tokenizer
        def encode(self, text, add_special_tokens=False):
            return type("E", (), {"ids": [len(text)]})()

        def encode_batch(self, texts, add_special_tokens=False):
            return [self.encode(t) for t in texts]

    fast = StaticTokenIds(Double())
    assert not fast.fast
    assert fast(["abc", "hello"]) == [[3], [5]]


@pytest.mark.slow
def test_fast_path_matches_the_tokenizer_on_every_local_prompt(tokenizer, shared_data):
    texts = []
    for name in ("mmlu-pro", "routellm-mmlu", "routellm-gsm8k", "routellm-mt-bench", "arena-bench-v1"):
        texts += [str(p) for p in sources.load(name).prompts]
    assert_same_ids(tokenizer, texts)
