"""The inference math of every exportable router: numpy and the standard library only.

This one file is what an exported router folder runs, copied verbatim, and it is also what the workbench's
strategies call in their ``predict_quality`` / ``predict_cost``: so an exported router makes exactly the
decisions that were measured. Fitting lives in ``routers/strategies/``; here is only the arithmetic that turns
a fitted *state* into decisions.

A state is ``(meta, arrays)``: ``meta`` a JSON-able dict (``kind``, ``models``, ``encoder``, ...), ``arrays``
a ``dict[str, np.ndarray]`` (saved as ``.npz``; no pickle). :func:`load_state` turns it into a
:class:`LoadedRouter` with ``predict_quality``, ``predict_cost`` and ``route``.

Kinds (``meta["kind"]``) and their heads:

==============  ========================================================================================
kind            quality head
==============  ========================================================================================
single          constant: one model answers everything (the knob does not move it)
random-mix      constant; the strong model is called with probability ``lam / (lam + lam_break_even)``
category        :func:`category_table_head`: per-category table of per-model quality
rules           :func:`rules_head`: first matching rule -> a segment table row, or a pinned model
linear          :func:`linear_head`: per-model logistic regression on features
knn             :func:`knn_head`: similarity-weighted quality of the k nearest train prompts
mf              :func:`mf_head`: sigmoid(<W x, v_m> + b_m) (matrix factorisation)
blend           weighted mean of the quality of several sub-states (``meta["parts"]``)
==============  ========================================================================================

Cost heads (``meta["cost"]["kind"]``): ``constant`` (per model, optionally per category) or ``tokens``
(:func:`token_cost_head`: predicted input and output tokens times per-model prices).

Featurisation (:func:`featurise`): ``encoder`` names a sentence encoder. ``hash-bow`` / ``hash-bow-<dim>``
is a hashing bag of words computed here (no model, no dependency); any other name is resolved by
``routers.embeddings.embed`` when the workbench is importable, else by the ``embed_fn`` given to
:func:`load_state` (the export folder passes its own).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LoadedRouter",
    "category_one_hot",
    "category_table_head",
    "decide",
    "featurise",
    "hash_bow",
    "knn_head",
    "linear_head",
    "load_state",
    "match_rules",
    "mf_head",
    "random_mix_choice",
    "rules_head",
    "sigmoid",
    "token_cost_head",
    "unit_hash",
]

STATE_FORMAT = 1
EmbedFn = Callable[[Sequence[str], str], np.ndarray]


# ---------------------------------------------------------------------------------------------- decision
def decide(quality_hat: np.ndarray, cost_hat: np.ndarray, lam: float) -> np.ndarray:
    """The base decision rule: per row, ``argmax lam * quality_hat - cost_hat``, ties to the cheaper model.

    Args:
        quality_hat: Predicted quality, shape (n, m).
        cost_hat: Predicted cost in dollars, shape (n, m).
        lam: Operating point (>= 0): dollars per request one pays for +1.0 of expected quality.

    Returns:
        Column indices, shape (n,).
    """
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
    utility = lam * quality_hat - cost_hat
    best = utility.max(axis=1, keepdims=True)
    # Relative tolerance so that float noise never flips a tie; among ties the cheapest wins.
    tol = 1e-12 * (np.abs(best) + lam + 1.0)
    tied = utility >= best - tol
    # Among ties: the cheapest, then the better one (what lam slightly above 0 would pick), then the first.
    tied_cost = np.where(tied, cost_hat, np.inf)
    cheapest = tied & (
        tied_cost <= tied_cost.min(axis=1, keepdims=True) + 1e-12 * (np.abs(cost_hat).max() + 1.0)
    )
    return np.where(cheapest, -quality_hat, np.inf).argmin(axis=1)


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
        if meta.get("kind") not in _KINDS:
            raise ValueError(f"unknown router state kind {meta.get('kind')!r}; known: {sorted(_KINDS)}")
        self.meta = meta
        self.arrays = arrays
        self.kind: str = meta["kind"]
        self.models: tuple[str, ...] = tuple(meta["models"])
        self.embed_fn = embed_fn
        self._parts = [
            LoadedRouter(pm, _sub_arrays(arrays, f"p{i}."), embed_fn)
            for i, pm in enumerate(meta.get("parts", []))
        ]

    # ------------------------------------------------------------------ features
    def features(self, prompts: Sequence[str], categories: Sequence[str] | None = None) -> np.ndarray:
        """The feature matrix this router's head reads: embeddings, then one-hot categories if used."""
        x = featurise(prompts, self.meta["encoder"], self.embed_fn)
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
        """Predicted quality per (prompt, model), shape (n, m)."""
        prompts = _as_list(prompts)
        a, n = self.arrays, len(prompts)
        kind = self.kind
        if kind in ("single", "random-mix"):
            return np.broadcast_to(a["quality_prior"], (n, len(self.models))).astype(float)
        if kind == "category":
            rows = category_index(categories, self.meta["categories"], n)
            return category_table_head(rows, a["quality_table"])
        if kind == "rules":
            matched = match_rules(prompts, categories, self.meta["rules"])
            return rules_head(matched, a["segment_of_rule"], a["segment_quality"])
        if kind == "blend":
            w = np.asarray(self.meta["weights"], dtype=float)
            feats: dict[tuple[str, bool], np.ndarray] = {}
            total = np.zeros((n, len(self.models)))
            for wi, part in zip(w, self._parts, strict=True):
                key = (part.meta.get("encoder", ""), bool(part.meta.get("use_category")))
                if part.meta.get("encoder") and key not in feats:
                    feats[key] = part.features(prompts, categories)
                total += wi * part.predict_quality(prompts, categories, x=feats.get(key))
            return total / w.sum()
        if x is None:
            x = self.features(prompts, categories)
        if kind in ("linear", "cost-aware"):
            return linear_head(x, a["weights"], a["bias"])
        if kind == "knn":
            m = self.meta
            return knn_head(
                x, a["train_x"], a["train_quality"], m["k"], a["prior"], m["prior_weight"], m["temperature"]
            )
        if kind == "mf":
            return mf_head(x, a["projection"], a["model_vectors"], a["bias"])
        raise ValueError(f"no quality head for kind {kind!r}")  # pragma: no cover - guarded in __init__

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
        """Index into ``models`` of the chosen model per prompt at operating point ``lam``."""
        prompts = _as_list(prompts)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
        n = len(prompts)
        if self.kind == "single":
            return np.full(n, int(self.meta["model_index"]), dtype=int)
        if self.kind == "random-mix":
            u = unit_hash(prompts, int(self.meta["seed"]))
            return random_mix_choice(
                u, lam, float(self.meta["break_even"]), int(self.meta["weak"]), int(self.meta["strong"])
            )
        x = None
        if self.meta.get("encoder") and self.kind != "blend" and (self.kind != "category"):
            x = self.features(prompts, categories)  # computed once for both heads
        choice = decide(
            self.predict_quality(prompts, categories, x=x), self.predict_cost(prompts, categories, x=x), lam
        )
        if self.kind == "rules":
            pinned = np.asarray(self.arrays["pinned_model"])[
                match_rules(prompts, categories, self.meta["rules"])
            ]
            choice = np.where(pinned >= 0, pinned, choice)
        return choice

    def route(
        self, prompts: Sequence[str] | str, lam: float, categories: Sequence[str] | None = None
    ) -> list[str] | str:
        """Model name per prompt (a single name when given a single prompt string)."""
        single = isinstance(prompts, str)
        cats = [categories] if single and isinstance(categories, str) else categories
        idx = self.route_indices(_as_list(prompts), lam, cats)
        names = [self.models[i] for i in idx]
        return names[0] if single else names


_KINDS = {"single", "random-mix", "category", "rules", "linear", "knn", "mf", "cost-aware", "blend"}


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
