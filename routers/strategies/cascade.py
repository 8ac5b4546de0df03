"""A cascade: call the cheapest model first and escalate while the answer looks unreliable.

FrugalGPT (Chen, Zaharia & Zou, 2023, "FrugalGPT: How to Use Large Language Models While Reducing Cost and
Improving Performance") chains models from cheap to dear; after each call a scorer rates the answer and the
cascade stops as soon as the rating clears that stage's threshold. AutoMix (Madaan et al., 2023) does the same
with a self-verification signal. Here:

* **The chain** (``models``): cheapest -> dearest. By default it is chosen on train: every chain of at most
  ``max_stages`` models that ends at the best one, with earlier stages from the (mean cost, mean quality)
  upper hull plus the three best models off it (a second opinion that agrees with the first answer is a strong
  signal), is scored by the mean over budgets of the best in-sample quality within budget, and the best chain
  wins (FrugalGPT searches model lists the same way, on train).
* **The confidence signal** is read from the recorded answer text (the ``response`` column), so the cascade
  replays offline: whether an answer (option letter or number) could be extracted, whether the answer text
  changes its mind, its length, hedging words, the model's train accuracy in the prompt's category (its
  prior), and, from the second stage on, whether it agrees with the answers already bought from the cheaper
  stages (cheap self-consistency). Per stage logistic regressions map these to ``P(this answer is right)``
  (``conf_k``) and to ``P(stage j's answer is right)`` for every later stage ``j`` (``p_kj``).
* **The knob** is the shared operating point ``lam`` (dollars per request one pays for +1.0 expected
  quality). At stage ``k`` the cascade escalates iff, for some later stage ``j``,
  ``lam * (p_kj - conf_k) > cost of the calls k+1..j`` (mean train costs): a one-step look-ahead
  value-of-information rule that pays for the intermediate calls. For each sample and stage this holds for
  all ``lam`` above a critical value, so
  the stopping stage (and therefore the cost, which counts every call made) never decreases as ``lam`` grows;
  ``lam = 0`` never escalates (the cheapest model answers everything).

The decision needs the cheap model's *answer*, so the cascade cannot route from the prompt alone:
:meth:`CascadeRouter.route_with_answers` runs it live with a callback per stage (what a proxy would do), and
:meth:`CascadeRouter.policy` replays it from an OutcomeTable's recorded responses.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from evals.exceptions import ConfigError, SchemaError
from evals.outcomes import OutcomeTable
from routers.base import Policy, Queries, Router
from routers.registry import register_router

__all__ = ["CascadePolicy", "CascadeRouter", "CascadeTrace", "answer_features", "extract_answer"]

# "The answer is (C)", "answer: C", "**Answer:** (C)": the MMLU-style harness phrasings.
_LETTER_RES = (
    re.compile(r"answer is:?\s*\**\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"answer:?\**\s*\(?([A-J])\)(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"answer:\s*\**\s*\(?([A-J])(?![A-Za-z])", re.IGNORECASE),
)
_NUMBER_RES = (
    re.compile(r"####\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"answer is:?\s*\$?(-?[\d,]*\.?\d+)", re.IGNORECASE),
)
_HEDGES = re.compile(
    r"\b(not sure|unsure|uncertain|unclear|might|maybe|perhaps|possibly|probably|likely|approximately|"
    r"closest|assum\w*|however|but wait|wait|re-?evaluat\w*|mistake|cannot determine|can't determine|"
    r"none of the|not possible|guess)\b"
)  # matched against the lower-cased text (faster than IGNORECASE)
_N_TEXT_FEATURES = 6
_SECOND_OPINIONS = 3  # off-hull models also tried as intermediate stages when choosing the chain


def extract_answer(text: str) -> str:
    """The final answer stated in a response: an option letter, else a number, else "".

    Example:
        >>> extract_answer("... so the answer is (C).")
        'C'
    """
    return _answer_and_stated(text)[0]


def _answer_and_stated(text: str) -> tuple[str, set[str]]:
    """The final answer, and every option letter the text states as its answer (each pattern run once)."""
    answer, stated = "", set()
    for rx in _LETTER_RES:
        hits = rx.findall(text)
        if hits:
            answer = answer or hits[-1].upper()
            stated.update(h.upper() for h in hits)
    if not answer:
        for rx in _NUMBER_RES:
            hits = rx.findall(text)
            if hits:
                return hits[-1].replace(",", ""), stated
    return answer, stated


def answer_features(text: str, prompt: str = "") -> np.ndarray:
    """Prompt-and-answer features of one response (no prior, no agreement): shape (6,).

    ``[answer extracted, answer changes (distinct stated answers > 1), log length, log hedge count,
    hedges per 100 words, log prompt length]``.
    """
    return _features_and_answer(text, prompt)[0]


def _features_and_answer(text: str, prompt: str) -> tuple[np.ndarray, str]:
    answer, stated = _answer_and_stated(text)
    n_words = max(text.count(" ") + 1, 1)
    hedges = len(_HEDGES.findall(text.lower()))
    feats = np.array(
        [
            float(answer != ""),
            float(len(stated) > 1),
            math.log1p(len(text)),
            math.log1p(hedges),
            100.0 * hedges / n_words,
            math.log1p(len(prompt)),
        ]
    )
    return feats, answer


@dataclass
class CascadeTrace:
    """What a live cascade did for one request (see :meth:`CascadeRouter.route_with_answers`)."""

    model: str
    """The model whose answer is returned."""
    answer: str
    """That answer's text."""
    calls: list[tuple[str, float]] = field(default_factory=list)
    """Every call made, in order: (model, confidence of its answer). Each one is paid for."""


@register_router("cascade")
class CascadeRouter(Router):
    """FrugalGPT-style cascade: cheapest model first, escalate while the answer's confidence is low.

    Source: Chen, Zaharia & Zou (2023), "FrugalGPT" (LLM cascade with a learned answer scorer); AutoMix
    (Madaan et al., 2023). See the module docstring for the chain, the confidence features and the knob.

    Args:
        models: The chain, cheapest first (names of table models). None: chosen on train (see module doc).
        max_stages: Longest chain considered when ``models`` is None (>= 1).
        C: Inverse L2 regularisation of the per-stage logistic regressions.
        prior_smoothing: Pseudo-count that shrinks a model's per-category train accuracy (the category prior
            feature) toward its overall accuracy.
        random_state: Unused by the (deterministic) solver; kept so that every router takes a seed.
    """

    exportable = False  # needs each stage's answer text: a proxy runs it via route_with_answers, not route()
    uses_outcomes_at_route_time = True

    def __init__(
        self,
        *,
        models: Sequence[str] | None = None,
        max_stages: int = 3,
        C: float = 1.0,
        prior_smoothing: float = 20.0,
        random_state: int = 0,
    ) -> None:
        self.models = models
        self.max_stages = max_stages
        self.C = C
        self.prior_smoothing = prior_smoothing
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: OutcomeTable) -> None:
        if int(self.max_stages) < 1:
            raise ConfigError(f"cascade max_stages must be >= 1, got {self.max_stages!r}")
        if not float(self.C) > 0:
            raise ConfigError(f"cascade C must be > 0, got {self.C!r}")
        q, c = train.quality, train.cost
        self._fit_priors(train)
        texts = train.wide_text("response")
        prompts = list(train.prompts)
        cats = [str(x) for x in train.categories]
        cache: dict[int, tuple[np.ndarray, list[str]]] = {}
        if self.models is not None:
            chain = [str(m) for m in self.models]
            unknown = [m for m in chain if m not in self.models_]
            if unknown:
                raise ConfigError(
                    f"cascade models {unknown} are not in the table; it has: {', '.join(self.models_)}"
                )
            if len(set(chain)) != len(chain) or not chain:
                raise ConfigError(f"cascade models must be a non-empty list without repeats, got {chain}")
            idx = [self.models_.index(m) for m in chain]
        else:
            idx = self._choose_chain(q, c, texts, prompts, cats, cache)
        self.chain_ = tuple(self.models_[i] for i in idx)
        self.chain_index_ = np.asarray(idx, dtype=int)
        self.stage_cost_ = np.asarray(c.mean(axis=0)[idx], dtype=float)
        self.scorers_ = self._fit_scorers(idx, q, self._stage_features(idx, texts, prompts, cats, cache))

    def _fit_priors(self, train: OutcomeTable) -> None:
        q = train.quality
        cats = np.asarray([str(x) for x in train.categories], dtype=object)
        overall = q.mean(axis=0)
        k = float(self.prior_smoothing)
        self.category_prior_ = {}
        for cat in sorted(set(cats)):
            rows = cats == cat
            self.category_prior_[cat] = (q[rows].sum(axis=0) + k * overall) / (rows.sum() + k)
        self.overall_prior_ = overall

    def _prior(self, model_idx: int, cats: Sequence[str]) -> np.ndarray:
        out = np.empty(len(cats))
        for i, cat in enumerate(cats):
            row = self.category_prior_.get(cat)
            out[i] = (row if row is not None else self.overall_prior_)[model_idx]
        return np.clip(out, 1e-3, 1 - 1e-3)

    def _stage_features(
        self,
        idx: Sequence[int],
        texts: np.ndarray,
        prompts: Sequence[str],
        cats: Sequence[str],
        cache: dict[int, tuple[np.ndarray, list[str]]] | None = None,
    ) -> list[np.ndarray]:
        """Per stage, the feature matrix (n, d_k) of its answers (d_k grows by one from stage 1 on).

        ``cache`` (column -> (text features, extracted answers)) saves re-reading texts across candidate
        chains.
        """
        n = len(prompts)
        cache = {} if cache is None else cache
        for j in idx:
            if j not in cache:
                base = np.zeros((n, _N_TEXT_FEATURES))
                keys = []
                for i in range(n):
                    base[i], key = _features_and_answer(str(texts[i, j]), prompts[i])
                    keys.append(key)
                cache[j] = (base, keys)
        out = []
        for s, j in enumerate(idx):
            base, keys = cache[j]
            p = self._prior(j, cats)
            cols = [base, np.log(p / (1 - p))[:, None]]
            if s > 0:
                agree = np.zeros(n)
                for t in range(s):
                    prev = cache[idx[t]][1]
                    same = [k != "" and k == pk for k, pk in zip(keys, prev, strict=True)]
                    agree += np.asarray(same, dtype=float)
                cols.append((agree / s)[:, None])
            out.append(np.hstack(cols))
        return out

    def _fit_scorers(
        self, idx: Sequence[int], q: np.ndarray, feats: list[np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        scorers = []
        for s, j in enumerate(idx):
            x = feats[s]
            mu, sd = x.mean(axis=0), x.std(axis=0)
            sd = np.where(sd > 1e-9, sd, 1.0)
            z = (x - mu) / sd
            conf = _logit_fit(z, q[:, j], self.C)
            later = [_logit_fit(z, q[:, j], self.C) for j in idx[s + 1 :]]
            scorers.append({"mu": mu, "sd": sd, "conf": conf, "later": later})
        return scorers

    def _choose_chain(
        self,
        q: np.ndarray,
        c: np.ndarray,
        texts: np.ndarray,
        prompts: Sequence[str],
        cats: Sequence[str],
        cache: dict[int, tuple[np.ndarray, list[str]]],
    ) -> list[int]:
        mean_c, mean_q = c.mean(axis=0), q.mean(axis=0)
        hull = _cost_quality_hull(mean_c, mean_q)
        if len(hull) <= 1 or int(self.max_stages) == 1:
            return [hull[-1]] if int(self.max_stages) == 1 else hull
        best = hull[-1]
        # Earlier stages: the hull, plus the few best models off it (a cheap "second opinion" that agrees with
        # the first answer is a strong confidence signal even when the model is dominated on its own).
        off = sorted(
            (j for j in range(len(mean_c)) if j not in hull and mean_c[j] < mean_c[best]),
            key=lambda j: -mean_q[j],
        )[:_SECOND_OPINIONS]
        rest = sorted([*hull[:-1], *off], key=lambda j: (mean_c[j], -mean_q[j]))
        candidates = [
            [*sub, best]
            for r in range(1, min(int(self.max_stages) - 1, len(rest)) + 1)
            for sub in itertools.combinations(rest, r)
        ]
        lo, hi = float(c.mean(axis=0)[hull[0]]), float(c.mean(axis=0)[best])
        budgets = np.geomspace(max(lo, 1e-12), max(hi, 1e-12), 25) if hi > lo else np.array([hi])
        values = []
        for cand in candidates:
            feats = self._stage_features(cand, texts, prompts, cats, cache)
            pol = _replay(cand, self._fit_scorers(cand, q, feats), feats, q, c, self.stage_cost_of(c, cand))
            lams = pol.grid(60)
            cost, qual, _ = pol.curve(lams)
            # Best quality reachable within each budget (a budget below the cheapest point gets 0).
            values.append(np.mean([qual[cost <= b + 1e-15].max(initial=0.0) for b in budgets]))
        return candidates[int(np.argmax(values))]

    @staticmethod
    def stage_cost_of(c: np.ndarray, idx: Sequence[int]) -> np.ndarray:
        """Mean train cost of each chain stage."""
        return np.asarray(c.mean(axis=0)[list(idx)], dtype=float)

    # ------------------------------------------------------------------ scoring answers
    def predict_quality(self, queries: Queries) -> np.ndarray:
        """Not available: a cascade needs the cheap model's answer (use :meth:`route_with_answers`)."""
        self._check_fitted()
        raise TypeError(
            "a cascade decides from the cheap model's answer, not from the prompt alone: replay it with "
            ".policy(table) or run it live with .route_with_answers(prompt, get_answer, lam)"
        )

    def route_indices(self, queries: Queries, lam: float) -> np.ndarray:
        """Not available (see :meth:`predict_quality`)."""
        return self.predict_quality(queries)

    def route_with_answers(
        self, prompt: str, get_answer: Callable[[str], str], lam: float, *, category: str | None = None
    ) -> CascadeTrace:
        """Run the cascade live for one request: call stages via ``get_answer`` until an answer is trusted.

        Args:
            prompt: The user prompt.
            get_answer: Callback ``model name -> answer text`` (a proxy forwards the request to that model).
            lam: Operating point, as in :meth:`policy` (>= 0).
            category: The request's category when known (sharpens the prior feature).

        Returns:
            A :class:`CascadeTrace` naming the answering model, its answer and every call made.

        Example:
            >>> ask = lambda model: client.ask(model, "2+2?")  # doctest: +SKIP
            >>> router.route_with_answers("2+2?", ask, lam=0.05).model  # doctest: +SKIP
        """
        self._check_fitted()
        _check_lam(lam)
        cats = [category or ""]
        texts = np.empty((1, len(self.models_)), dtype=object)
        texts[:] = ""
        trace = CascadeTrace(model="", answer="")
        for s, j in enumerate(self.chain_index_):
            model = self.models_[j]
            answer = str(get_answer(model))
            texts[0, j] = answer
            feats = self._stage_features(self.chain_index_[: s + 1], texts, [prompt], cats)
            sc = self.scorers_[s]
            z = (feats[s] - sc["mu"]) / sc["sd"]
            conf = float(_logit_predict(sc["conf"], z)[0])
            trace.calls.append((model, conf))
            trace.model, trace.answer = model, answer
            if s + 1 == len(self.chain_index_):
                break
            if not lam > _critical(sc, z, self.stage_cost_, s)[0]:
                break
        return trace

    # ------------------------------------------------------------------ replay
    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> CascadePolicy:
        """Replay the cascade over a table's recorded responses (every call made is paid for).

        Raises:
            SchemaError: if the table lacks a model of the chain.
        """
        self._check_fitted()
        missing = [m for m in self.chain_ if m not in table.models]
        if missing:
            raise SchemaError(f"the table lacks cascade model(s) {missing}")
        table = self._align(table)
        cats = [str(x) for x in table.categories] if use_categories else [""] * table.n_samples
        feats = self._stage_features(
            self.chain_index_, table.wide_text("response"), list(table.prompts), cats
        )
        return _replay(
            self.chain_index_,
            self.scorers_,
            feats,
            table.quality,
            table.cost,
            self.stage_cost_,
            models=self.models_,
        )


def _replay(
    idx: Sequence[int],
    scorers: list[dict],
    feats: list[np.ndarray],
    quality: np.ndarray,
    cost: np.ndarray,
    stage_cost: np.ndarray,
    *,
    models: Sequence[str] | None = None,
) -> CascadePolicy:
    """The policy of a fitted chain over samples whose stage features are ``feats``."""
    n, S = feats[0].shape[0], len(feats)
    crit = np.full((n, max(S - 1, 0)), np.inf)
    for s in range(S - 1):
        z = (feats[s] - scorers[s]["mu"]) / scorers[s]["sd"]
        crit[:, s] = _critical(scorers[s], z, stage_cost, s)
    names = tuple(models) if models is not None else tuple(str(i) for i in range(quality.shape[1]))
    return CascadePolicy(names, list(idx), crit, quality, cost)


def _critical(scorer: dict, z: np.ndarray, stage_cost: np.ndarray, s: int) -> np.ndarray:
    """Per sample, the ``lam`` above which stage ``s`` escalates (inf: never).

    Escalating to a later stage ``j`` pays every call up to it; it is worth it iff
    ``lam * (P(stage j right) - P(stage s right)) > cost of stages s+1..j``. The critical point is the
    smallest over ``j`` of ``cost(s+1..j) / gain_j`` among positive gains.
    """
    conf = _logit_predict(scorer["conf"], z)
    paid = np.cumsum(np.asarray(stage_cost, dtype=float)[s + 1 :])
    crit = np.full(len(z), np.inf)
    for later, pay in zip(scorer["later"], paid, strict=True):
        gain = _logit_predict(later, z) - conf
        with np.errstate(divide="ignore"):
            crit = np.minimum(crit, np.where(gain > 0, pay / np.where(gain > 0, gain, 1.0), np.inf))
    return crit


class CascadePolicy(Policy):
    """A cascade's decisions over a table at any ``lam``, with every call's cost counted.

    A sample escalates at stage ``k`` iff ``lam > crit_k`` (see :func:`_critical`). It goes past stage ``k``
    iff it escalates at every stage up to ``k``, i.e. iff ``lam > L_k = max(crit_0..crit_k)``; ``L`` is
    non-decreasing in ``k``, so the number of stages called (and the cost) is a non-decreasing step function
    of ``lam``. A sweep is one cumulative sum per stage.

    Args:
        models: Column names of the replayed table.
        chain: Column index of each stage, cheapest first.
        crit: Per sample and stage but the last, the ``lam`` above which it escalates (n, S - 1).
        quality: Realised scores (n, m).
        cost: Realised costs (n, m).
    """

    def __init__(
        self,
        models: Sequence[str],
        chain: Sequence[int],
        crit: np.ndarray,
        quality: np.ndarray,
        cost: np.ndarray,
    ) -> None:
        self.models = tuple(models)
        self.chain = np.asarray(chain, dtype=int)
        self.quality = np.asarray(quality, dtype=float)
        self.cost = np.asarray(cost, dtype=float)
        crit = np.asarray(crit, dtype=float)
        self.thresholds = np.maximum.accumulate(crit, axis=1) if crit.shape[1] else crit
        # Realised cost of stopping at stage s: all calls up to s; realised score: that stage's.
        self.cum_cost = np.cumsum(self.cost[:, self.chain], axis=1)
        self.stage_quality = self.quality[:, self.chain]

    def stops(self, lam: float) -> np.ndarray:
        """Index (into the chain) of the answering stage per sample."""
        _check_lam(lam)
        return (self.thresholds < lam).sum(axis=1)

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.outcomes`; the cost sums every stage called."""
        stop = self.stops(lam)
        rows = np.arange(len(stop))
        return self.chain[stop], self.cum_cost[rows, stop], self.stage_quality[rows, stop]

    def grid(self, n_points: int = 200) -> np.ndarray:
        """0, midpoints between quantiles of the escalation points, and a point above them all."""
        inner = np.unique(self.thresholds[np.isfinite(self.thresholds)])
        if len(inner) == 0:
            return np.zeros(1)
        qs = np.unique(np.quantile(inner, np.linspace(0, 1, max(n_points - 1, 2))))
        mids = np.sqrt(qs[:-1] * qs[1:]) if (qs > 0).all() else (qs[:-1] + qs[1:]) / 2
        return np.unique(np.concatenate([[0.0], mids, [inner.max() * 1.5 + 1e-12]]))

    def curve(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.curve`; exact, O(n S + K log) via cumulative sums over escalation points."""
        lams = np.asarray(lams, dtype=float)
        n, S = self.stage_quality.shape
        k, m = len(lams), len(self.models)
        cost = np.full(k, self.cum_cost[:, 0].sum())
        qual = np.full(k, self.stage_quality[:, 0].sum())
        share = np.zeros((k, m))
        share[:, self.chain[0]] = n
        for s in range(S - 1):
            t = self.thresholds[:, s]
            pos = np.searchsorted(lams, t, side="right")  # grid points with lam > t
            keep = pos < k
            d_cost = np.bincount(pos[keep], weights=self.cost[keep, self.chain[s + 1]], minlength=k)
            d_qual = np.bincount(
                pos[keep], weights=self.stage_quality[keep, s + 1] - self.stage_quality[keep, s], minlength=k
            )
            moved = np.cumsum(np.bincount(pos[keep], minlength=k))
            cost += np.cumsum(d_cost)
            qual += np.cumsum(d_qual)
            share[:, self.chain[s]] -= moved
            share[:, self.chain[s + 1]] += moved
        return cost / n, qual / n, share / n


# ---------------------------------------------------------------------- helpers
def _check_lam(lam: float) -> None:
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")


def _cost_quality_hull(cost: np.ndarray, quality: np.ndarray) -> list[int]:
    """Indices on the upper-left (cost, quality) hull, cheapest first (the models worth chaining)."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -quality[i]))
    hull: list[int] = []
    for i in order:
        if hull and quality[i] <= quality[hull[-1]]:
            continue  # dominated: dearer and not better
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # Drop b if it lies on or below the segment a -> i (concave hull).
            if (quality[b] - quality[a]) * (cost[i] - cost[a]) <= (quality[i] - quality[a]) * (
                cost[b] - cost[a]
            ):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _logit_fit(z: np.ndarray, y: np.ndarray, C: float) -> dict[str, np.ndarray]:
    """L2-regularised logistic regression of a score in [0, 1] (fractional scores are soft labels).

    Minimises ``sum(-y log p - (1 - y) log(1 - p)) + |w|^2 / (2 C)`` (intercept unpenalised, as in
    scikit-learn's ``LogisticRegression(C=C)``) by Newton's method: a few exact steps on a handful of
    features, far faster than a general solver here.
    """
    y = np.asarray(y, dtype=float)
    n, d = z.shape
    mean = float(y.mean()) if n else 0.5
    p0 = min(max(mean, 1e-3), 1 - 1e-3)
    beta = np.zeros(d + 1)
    beta[-1] = math.log(p0 / (1 - p0))
    if n == 0 or mean <= 0.0 or mean >= 1.0:
        return {"coef": beta[:-1], "intercept": np.array(beta[-1])}
    x = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(d + 1, 1.0 / float(C))
    penalty[-1] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -35, 35)))
        grad = x.T @ (p - y) + penalty * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return {"coef": beta[:-1].copy(), "intercept": np.array(beta[-1])}


def _logit_predict(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(z @ params["coef"] + float(params["intercept"]))))
