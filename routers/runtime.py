"""The inference math of every exportable router: numpy and the standard library only.

Why this is one file of more than 600 lines: it is copied byte for byte into every export folder and run there
on its own (without RouteLab, so it cannot import sibling modules), and its sha256 is what RouteLab trusts
(:mod:`routers.export.released_runtimes`). Its sections, in order: the decision rule (:func:`decide`, the one
rule every router and export uses), features, text selection, the static encoder, heads, adaptive state, the
loaded router, the kind table (:data:`KINDS`: kind -> quality head, arrays, choice), and loading a folder
without RouteLab (:func:`load_folder`).

This one file is what an exported router folder runs, copied verbatim, and it is also what the workbench's
strategies call in their ``predict_quality`` / ``predict_cost``: so an exported router makes exactly the
decisions that were measured. Fitting lives in ``routers/strategies/``; here is only the arithmetic that turns
a fitted *state* into decisions.

A state is ``(meta, arrays)``: ``meta`` a JSON-able dict (``kind``, ``models``, ``encoder``, ...), ``arrays``
a ``dict[str, np.ndarray]`` (saved as ``.npz``; no pickle). :func:`load_state` turns it into a
:class:`LoadedRouter` with ``predict_quality``, ``predict_cost`` and ``route``.

Kinds (``meta["kind"]``) and their heads: the table :data:`KINDS` maps each kind to its quality head, the
arrays it reads (checked by :func:`check_state_arrays` before they are loaded) and, for the kinds that do not
decide by the one rule :func:`decide`, their own choice:

==============  ========================================================================================
kind            quality head
==============  ========================================================================================
single          constant: one model answers everything (the knob does not move it)
random-mix      constant; the strong model is called with probability ``lam / (lam + lam_break_even)``
category        :func:`category_table_head`: per-category table of per-model quality
rules           :func:`rules_head`: first matching rule -> a segment table row, or a pinned model
linear          :func:`linear_head`: per-model logistic regression on features (also ``cost-aware``)
knn             :func:`knn_head`: similarity-weighted quality of the k nearest train prompts
mf              :func:`mf_head`: sigmoid(<W x, v_m> + b_m) (matrix factorisation)
blend           weighted mean of the quality of several sub-states (``meta["parts"]``)
adaptive        :func:`posterior_head`: per-category discounted Beta posterior of success, updated live by
                :meth:`LoadedRouter.feedback` (:func:`apply_feedback`); decided by :func:`explore_choice`
provider        category table of per-model (``model@provider`` arm) quality; an arm over the latency bound
                (its live latency from :meth:`LoadedRouter.set_live`, else the price table's) or down is
                never chosen (:func:`provider_admissible`)
==============  ========================================================================================

Cost heads (``meta["cost"]["kind"]``): ``constant`` (per model, optionally per category) or ``tokens``
(:func:`token_cost_head`: predicted input and output tokens times per-model prices).

Featurisation (:func:`featurise`): ``encoder`` names a sentence encoder. ``hash-bow`` / ``hash-bow-<dim>``
is a hashing bag of words computed here (no model, no dependency); any other name is resolved by
``routers.embeddings.embed`` when the workbench is importable, else by the ``embed_fn`` given to
:func:`load_state` (the export folder passes its own). The ``minilm-static`` encoder's arithmetic is here too
(:func:`static_embed`): an export bundles its tokenizer and token table as data, and :func:`load_folder` /
:func:`load_static_encoder` run it with numpy and the ``tokenizers`` package only (imported lazily).

Text selection (:func:`select_text`): an embedding router's state may carry ``meta["text_selection"]``, the rule
``routers.text_selection`` learned at fit time (a shared prefix/suffix and recurring lines of the train prompts
to strip, a window to keep head and tail within). :meth:`LoadedRouter.features` applies it before embedding, so
the workbench, an export folder and the proxy embed exactly the same text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FeedbackState",
    "KINDS",
    "Kind",
    "LoadedRouter",
    "STATIC_TOKENIZER_FILE",
    "STATIC_VECTORS_FILE",
    "StaticEmbedder",
    "TEXT_MODES",
    "TEXT_SELECTION_FORMAT",
    "apply_feedback",
    "category_one_hot",
    "category_table_head",
    "check_feedback",
    "check_text_selection",
    "check_state_arrays",
    "decide",
    "decide_rows",
    "evidence_from_dict",
    "evidence_to_dict",
    "explore_choice",
    "featurise",
    "hash_bow",
    "head_and_tail",
    "knn_head",
    "l2_normalize",
    "linear_head",
    "load_folder",
    "load_state",
    "load_static_encoder",
    "match_rules",
    "mf_head",
    "posterior_head",
    "random_mix_choice",
    "rules_head",
    "sigmoid",
    "static_embed",
    "StaticTokenIds",
    "sha256_file",
    "select_text",
    "static_token_ids",
    "strip_template",
    "static_tokenizer",
    "token_cost_head",
    "unit_hash",
]

STATE_FORMAT = 1
EmbedFn = Callable[[Sequence[str], str], np.ndarray]


# ---------------------------------------------------------------------------------------------- decision rule
def decide(quality_hat: np.ndarray, cost_hat: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """THE decision rule of every router and export: per row, ``argmax lam * quality_hat - cost_hat``.

    Ties (utilities within a relative 1e-12, so float noise never flips one) go to the cheapest model, then
    among equally cheap ones to the better one (what ``lam`` slightly above 0 would pick), then to the first.

    Args:
        quality_hat: Predicted quality, shape (n, m).
        cost_hat: Predicted cost in dollars, shape (n, m), or (m,) for a cost per model shared by every row.
        lam: Operating point (>= 0): dollars per request one pays for +1.0 of expected quality; or one per
            row, shape (n,) (the adaptive replay decides every operating point at once).

    Returns:
        Column indices, shape (n,).

    Raises:
        ValueError: for an operating point that is negative or not finite.
    """
    if np.ndim(lam) == 0:  # one operating point (every request of the proxy): no array round trip
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
        lam_col: Any = lam
    else:
        lam_arr = np.asarray(lam, dtype=float)
        if (~np.isfinite(lam_arr)).any() or (lam_arr < 0).any():
            raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
        lam_col = lam_arr.reshape(-1, 1)
    utility = lam_col * quality_hat - cost_hat
    best = utility.max(axis=1, keepdims=True)
    tied = utility >= best - 1e-12 * (np.abs(best) + lam_col + 1.0)
    tied_cost = np.where(tied, cost_hat, np.inf)
    cheapest = tied & (
        tied_cost <= tied_cost.min(axis=1, keepdims=True) + 1e-12 * (np.abs(cost_hat).max() + 1.0)
    )
    return np.where(cheapest, -quality_hat, np.inf).argmin(axis=1)


#: The adaptive router's name for :func:`decide` (the same rule; kept so earlier imports keep working).
decide_rows = decide


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


# ---------------------------------------------------------------------------------------------- features
_WORD = re.compile(r"[a-z0-9]+")


def hash_bow(texts: Sequence[str], dim: int = 512) -> np.ndarray:
    """Hashing bag of word unigrams and bigrams (crc32 buckets, signed), L2-normalised; shape (n, dim).

    A dependency-free encoder for tests and for latency-critical deployments; much weaker than MiniLM.
    """
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        words = _WORD.findall(str(text).lower())
        grams = words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]
        for g in grams:
            h = zlib.crc32(g.encode())
            out[i, h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def featurise(prompts: Sequence[str], encoder: str, embed_fn: EmbedFn | None = None) -> np.ndarray:
    """Prompt features for an encoder name, float32 (n, d).

    Raises:
        ValueError: for an encoder that needs ``routers.embeddings`` when neither it nor ``embed_fn`` exists.
    """
    prompts = [str(p) for p in prompts]
    if encoder == "hash-bow" or encoder.startswith("hash-bow-"):
        dim = int(encoder.rsplit("-", 1)[1]) if encoder != "hash-bow" else 512
        return hash_bow(prompts, dim)
    if embed_fn is not None:
        return np.asarray(embed_fn(prompts, encoder), dtype=np.float32)
    try:
        from routers.embeddings import embed  # the workbench's cached encoders
    except ImportError as exc:  # pragma: no cover - only in an export folder without an embed_fn
        raise ValueError(
            f"encoder {encoder!r} needs routers.embeddings or an embed_fn passed to load_state"
        ) from exc
    return np.asarray(embed(prompts, encoder=encoder), dtype=np.float32)


def category_one_hot(categories: Sequence[str] | None, vocabulary: Sequence[str], n: int) -> np.ndarray:
    """One-hot (n, len(vocabulary)) of known categories; all zeros for unknown ones or when there are none."""
    out = np.zeros((n, len(vocabulary)), dtype=np.float32)
    if categories is None:
        return out
    index = {c: j for j, c in enumerate(vocabulary)}
    for i, c in enumerate(categories):
        j = index.get(str(c))
        if j is not None:
            out[i, j] = 1.0
    return out


def category_index(categories: Sequence[str] | None, vocabulary: Sequence[str], n: int) -> np.ndarray:
    """Row index into a per-category table: ``len(vocabulary)`` (the fallback row) when unknown/absent."""
    index = {c: j for j, c in enumerate(vocabulary)}
    if categories is None:
        return np.full(n, len(vocabulary), dtype=int)
    return np.array([index.get(str(c), len(vocabulary)) for c in categories], dtype=int)


# ---------------------------------------------------------------------------------------------- text selection
# Which text of a request an embedding router reads (learned at fit time by routers.text_selection, stored in the
# state as ``meta["text_selection"]``). Applied here, in :meth:`LoadedRouter.features`, so the workbench, an
# export folder and the proxy strip exactly the same. Only the embedded text changes: the token cost head still
# reads the length of the whole prompt (what is paid for).

#: The version of a ``text_selection`` spec this runtime applies.
TEXT_SELECTION_FORMAT = 1
#: The rules (``mode``) of a text selection spec; ``full`` embeds the prompt as given.
TEXT_MODES = ("full", "auto", "last_user", "question")


def check_text_selection(spec: Any, where: str = "text_selection") -> dict[str, Any]:
    """Check a ``text_selection`` spec (``format``, ``mode``, ``prefix``, ``suffix``, ``recurring_lines``,
    ``max_chars``) and return it.

    Raises:
        ValueError: naming the first malformed field (``where.field``).
    """
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object, got {type(spec).__name__}")
    if spec.get("format") != TEXT_SELECTION_FORMAT:
        raise ValueError(
            f"{where}.format is {spec.get('format')!r}; this runtime applies format {TEXT_SELECTION_FORMAT}"
        )
    if spec.get("mode") not in TEXT_MODES:
        raise ValueError(f"{where}.mode must be one of {', '.join(TEXT_MODES)}, got {spec.get('mode')!r}")
    for key in ("prefix", "suffix"):
        if not isinstance(spec.get(key), str):
            raise ValueError(f"{where}.{key} must be a string, got {spec.get(key)!r:.80}")
    lines = spec.get("recurring_lines")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise ValueError(f"{where}.recurring_lines must be a list of strings")
    window = spec.get("max_chars")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 2):
        raise ValueError(f"{where}.max_chars must be an integer >= 2 or null, got {window!r}")
    return spec


def head_and_tail(text: str, max_chars: int | None) -> str:
    """``text`` itself when it fits in ``max_chars``; else its first and last ``max_chars // 2`` characters,
    joined by a line break, so both the instructions at the top and the question at the bottom are embedded."""
    if max_chars is None or len(text) <= max_chars:
        return text
    half = max(int(max_chars) // 2, 1)
    return text[:half] + "\n" + text[-half:]


def strip_ends(text: str, prefix: str, suffix: str) -> str:
    """``text`` without ``prefix`` (when it starts with it) and ``suffix`` (when it ends with it)."""
    if prefix and text.startswith(prefix):
        text = text[len(prefix) :]
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    return text


def strip_template(text: str, prefix: str, suffix: str, recurring_lines: Sequence[str]) -> str:
    """``text`` without the learned prefix, suffix and recurring lines (compared stripped), blank ends trimmed."""
    text = strip_ends(text, prefix, suffix)
    if recurring_lines:
        drop = set(recurring_lines)
        text = "\n".join(line for line in text.splitlines() if line.strip() not in drop)
    return text.strip()


def select_text(prompts: Sequence[str], spec: dict[str, Any] | None) -> list[str]:
    """The text embedded for each prompt under a checked ``text_selection`` spec (None: the prompts as given).

    ``full``: unchanged. ``last_user``: head and tail within ``max_chars``. ``question``: the template
    (prefix, suffix, recurring lines) stripped, then head and tail. ``auto``: as ``question``, but a prompt
    that is all template keeps its whole text (it must still be routed on something).
    """
    if spec is None or spec["mode"] == "full":
        return list(prompts)
    mode, window = spec["mode"], spec.get("max_chars")
    if mode == "last_user":
        return [head_and_tail(p, window) for p in prompts]
    prefix, suffix, lines = spec["prefix"], spec["suffix"], spec["recurring_lines"]
    out = []
    for p in prompts:
        varying = strip_template(p, prefix, suffix, lines)
        if mode == "auto" and not varying.strip():
            varying = p
        out.append(head_and_tail(varying, window))
    return out


# ---------------------------------------------------------------------------------------------- static encoder
# The ``minilm-static`` encoder (routers.encoders.static) is a tokenizer plus a table of token vectors: data, no
# model. Its arithmetic lives here, so the workbench's StaticEncoder and an export folder's bundled copy (files
# below, recorded in router.json under "bundled_encoder") compute the same bits with numpy and `tokenizers` only.

#: The token table of a bundled static encoder (``.npz`` with one float32 array ``vectors``; no pickle).
STATIC_VECTORS_FILE = "encoder.npz"
#: The tokenizer of a bundled static encoder (the Hugging Face ``tokenizers`` JSON format).
STATIC_TOKENIZER_FILE = "tokenizer.json"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32 (``routers.embeddings`` uses this)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


_FIRST = np.zeros(1, dtype=np.int64)  # reduceat's segment starts for a single text


def static_embed(token_ids: Sequence[Sequence[int]], vectors: np.ndarray) -> np.ndarray:
    """Static embeddings: per text, the sum of its tokens' rows of ``vectors``, then :func:`l2_normalize`.

    (The mean's scale would vanish in the normalisation, so the sum is used.) A text without tokens gives a
    zero vector. The sum over a text's tokens does not depend on the other texts of the batch.

    Args:
        token_ids: Per text, its token ids (rows of ``vectors``).
        vectors: (vocab, d) float32 token vectors.

    Returns:
        float32 array (len(token_ids), d).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"static token vectors must be a (vocab, d) array, got shape {vectors.shape}")
    if len(token_ids) == 1 and len(token_ids[0]):
        # One text (a proxy request): the same reduceat as below, so the same bits, with fewer numpy calls.
        return l2_normalize(np.add.reduceat(vectors[np.asarray(token_ids[0], dtype=np.int64)], _FIRST, axis=0))
    out = np.zeros((len(token_ids), vectors.shape[1]), dtype=np.float32)
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        ids = np.concatenate([np.asarray(token_ids[i], dtype=np.int64) for i in nonempty])
        starts = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
        # One gather and one segmented sum for the batch.
        out[nonempty] = np.add.reduceat(vectors[ids], starts, axis=0)
    return l2_normalize(out)


def static_tokenizer(path: str | os.PathLike[str], max_tokens: int) -> Any:
    """A ``tokenizers.Tokenizer`` read from ``path`` (a ``tokenizer.json``): no padding, at most ``max_tokens``.

    ``tokenizers`` is imported here only (this module needs numpy alone otherwise).

    Raises:
        ImportError: if the ``tokenizers`` package is not installed (the message says how to install it).
        ValueError: if the file is missing or is not a tokenizer.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ImportError(
            f"the static encoder needs the 'tokenizers' package to read {str(path)!r}; install it with "
            "`pip install tokenizers`"
        ) from exc
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: the static encoder needs its tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise ValueError(f"{path} is not a readable tokenizer.json ({exc})") from None
    tok.no_padding()
    tok.enable_truncation(max_length=int(max_tokens))
    return tok


def static_token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text from a :func:`static_tokenizer`, without special tokens ([CLS], [SEP])."""
    texts = [str(t) for t in texts]
    if not texts:
        return []
    if len(texts) == 1:
        return [tokenizer.encode(texts[0], add_special_tokens=False).ids]
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


# Exact BERT pre-processing of ASCII text (what BertNormalizer + BertPreTokenizer do to it, see StaticTokenIds):
# control characters other than tab/newline/return are dropped, text is lowercased, and it splits into runs of
# letters and digits and single punctuation characters (every printable ASCII character that is neither).
_ASCII_CONTROL = {c: None for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
_ASCII_PIECE = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")
# A whitespace-delimited chunk holding a non-ASCII character. BERT always splits at ASCII space, tab, newline and
# return, so such a chunk is tokenised on its own, by the tokenizer, and the ASCII text between chunks by the
# fast path.
_NON_ASCII_CHUNK = re.compile(r"([^ \t\n\r]*[^\x00-\x7f][^ \t\n\r]*)")


class StaticTokenIds:
    """:func:`static_token_ids` of a BERT WordPiece tokenizer, with an exact, faster path for ASCII text.

    The tokenizer's pipeline for ASCII is simple enough to run in Python (see ``_ASCII_PIECE``): its words
    are then looked up in a cache of word -> word-piece ids that the tokenizer itself fills (WordPiece
    splits each word on its own, so a word's pieces do not depend on its neighbours). A whitespace-delimited
    chunk with a non-ASCII character goes to the tokenizer on its own (cached the same way), and a text that
    contains one of the tokenizer's added tokens ("[CLS]", ...) goes to it whole. That is 2-4x faster than a
    tokenizer call for a typical prompt and gives the same ids (tested against the tokenizer on every prompt
    of the local task sets and on random ASCII and Unicode text).

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` from :func:`static_tokenizer` (a BERT normalizer, the BERT
            pre-tokenizer and a WordPiece model; anything else always takes the tokenizer's own path).
        max_words: Bound on the word cache (it is emptied when full).
    """

    def __init__(self, tokenizer: Any, *, max_words: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self.max_words = int(max_words)
        truncation = getattr(tokenizer, "truncation", None) or {}
        self.max_tokens = int(truncation.get("max_length") or 0) or None
        self._words: dict[str, list[int]] = {}
        spec = _tokenizer_spec(tokenizer)
        self.fast = spec is not None and _is_lowercasing_bert_wordpiece(spec)
        # Added tokens ("[CLS]", "[MASK]", ...) are matched in the raw text before anything else; a text that
        # contains one takes the tokenizer's path.
        self._added = [str(t.get("content", "")) for t in (spec or {}).get("added_tokens") or [] if t.get("content")]

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, without special tokens, truncated like the tokenizer."""
        texts = [str(t) for t in texts]
        if not self.fast:
            return static_token_ids(self.tokenizer, texts)
        added = self._added
        out: list[list[int] | None] = [None if any(a in t for a in added) else self._fast(t) for t in texts]
        rest = [i for i, ids in enumerate(out) if ids is None]
        if rest:
            for i, ids in zip(rest, static_token_ids(self.tokenizer, [texts[i] for i in rest]), strict=True):
                out[i] = ids
        return out  # type: ignore[return-value]

    def _fast(self, text: str) -> list[int]:
        if text.isascii():
            return self._ascii(text, [])
        ids: list[int] = []
        # split() with a group alternates: ASCII text, a non-ASCII chunk, ASCII text, ...
        for k, part in enumerate(_NON_ASCII_CHUNK.split(text)):
            if k % 2 == 0:
                ids = self._ascii(part, ids)
            else:
                ids += self._piece_ids(part)
            if self.max_tokens is not None and len(ids) >= self.max_tokens:
                return ids[: self.max_tokens]
        return ids

    def _piece_ids(self, word: str) -> list[int]:
        """The tokenizer's ids for one word or chunk, cached."""
        words = self._words
        pieces = words.get(word)
        if pieces is None:
            if len(words) >= self.max_words:
                words.clear()
            pieces = words[word] = self.tokenizer.encode(word, add_special_tokens=False).ids
        return pieces

    def _ascii(self, text: str, ids: list[int]) -> list[int]:
        """Append the ids of ASCII ``text`` to ``ids`` (stopping once ``max_tokens`` are reached)."""
        words = self._words
        limit = self.max_tokens
        for word in _ASCII_PIECE.findall(text.translate(_ASCII_CONTROL).lower()):
            pieces = words.get(word)
            if pieces is None:
                pieces = self._piece_ids(word)
            ids += pieces
            if limit is not None and len(ids) >= limit:
                return ids[:limit]
        return ids


def _tokenizer_spec(tokenizer: Any) -> dict[str, Any] | None:
    """The JSON description of a ``tokenizers.Tokenizer`` (None for anything else)."""
    try:
        return json.loads(tokenizer.to_str())
    except Exception:  # not a tokenizers.Tokenizer (a test double): it keeps its own path
        return None


def _is_lowercasing_bert_wordpiece(spec: dict[str, Any]) -> bool:
    """Whether a tokenizer is the BERT pipeline :class:`StaticTokenIds` reproduces for ASCII text."""
    norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    return (
        norm.get("type") == "BertNormalizer"
        and norm.get("clean_text") is True
        and norm.get("lowercase") is True
        and norm.get("strip_accents") in (None, True)
        and pre.get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
    )


class StaticEmbedder:
    """The ``embed_fn`` (see :func:`load_state`) of a static encoder: a tokenizer and a token table, no model.

    Args:
        vectors: (vocab, d) float32 token vectors.
        tokenizer: A ``tokenizers.Tokenizer`` set up by :func:`static_tokenizer`.
        name: The encoder name it computes (``meta["encoder"]`` of the states that use it).
        fallback: The ``embed_fn`` for any other encoder name (a blend may mix encoders); None refuses them.
    """

    def __init__(
        self, vectors: np.ndarray, tokenizer: Any, *, name: str = "minilm-static", fallback: EmbedFn | None = None
    ) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.tokenizer = tokenizer
        self.token_ids = StaticTokenIds(tokenizer)
        self.name = name
        self.fallback = fallback
        self.dim = int(self.vectors.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: float32 (n, d), unit rows (zero for a text without tokens)."""
        return static_embed(self.token_ids(texts), self.vectors)

    def __call__(self, texts: Sequence[str], encoder: str) -> np.ndarray:
        """The ``embed_fn`` protocol: embeddings of ``texts`` with the encoder named ``encoder``."""
        if encoder == self.name:
            return self.encode(texts)
        if self.fallback is not None:
            return self.fallback(texts, encoder)
        raise ValueError(
            f"encoder {encoder!r} is not the bundled static encoder {self.name!r}; pass an embed_fn for it"
        )


def load_static_encoder(
    vectors_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str],
    *,
    max_tokens: int,
    name: str = "minilm-static",
    fallback: EmbedFn | None = None,
) -> StaticEmbedder:
    """Build a static encoder's ``embed_fn`` from its files (see :data:`STATIC_VECTORS_FILE`).

    Args:
        vectors_path: The ``.npz`` holding ``vectors`` (read with ``allow_pickle=False``).
        tokenizer_path: The ``tokenizer.json``.
        max_tokens: Tokens read per text (as when the router was fitted).
        name: The encoder name.
        fallback: See :class:`StaticEmbedder`.

    Raises:
        ValueError: for a missing or malformed file (the message names it).
        ImportError: if the ``tokenizers`` package is not installed.
    """
    path = Path(vectors_path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise ValueError("it is a bare .npy array, not an .npz archive")
        with loaded:
            vectors = np.asarray(loaded["vectors"]) if "vectors" in loaded.files else None
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: the static encoder needs its token table") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path} is not a readable static-encoder table ({exc})") from None
    if vectors is None:
        raise ValueError(f"{path} holds no 'vectors' array")
    if vectors.dtype != np.float32 or vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(
            f"{path}: 'vectors' must be a finite float32 (vocab, d) array, got {vectors.dtype} {vectors.shape}"
        )
    tok = static_tokenizer(tokenizer_path, max_tokens)
    if tok.get_vocab_size() > len(vectors):
        raise ValueError(
            f"{tokenizer_path} has {tok.get_vocab_size()} tokens but {path} only {len(vectors)} vectors; "
            "they are not from the same encoder"
        )
    return StaticEmbedder(vectors, tok, name=name, fallback=fallback)


# ---------------------------------------------------------------------------------------------- heads
def linear_head(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Per-model logistic regression: ``sigmoid(x @ weights.T + bias)``: (n, d) x (m, d) -> (n, m)."""
    return sigmoid(np.asarray(x, dtype=np.float64) @ np.asarray(weights, dtype=np.float64).T + bias)


def knn_head(
    x: np.ndarray,
    train_x: np.ndarray,
    train_quality: np.ndarray,
    k: int,
    prior: np.ndarray,
    prior_weight: float,
    temperature: float,
) -> np.ndarray:
    """Similarity-weighted per-model quality of the ``k`` nearest train prompts (cosine similarity).

    Weights are ``exp((sim - max_sim) / temperature)`` over the k nearest (the nearest weighs 1), and the
    estimate is shrunk towards ``prior`` (per-model mean quality) with ``prior_weight`` pseudo-neighbours.

    Args:
        x: Query features (n, d), L2-normalised (cosine = dot product).
        train_x: Train features (N, d), L2-normalised.
        train_quality: Train scores (N, m).
        k: Neighbours per query.
        prior: Per-model prior quality (m,).
        prior_weight: Pseudo-count of the prior.
        temperature: Softness of the similarity weighting (small = sharper).
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.empty((len(x), train_quality.shape[1]))
    k = int(min(k, len(train_x)))
    for start in range(0, len(x), 1024):  # chunks bound the memory of the similarity matrix
        sim = x[start : start + 1024] @ train_x.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, idx, axis=1).astype(np.float64)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)  # the nearest neighbour weighs 1
        num = np.einsum("nk,nkm->nm", w, train_quality[idx]) + prior_weight * prior
        out[start : start + 1024] = num / (w.sum(axis=1, keepdims=True) + prior_weight)
    return out


def mf_head(x: np.ndarray, projection: np.ndarray, model_vectors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Matrix factorisation: ``sigmoid((x @ projection.T) @ model_vectors.T + bias)`` -> (n, m)."""
    z = (np.asarray(x, dtype=np.float64) @ projection.T) @ model_vectors.T + bias
    return sigmoid(z)


def category_table_head(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Look up per-category rows of a (n_categories + 1, m) table (last row = unknown category)."""
    return np.asarray(table, dtype=np.float64)[rows]


def match_rules(
    prompts: Sequence[str], categories: Sequence[str] | None, rules: Sequence[dict[str, Any]]
) -> np.ndarray:
    """Index of the first rule each prompt matches, ``len(rules)`` (the default) when none does.

    A rule matches when ALL its conditions hold: ``min_chars`` / ``max_chars`` (prompt length),
    ``keywords`` (any of them, case-insensitive substring), ``regex`` (``re.search``, case-insensitive),
    ``categories`` (the request's category is one of them; never matches when the request has none).
    """
    compiled = [re.compile(r["regex"], re.IGNORECASE) if r.get("regex") else None for r in rules]
    out = np.full(len(prompts), len(rules), dtype=int)
    for i, prompt in enumerate(prompts):
        text = str(prompt)
        low = text.lower()
        cat = None if categories is None else str(categories[i])
        for j, rule in enumerate(rules):
            if "min_chars" in rule and len(text) < rule["min_chars"]:
                continue
            if "max_chars" in rule and len(text) > rule["max_chars"]:
                continue
            if rule.get("keywords") and not any(k.lower() in low for k in rule["keywords"]):
                continue
            if compiled[j] is not None and not compiled[j].search(text):
                continue
            if rule.get("categories") and (cat is None or cat not in rule["categories"]):
                continue
            out[i] = j
            break
    return out


def rules_head(matched: np.ndarray, segment_of_rule: np.ndarray, segment_quality: np.ndarray) -> np.ndarray:
    """Quality per prompt = the table row of the segment its matched rule (or the default) belongs to."""
    return np.asarray(segment_quality, dtype=np.float64)[segment_of_rule[matched]]


def token_cost_head(
    chars: np.ndarray,
    x: np.ndarray,
    in_tokens: np.ndarray,
    out_weights: np.ndarray,
    out_bias: np.ndarray,
    prices: np.ndarray,
) -> np.ndarray:
    """Per (prompt, model) dollars from predicted tokens (CARROT-style cost model).

    ``input_tokens = in_tokens[:, 0] + in_tokens[:, 1] * chars`` (per model affine in prompt length);
    ``output_tokens = max(0, x @ out_weights.T + out_bias)`` (ridge regression on features);
    ``cost = input_tokens * prices[:, 0] + output_tokens * prices[:, 1] + prices[:, 2]`` (per request fee).
    """
    chars = np.asarray(chars, dtype=np.float64)[:, None]
    tin = in_tokens[:, 0] + in_tokens[:, 1] * chars
    tout = np.maximum(np.asarray(x, dtype=np.float64) @ out_weights.T + out_bias, 0.0)
    return np.maximum(tin * prices[:, 0] + tout * prices[:, 1] + prices[:, 2], 0.0)


def unit_hash(prompts: Sequence[str], seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per prompt, stable across processes and machines (seeded blake2b)."""
    out = np.empty(len(prompts))
    for i, p in enumerate(prompts):
        h = hashlib.blake2b(f"{seed}\x00{p}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2.0**64
    return out


def random_mix_choice(u: np.ndarray, lam: float, break_even: float, weak: int, strong: int) -> np.ndarray:
    """Strong iff ``u < lam / (lam + break_even)``: the strong share rises from 0 to 1 with ``lam``."""
    share = lam / (lam + break_even) if lam > 0 else 0.0
    return np.where(u < share, strong, weak)


# ---------------------------------------------------------------------------------------------- adaptive
# The adaptive router (routers/strategies/adaptive.py) fits a per-category prior; everything that turns that
# prior plus live feedback into decisions is here, shared by the workbench router, its replay and an export.


def posterior_head(
    rows: np.ndarray, prior_rate: np.ndarray, evidence: np.ndarray, prior_strength: float
) -> np.ndarray:
    """Posterior mean success per (request, model): ``(k * prior + s) / (k + s + f)`` for each request's row.

    Args:
        rows: Category row per request (the last row = unknown category).
        prior_rate: Prior success per (row, model), shape (G, m).
        evidence: Discounted (successes, failures) per (row, model), shape (G, m, 2).
        prior_strength: ``k``, the prior's weight in observations.
    """
    s, f = evidence[rows, :, 0], evidence[rows, :, 1]
    return (prior_strength * prior_rate[rows] + s) / (prior_strength + s + f)


def apply_feedback(
    evidence: np.ndarray,
    row: int | np.ndarray,
    model: int | np.ndarray,
    score: float | np.ndarray,
    forgetting: float,
) -> None:
    """In place: fade all evidence in ``row`` by ``forgetting``, then count ``score`` for ``model``.

    ``score`` adds to the successes and ``1 - score`` to the failures. ``row``, ``model`` and ``score`` are
    scalars (one feedback), or equal-length arrays whose rows are distinct (one feedback per row at once; the
    replay updates the evidence of every operating point in one call).
    """
    evidence[row] *= forgetting
    evidence[row, model, 0] += score
    evidence[row, model, 1] += 1.0 - score


def explore_choice(
    posterior: np.ndarray, prior: np.ndarray, cost: np.ndarray, lam: float, u: np.ndarray, explore: float
) -> np.ndarray:
    """The adaptive decision: :func:`decide` on ``posterior``; where ``u < explore``, on ``prior``.

    ``u`` is one uniform draw per request (:func:`unit_hash` of its prompt), so a request explores (goes to
    the model the prior would pick, re-trying a model the posterior has backed off from) or not as a pure
    function of its text: the same in the workbench, its replay and an export.
    """
    choice = decide(posterior, cost, lam)
    prior_pick = decide(prior, cost, lam)
    return np.where(u < explore, prior_pick, choice)


def check_feedback(model: Any, score: Any, models: Sequence[str]) -> tuple[int, float]:
    """Validate one feedback: ``(index of model, score as a float)``.

    Raises:
        ValueError: for a model that is not one of ``models``, or a score that is not a number in [0, 1].
    """
    models = tuple(models)
    if not isinstance(model, str) or model not in models:
        raise ValueError(f"feedback for unknown model {model!r}; models: {', '.join(models)}")
    if isinstance(score, (bool, np.bool_)) or not isinstance(score, (int, float, np.integer, np.floating)):
        raise ValueError(f"feedback score must be a number in [0, 1], got {score!r}")
    value = float(score)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"feedback score must be in [0, 1], got {score!r}")
    return models.index(model), value


def evidence_to_dict(
    evidence: np.ndarray, categories: Sequence[str], models: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """The evidence as JSON-able ``{category: {model: [successes, failures]}}`` ("" = unknown category)."""
    return {
        c: {m: [float(v) for v in evidence[i, j]] for j, m in enumerate(models)} for i, c in enumerate(categories)
    }


def evidence_from_dict(
    state: dict[str, dict[str, Sequence[float]]] | str | bytes, categories: Sequence[str], models: Sequence[str]
) -> np.ndarray:
    """Evidence array (G, m, 2) from :func:`evidence_to_dict` output (a dict or its JSON text).

    Categories or models left out have no evidence (their prior alone).

    Raises:
        ValueError: for invalid JSON, an unknown category or model, or counts that are not two finite numbers
            >= 0.
    """
    categories, models = list(categories), list(models)
    if isinstance(state, (str, bytes)):
        try:
            state = json.loads(state)
        except ValueError as exc:
            raise ValueError(f"adaptive state is not valid JSON ({exc})") from None
    if not isinstance(state, dict):
        raise ValueError(
            f"adaptive state must be {{category: {{model: [successes, failures]}}}}, got {type(state).__name__}"
        )
    out = np.zeros((len(categories), len(models), 2))
    for c, per_model in state.items():
        if c not in categories:
            raise ValueError(f"state has unknown category {c!r}; categories: {categories}")
        if not isinstance(per_model, dict):
            raise ValueError(f"state[{c!r}] must be {{model: [successes, failures]}}, got {per_model!r}")
        for m, sf in per_model.items():
            if m not in models:
                raise ValueError(f"state has unknown model {m!r} in category {c!r}; models: {models}")
            try:
                vals = np.asarray(sf, dtype=float)
            except (TypeError, ValueError):
                vals = np.full(1, np.nan)
            if vals.shape != (2,) or not np.isfinite(vals).all() or (vals < 0).any():
                raise ValueError(f"state[{c!r}][{m!r}] must be [successes, failures] >= 0, got {sf!r}")
            out[categories.index(c), models.index(m)] = vals
    return out


class FeedbackState:
    """The live state of an adaptive router: its prior, and the evidence feedback adds, behind a lock.

    Every method is thread-safe: a feedback and a decision never see half an update. The evidence lives in
    this object's memory only (each process keeps its own); :meth:`get_evidence` / :meth:`set_evidence`
    move it between processes as JSON.

    Args:
        meta: ``models``, ``categories`` (the known ones; the unknown-category row comes last),
            ``prior_strength``, ``forgetting``, ``explore``, ``seed``.
        arrays: ``prior_rate`` (G, m), ``evidence`` (G, m, 2; copied, never written to) and
            ``cost_per_model`` (m,), with G = number of categories + 1.

    Raises:
        ValueError: for parameters out of range or arrays whose shapes disagree with the categories and models.
    """

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.models: tuple[str, ...] = tuple(str(m) for m in meta["models"])
        self.categories: tuple[str, ...] = (*(str(c) for c in meta["categories"]), "")
        self.prior_strength = float(meta["prior_strength"])
        self.forgetting = float(meta["forgetting"])
        self.explore = float(meta["explore"])
        self.seed = int(meta["seed"])
        if not self.prior_strength > 0 or not 0 < self.forgetting <= 1 or not 0 <= self.explore < 1:
            raise ValueError(
                "adaptive state needs prior_strength > 0, forgetting in (0, 1] and explore in [0, 1), got "
                f"{self.prior_strength!r}, {self.forgetting!r}, {self.explore!r}"
            )
        shape = (len(self.categories), len(self.models))
        self.prior_rate = np.asarray(arrays["prior_rate"], dtype=float)
        self.cost = np.asarray(arrays["cost_per_model"], dtype=float)
        evidence = np.array(arrays["evidence"], dtype=float)  # a private copy: feedback writes to it
        if self.prior_rate.shape != shape or evidence.shape != (*shape, 2) or self.cost.shape != shape[1:]:
            raise ValueError(
                f"adaptive state arrays disagree with its {shape[0] - 1} categories and {shape[1]} models: "
                f"prior_rate {self.prior_rate.shape}, evidence {evidence.shape}, "
                f"cost_per_model {self.cost.shape} (expected {shape}, {(*shape, 2)}, {shape[1:]})"
            )
        if not np.isfinite(evidence).all() or (evidence < 0).any():
            raise ValueError("adaptive state evidence must be finite counts >= 0")
        self._evidence = evidence
        self._lock = threading.Lock()
        self.n_feedback = 0
        """Feedbacks applied since this object was built (or its evidence last set)."""

    def rows(self, categories: Sequence[str] | None, n: int) -> np.ndarray:
        """Category row per request; the last (unknown) row for an unseen or empty category, or none."""
        return category_index(categories, self.categories[:-1], n)

    def posterior(self, rows: np.ndarray) -> np.ndarray:
        """:func:`posterior_head` of the current evidence for these rows, shape (n, m)."""
        with self._lock:
            return posterior_head(rows, self.prior_rate, self._evidence, self.prior_strength)

    def choose(self, prompts: Sequence[str], categories: Sequence[str] | None, lam: float) -> np.ndarray:
        """Index of the chosen model per prompt at ``lam`` (:func:`explore_choice` on the current evidence)."""
        rows = self.rows(categories, len(prompts))
        u = unit_hash(prompts, self.seed)
        return explore_choice(self.posterior(rows), self.prior_rate[rows], self.cost, lam, u, self.explore)

    def feedback(self, category: str | None, model: str, score: float) -> None:
        """Count one answer's quality: :func:`apply_feedback` in the request's category row.

        Args:
            category: The request's category; None, "" or an unseen one counts for the unknown category.
            model: The model that answered (one of ``models``).
            score: Its quality in [0, 1] (1 = success).

        Raises:
            ValueError: for an unknown model or a score that is not a number in [0, 1] (nothing is counted).
        """
        j, value = check_feedback(model, score, self.models)
        g = int(self.rows([category or ""], 1)[0])
        with self._lock:
            apply_feedback(self._evidence, g, j, value, self.forgetting)
            self.n_feedback += 1

    @property
    def evidence(self) -> np.ndarray:
        """A copy of the current evidence, shape (G, m, 2)."""
        with self._lock:
            return self._evidence.copy()

    def get_evidence(self) -> dict[str, dict[str, list[float]]]:
        """The current evidence as JSON-able ``{category: {model: [successes, failures]}}`` ("" = unknown)."""
        with self._lock:
            return evidence_to_dict(self._evidence, self.categories, self.models)

    def set_evidence(self, state: dict[str, dict[str, Sequence[float]]] | str | bytes) -> None:
        """Replace the evidence with :meth:`get_evidence` output (a dict or its JSON text); see
        :func:`evidence_from_dict` for what is refused (then nothing changes)."""
        new = evidence_from_dict(state, self.categories, self.models)
        with self._lock:
            self._evidence = new
            self.n_feedback = 0

    def reset_evidence(self) -> None:
        """Forget all feedback (including evidence the state was built with): back to the prior alone."""
        with self._lock:
            self._evidence = np.zeros_like(self._evidence)
            self.n_feedback = 0


# ---------------------------------------------------------------------------------------------- loaded router
class LoadedRouter:
    """A fitted router rebuilt from its state: the same decisions as the workbench router it came from.

    Args:
        meta: JSON-able parameters (``kind``, ``models``, ``encoder``, ...).
        arrays: Named numpy arrays.
        embed_fn: ``(texts, encoder) -> (n, d)``; used for encoder names this module does not compute itself.
    """

    def __init__(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], embed_fn: EmbedFn | None = None
    ) -> None:
        if meta.get("format", STATE_FORMAT) != STATE_FORMAT:
            raise ValueError(
                f"router state format {meta.get('format')} is not supported (expected {STATE_FORMAT})"
            )
        if meta.get("kind") not in KINDS:
            raise ValueError(f"unknown router state kind {meta.get('kind')!r}; known: {sorted(KINDS)}")
        self.meta = meta
        self.arrays = arrays
        self.kind: str = meta["kind"]
        self.models: tuple[str, ...] = tuple(meta["models"])
        self.embed_fn = embed_fn
        # The learned text rule of an embedding router (None: embed prompts as given); see "text selection".
        self.text_selection: dict[str, Any] | None = (
            check_text_selection(meta["text_selection"]) if meta.get("text_selection") is not None else None
        )
        self._parts = [
            LoadedRouter(pm, _sub_arrays(arrays, f"p{i}."), embed_fn)
            for i, pm in enumerate(meta.get("parts", []))
        ]
        # Kind "adaptive": the live posterior, changed by feedback (see the "adaptive" section).
        self._live: FeedbackState | None = FeedbackState(meta, arrays) if self.kind == "adaptive" else None
        # Kind "provider": live latencies (seconds) and failing arms, set by the proxy's telemetry.
        self.live_latency_s: dict[str, float] = {}
        self.live_down: frozenset[str] = frozenset()

    def set_live(self, latency_s: dict[str, float], down: Sequence[str] = ()) -> None:
        """Kind ``provider``: the live typical latency of arms (replacing the price table's figures for them)
        and the arms currently failing; an arm left out keeps its exported latency."""
        self.live_latency_s, self.live_down = dict(latency_s), frozenset(down)

    # ------------------------------------------------------------------ feedback (kind "adaptive")
    def _adaptive(self) -> FeedbackState:
        if self._live is None:
            raise ValueError(
                f"a router state of kind {self.kind!r} does not learn from feedback (only kind 'adaptive' does)"
            )
        return self._live

    def feedback(self, category: str | None, model: str, score: float) -> None:
        """Count the quality of one answer (kind ``adaptive``); thread-safe. See :meth:`FeedbackState.feedback`.

        Args:
            category: The request's category; None, "" or an unseen one counts for the unknown category.
            model: The model that answered.
            score: Its quality in [0, 1] (1 = success).

        Raises:
            ValueError: for another kind, an unknown model, or a score that is not a number in [0, 1].
        """
        self._adaptive().feedback(category, model, score)

    def get_evidence(self) -> dict[str, dict[str, list[float]]]:
        """Kind ``adaptive``: the live evidence as JSON-able ``{category: {model: [successes, failures]}}``."""
        return self._adaptive().get_evidence()

    def set_evidence(self, state: dict[str, dict[str, Sequence[float]]] | str | bytes) -> None:
        """Kind ``adaptive``: replace the live evidence (:meth:`get_evidence` output, or the workbench router's
        ``get_state()``, as a dict or JSON text). Raises ValueError for state that does not fit."""
        self._adaptive().set_evidence(state)

    def reset_evidence(self) -> None:
        """Kind ``adaptive``: forget all feedback, including the evidence the export was written with."""
        self._adaptive().reset_evidence()

    # ------------------------------------------------------------------ features
    def features(self, prompts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        """The feature matrix this router's head reads: embeddings of the selected text (:func:`select_text`),
        then one-hot categories if used."""
        x = featurise(select_text(prompts, self.text_selection), self.meta["encoder"], self.embed_fn)
        if self.meta.get("use_category"):
            one_hot = category_one_hot(categories, self.meta["categories"], len(prompts))
            x = np.hstack([x, one_hot * np.float32(self.meta.get("category_scale", 1.0))])
        if self.meta.get("normalise"):  # cosine similarity = dot product (kNN)
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    # ------------------------------------------------------------------ predictions
    def predict_quality(
        self, prompts: Sequence[str], categories: Sequence[str] | None = None, *, x: np.ndarray | None = None
    ) -> np.ndarray:
        """Predicted quality per (prompt, model), shape (n, m): the quality head of its kind (:data:`KINDS`)."""
        prompts = _as_list(prompts)
        kind = KINDS[self.kind]
        if kind.reads_features and x is None:
            x = self.features(prompts, categories)
        return kind.quality(self, prompts, categories, x)

    def predict_cost(
        self, prompts: Sequence[str], categories: Sequence[str] | None = None, *, x: np.ndarray | None = None
    ) -> np.ndarray:
        """Predicted dollars per (prompt, model), shape (n, m)."""
        prompts = _as_list(prompts)
        n, a = len(prompts), self.arrays
        cost = self.meta.get("cost", {"kind": "constant"})
        if cost["kind"] == "tokens":
            if x is None:
                x = self.features(prompts, categories)
            chars = np.array([len(p) for p in prompts], dtype=float)
            return token_cost_head(chars, x, a["in_tokens"], a["out_weights"], a["out_bias"], a["prices"])
        if cost.get("per_category"):
            rows = category_index(categories, cost["categories"], n)
            return category_table_head(rows, a["cost_table"])
        return np.broadcast_to(a["cost_per_model"], (n, len(self.models))).astype(float)

    def route_indices(
        self, prompts: Sequence[str], lam: float, categories: Sequence[str] | None = None
    ) -> np.ndarray:
        """Index into ``models`` of the chosen model per prompt at operating point ``lam``.

        :func:`decide` on the predicted quality and cost, unless the kind decides otherwise (``choose`` in
        :data:`KINDS`: a single model, a random mix, the adaptive posterior, pinned rules).
        """
        prompts = _as_list(prompts)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
        kind = KINDS[self.kind]
        if kind.choose is not None:
            return kind.choose(self, prompts, categories, lam)
        return self.decide(prompts, categories, lam)

    def decide(self, prompts: list[str], categories: Sequence[str] | None, lam: float) -> np.ndarray:
        """:func:`decide` on this router's predicted quality and cost (features computed once for both)."""
        x = self.features(prompts, categories) if KINDS[self.kind].reads_features else None
        return decide(
            self.predict_quality(prompts, categories, x=x), self.predict_cost(prompts, categories, x=x), lam
        )

    def route(
        self, prompts: Sequence[str] | str, lam: float, categories: Sequence[str] | None = None
    ) -> list[str] | str:
        """Model name per prompt (a single name when given a single prompt string)."""
        single = isinstance(prompts, str)
        cats = [categories] if single and isinstance(categories, str) else categories
        idx = self.route_indices(_as_list(prompts), lam, cats)
        names = [self.models[i] for i in idx]
        return names[0] if single else names


# ---------------------------------------------------------------------------------------------- kinds
# The dispatch from ``meta["kind"]`` to its quality head (and, for a few kinds, its own choice rule), with the
# arrays each kind needs. A quality head is ``(router, prompts, categories, features or None) -> (n, m)``.


def _constant_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    return np.broadcast_to(r.arrays["quality_prior"], (len(prompts), len(r.models))).astype(float)


def _adaptive_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    live = r._adaptive()
    return live.posterior(live.rows(cats, len(prompts)))


def _category_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    rows = category_index(cats, r.meta["categories"], len(prompts))
    return category_table_head(rows, r.arrays["quality_table"])


def _rules_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    matched = match_rules(prompts, cats, r.meta["rules"])
    return rules_head(matched, r.arrays["segment_of_rule"], r.arrays["segment_quality"])


#: The state fields that define a router's features (:meth:`LoadedRouter.features`).
_FEATURE_FIELDS = ("encoder", "use_category", "categories", "category_scale", "normalise", "text_selection")


def _blend_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    w = np.asarray(r.meta["weights"], dtype=float)
    feats: dict[str, np.ndarray] = {}  # parts on the same features compute them once
    total = np.zeros((len(prompts), len(r.models)))
    for wi, part in zip(w, r._parts, strict=True):
        # Every meta field LoadedRouter.features reads (a kNN member normalises and scales its categories).
        key = json.dumps([part.meta.get(k) for k in _FEATURE_FIELDS], sort_keys=True)
        if part.meta.get("encoder") and key not in feats:
            feats[key] = part.features(prompts, cats)
        total += wi * part.predict_quality(prompts, cats, x=feats.get(key))
    return total / w.sum()


def _linear_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    return linear_head(x, r.arrays["weights"], r.arrays["bias"])


def _knn_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    a, m = r.arrays, r.meta
    return knn_head(x, a["train_x"], a["train_quality"], m["k"], a["prior"], m["prior_weight"], m["temperature"])


def _mf_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    return mf_head(x, r.arrays["projection"], r.arrays["model_vectors"], r.arrays["bias"])


def _single_choice(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, lam: float) -> np.ndarray:
    return np.full(len(prompts), int(r.meta["model_index"]), dtype=int)


def _random_mix_choice(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, lam: float) -> np.ndarray:
    u = unit_hash(prompts, int(r.meta["seed"]))
    return random_mix_choice(u, lam, float(r.meta["break_even"]), int(r.meta["weak"]), int(r.meta["strong"]))


def provider_admissible(
    allowed: np.ndarray, latency_s: np.ndarray, max_latency_s: float | None, down: np.ndarray
) -> np.ndarray:
    """Arms a provider router may choose: allowed, not down, and within the latency bound (unknown = within).

    When none is, the fastest allowed arm(s) that are not down (or, all being down, the allowed ones): an answer
    from a slow provider beats none.
    """
    up = allowed & ~down
    if not up.any():
        up = allowed
    known = np.isfinite(latency_s)
    within = up & (True if max_latency_s is None else (~known | (latency_s <= float(max_latency_s))))
    if within.any():
        return within
    lat = np.where(up & known, latency_s, np.inf)
    return up & (lat <= lat.min()) if np.isfinite(lat.min()) else up


def _provider_mask(r: LoadedRouter) -> np.ndarray:
    p = r.meta["provider"]
    lat = np.array([r.live_latency_s.get(m, np.nan if t is None else t) for m, t in zip(r.models, p["latency_s"],
                                                                                        strict=True)], dtype=float)
    down = np.array([m in r.live_down for m in r.models])
    return provider_admissible(np.asarray(p["allowed"], dtype=bool), lat, p["max_latency_s"], down)


def _provider_quality(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, x: Any) -> np.ndarray:
    return np.where(_provider_mask(r)[None, :], _category_quality(r, prompts, cats, x), 0.0)


def _provider_choice(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, lam: float) -> np.ndarray:
    # Inadmissible arms get quality 0 and a cost above every admissible arm: never chosen at any lam.
    ok = _provider_mask(r)
    cost = np.asarray(r.meta["provider"]["cost"], dtype=float)
    c = np.where(ok, cost, cost[ok].max() * 2.0 + 1e-6)
    q = np.where(ok[None, :], _category_quality(r, prompts, cats, None), 0.0)
    return decide(q, c, lam)


def _adaptive_choice(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, lam: float) -> np.ndarray:
    return r._adaptive().choose(prompts, cats, lam)


def _rules_choice(r: LoadedRouter, prompts: list[str], cats: Sequence[str] | None, lam: float) -> np.ndarray:
    pinned = np.asarray(r.arrays["pinned_model"])[match_rules(prompts, cats, r.meta["rules"])]
    return np.where(pinned >= 0, pinned, r.decide(prompts, cats, lam))


# Array shapes: ints, or names bound once per state ("m" = number of models, "G" = categories + 1, "d" the
# feature dimension, ...); a name must take the same value in every array of a state that uses it.
Shapes = dict[str, tuple[Any, ...]]


def _rows(meta: dict[str, Any], key: str) -> int:
    return len(meta[key]) + 1  # a per-category (or per-rule) table has one more row: unknown (or default)


def _feature_dim(meta: dict[str, Any]) -> Any:
    """``d``: known for ``hash-bow`` encoders, else a name bound by the arrays."""
    enc = str(meta.get("encoder") or "")
    if enc != "hash-bow" and not enc.startswith("hash-bow-"):
        return "d"
    dim = int(enc.rsplit("-", 1)[1]) if enc != "hash-bow" else 512
    return dim + (len(meta.get("categories") or []) if meta.get("use_category") else 0)


@dataclass(frozen=True)
class Kind:
    """How a kind of state decides: its quality head, its own choice rule (else :func:`decide`), its arrays."""

    quality: Callable[[LoadedRouter, list[str], Sequence[str] | None, Any], np.ndarray]
    arrays: Callable[[dict[str, Any]], Shapes]
    """Expected shapes of the quality head's arrays, from the state's meta."""
    choose: Callable[[LoadedRouter, list[str], Sequence[str] | None, float], np.ndarray] | None = None
    reads_features: bool = False
    """Whether the quality head reads the prompt features (computed once for the quality and cost heads)."""


#: kind -> how it decides (see the module docstring's table).
KINDS: dict[str, Kind] = {
    "single": Kind(_constant_quality, lambda meta: {"quality_prior": ("m",)}, choose=_single_choice),
    "random-mix": Kind(_constant_quality, lambda meta: {"quality_prior": ("m",)}, choose=_random_mix_choice),
    "category": Kind(_category_quality, lambda meta: {"quality_table": (_rows(meta, "categories"), "m")}),
    "rules": Kind(
        _rules_quality,
        lambda meta: {
            "segment_of_rule": (_rows(meta, "rules"),),
            "segment_quality": ("segments", "m"),
            "pinned_model": (_rows(meta, "rules"),),
        },
        choose=_rules_choice,
    ),
    "linear": Kind(
        _linear_quality, lambda meta: {"weights": ("m", _feature_dim(meta)), "bias": ("m",)}, reads_features=True
    ),
    "cost-aware": Kind(
        _linear_quality, lambda meta: {"weights": ("m", _feature_dim(meta)), "bias": ("m",)}, reads_features=True
    ),
    "knn": Kind(
        _knn_quality,
        lambda meta: {"train_x": ("N", _feature_dim(meta)), "train_quality": ("N", "m"), "prior": ("m",)},
        reads_features=True,
    ),
    "mf": Kind(
        _mf_quality,
        lambda meta: {"projection": ("r", _feature_dim(meta)), "model_vectors": ("m", "r"), "bias": ("m",)},
        reads_features=True,
    ),
    "blend": Kind(_blend_quality, lambda meta: {}),  # its parts' arrays are checked part by part
    "provider": Kind(
        _provider_quality, lambda meta: {"quality_table": (_rows(meta, "categories"), "m")}, choose=_provider_choice
    ),
    "adaptive": Kind(
        _adaptive_quality,
        lambda meta: {
            "prior_rate": (_rows(meta, "categories"), "m"),
            "evidence": (_rows(meta, "categories"), "m", 2),
            "cost_per_model": ("m",),
        },
        choose=_adaptive_choice,
    ),
}


def _cost_shapes(meta: dict[str, Any]) -> Shapes:
    cost = meta.get("cost", {"kind": "constant"})
    if cost.get("kind") == "tokens":
        d = _feature_dim(meta)
        return {"in_tokens": ("m", 2), "out_weights": ("m", d), "out_bias": ("m",), "prices": ("m", 3)}
    if cost.get("per_category"):
        return {"cost_table": (_rows(cost, "categories"), "m")}
    return {"cost_per_model": ("m",)}


def check_state_arrays(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], *, prefix: str = "") -> None:
    """Check that a state has every array its kind reads, with the right shape, before any is loaded.

    Args:
        meta: The state's meta (``router.json`` ``state``).
        shapes: ``{array name: shape}`` (read from the ``.npy`` headers of ``arrays.npz``, nothing decompressed).
        prefix: The array-name prefix of a blend's part (``p0.``); used by the recursion.

    Raises:
        ValueError: naming the first array that is missing or has the wrong shape.
    """
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise ValueError(f"unknown router state kind {meta.get('kind') if isinstance(meta, dict) else meta!r}")
    if meta.get("text_selection") is not None:
        check_text_selection(meta["text_selection"], f"state {prefix or 'meta'} text_selection")
    try:
        expected = dict(KINDS[meta["kind"]].arrays(meta))
        if not prefix:  # a blend's parts have no cost head of their own
            expected.update(_cost_shapes(meta))
        bound: dict[str, int] = {"m": len(meta["models"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"state {prefix or 'meta'} lacks or has a malformed field ({exc!r})") from None
    for name, want in expected.items():
        key = prefix + name
        got = shapes.get(key)
        if got is None:
            raise ValueError(f"array {key!r} is missing (a {meta['kind']!r} state needs it)")
        ok = len(got) == len(want)
        for w, g in zip(want, got, strict=False):
            if isinstance(w, str):
                w = bound.setdefault(w, g)
            ok = ok and w == g
        if not ok:
            shown = tuple(bound.get(w, w) if isinstance(w, str) else w for w in want)
            raise ValueError(f"array {key!r} has shape {tuple(got)}, expected {shown}")
    for i, part in enumerate(meta.get("parts") or []):
        check_state_arrays(part, shapes, prefix=f"{prefix}p{i}.")


def _as_list(prompts: Sequence[str] | str) -> list[str]:
    return [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]


def _sub_arrays(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_state(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], embed_fn: EmbedFn | None = None
) -> LoadedRouter:
    """Rebuild a router from ``export_state()`` output (or from the JSON + ``.npz`` of an export folder).

    Example:
        >>> rt = load_state(*fitted_router.export_state())  # doctest: +SKIP
        >>> rt.route("What is 2+2?", lam=0.01)  # doctest: +SKIP
        'gpt-4o-mini'
    """
    return LoadedRouter(meta, {k: np.asarray(v) for k, v in arrays.items()}, embed_fn)


# ---------------------------------------------------------------------------------------------- loading a folder
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_folder(
    folder: str | os.PathLike[str], *, embed_fn: EmbedFn | None = None
) -> tuple[LoadedRouter, float]:
    """Load an export folder with this module alone: numpy, plus ``tokenizers`` for a bundled static encoder.

    For where RouteLab is not installed (with it, use ``routers.export.load_exported``, which also checks that
    ``runtime.py`` is RouteLab's own). The sha256 that ``router.json`` records for each file must match: this
    detects damage, not tampering (whoever can edit the folder can edit ``router.json``), so review the
    folder's ``runtime.py`` before running it.

    Args:
        folder: The export folder.
        embed_fn: Embeddings for an encoder the folder does not bundle (e.g. sentence-transformers ``minilm``).

    Returns:
        ``(router, lam)``: the loaded router and the operating point it was exported at, so that
        ``router.route(prompts, lam)`` decides as the export does.

    Raises:
        ValueError: for a missing, changed or malformed file (the message names it).
    """
    root = Path(folder)
    mpath = root / "router.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{mpath} is missing: {root} is not a RouteLab export folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{mpath} is not valid JSON ({exc})") from None
    files = manifest.get("files") or {}
    bundled = manifest.get("bundled_encoder") or {}
    needed = ["arrays.npz"] + ([bundled.get("vectors"), bundled.get("tokenizer")] if bundled else [])
    for name in needed:
        if name not in files:
            raise ValueError(f"{mpath} records no sha256 for {name!r}; re-export the router")
    for name, recorded in files.items():
        if not isinstance(name, str) or name != Path(name).name or name.startswith("."):
            raise ValueError(f"{mpath} lists {name!r}, which is not a plain file name of the folder")
        path = root / name
        if not path.is_file():
            raise ValueError(f"{path} is missing; re-export the router")
        if sha256_file(path) != recorded:
            raise ValueError(f"{path} does not match the sha256 recorded in router.json; refusing to load it")
    if not zipfile.is_zipfile(root / "arrays.npz"):
        raise ValueError(f"{root / 'arrays.npz'} is not a zip archive (an .npz file)")
    try:
        with np.load(root / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{root / 'arrays.npz'} is not a readable .npz without pickles ({exc})") from None
    check_state_arrays(manifest["state"], {k: v.shape for k, v in arrays.items()})
    if bundled:
        if bundled.get("kind") != "static":
            raise ValueError(f"{mpath}: bundled encoder kind {bundled.get('kind')!r} is not supported")
        embed_fn = load_static_encoder(
            root / bundled["vectors"],
            root / bundled["tokenizer"],
            max_tokens=int(bundled["max_tokens"]),
            name=str(bundled["name"]),
            fallback=embed_fn,
        )
    return load_state(manifest["state"], arrays, embed_fn), float(manifest["operating_point"]["lam"])
