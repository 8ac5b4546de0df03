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
  prior), and, from the second stage on, how much it agrees with the answers already bought from the cheaper
  stages (cheap self-consistency). With ``agreement = "normalised"`` (the default) answers of any format are
  compared: an option letter or a stated number as above, else the final answer by
  :func:`evals.graders.extract.final_answer` (normalised code, the last number, the last line's words), scored
  by :func:`evals.graders.extract.answer_agreement` (1/0 for letters and numbers, a similarity in [0, 1] for
  code and text); ``"exact"`` compares only extracted letters and numbers, as strings. Per stage logistic
  regressions map these to ``P(this answer is right)`` (``conf_k``) and to ``P(stage j's answer is right)``
  for every later stage ``j`` (``p_kj``).
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
from evals.graders.extract import FinalAnswer, answer_agreement, final_answer
from evals.metrics import nondecreasing_hull_indices
from evals.outcomes import OutcomeTable
from routers.base import Policy, Queries, Router, check_operating_point
from routers.params import integer, json_list, options, real, seed
from routers.registry import register_router
from routers.runtime import sigmoid
from routers.strategies._common import fit_logistic, per_category_mean

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
AGREEMENT_MODES = ("normalised", "exact")


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


def _normalised_answer(key: str, text: str) -> FinalAnswer:
    """The answer to compare in ``agreement = "normalised"``: this module's letter/number, else any format.

    The cascade's own letter and number rule comes first, so on multiple-choice answers the agreement is the
    same as with ``"exact"`` (numbers compare as numbers: "18" agrees with "18.00").
    """
    if key:
        if len(key) == 1 and key.isalpha():
            return FinalAnswer("letter", key)
        try:
            return FinalAnswer("number", float(key))
        except ValueError:
            return FinalAnswer("letter", key)
    return final_answer(text)


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
        agreement: How a stage's answer is compared with the cheaper stages' answers: ``"normalised"``
            (any answer format: letters, numbers, code, text) or ``"exact"`` (extracted letters and numbers
            only; an answer without one never agrees).
        random_state: Unused by the (deterministic) solver; kept so that every router takes a seed.
    """

    parameter_constraints = {
        "models": json_list(),
        "max_stages": integer(low=1),
        "C": real(low=0, closed="neither"),
        "prior_smoothing": real(low=0),
        "agreement": options(*AGREEMENT_MODES),
        "random_state": seed(),
    }
    exportable = False
    not_exportable_because = (
        "a cascade decides from each stage's answer text, not from the prompt alone "
        "(a serving system runs it through route_with_answers)."
    )
    uses_outcomes_at_route_time = True
    _expected_failed_checks = {
        "routes_new_prompts": "needs each stage's answer to decide: new prompts go through route_with_answers()",
    }

    def __init__(
        self,
        *,
        models: Sequence[str] | None = None,
        max_stages: int = 3,
        C: float = 1.0,
        prior_smoothing: float = 20.0,
        agreement: str = "normalised",
        random_state: int = 0,
    ) -> None:
        self.models = models
        self.max_stages = max_stages
        self.C = C
        self.prior_smoothing = prior_smoothing
        self.agreement = agreement
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: OutcomeTable) -> None:
        # Parameter ranges are checked by ``fit`` against ``parameter_constraints``.
        q, c = train.quality, train.cost
        texts = train.wide_text("response")
        _require_responses(texts, self.models_, "the train table", every_model=True)
        self._fit_priors(train)
        prompts = list(train.prompts)
        cats = [str(x) for x in train.categories]
        cache: dict = {}
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
        _require_responses(texts[:, idx], [self.models_[i] for i in idx], "the train table")
        self.chain_ = tuple(self.models_[i] for i in idx)
        self.chain_index_ = np.asarray(idx, dtype=int)
        self.stage_cost_ = np.asarray(c.mean(axis=0)[idx], dtype=float)
        self.scorers_ = self._fit_scorers(idx, q, self._stage_features(idx, texts, prompts, cats, cache))

    def _fit_priors(self, train: OutcomeTable) -> None:
        cats = np.asarray([str(x) for x in train.categories], dtype=object)
        vocab = sorted(set(cats))  # "" included: samples without a category get their own prior row
        table = per_category_mean(train.quality, cats, vocab, float(self.prior_smoothing))
        self.category_prior_ = dict(zip(vocab, table[:-1], strict=True))
        self.overall_prior_ = table[-1]

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
        cache: dict | None = None,
    ) -> list[np.ndarray]:
        """Per stage, the feature matrix (n, d_k) of its answers (d_k grows by one from stage 1 on).

        ``cache`` (column -> (text features, answers); (column, column) -> agreements) saves re-reading texts
        across candidate chains.
        """
        n = len(prompts)
        cache = {} if cache is None else cache
        normalised = str(getattr(self, "agreement", "exact")) == "normalised"
        for j in idx:
            if j not in cache:
                base = np.zeros((n, _N_TEXT_FEATURES))
                keys: list = []
                for i in range(n):
                    text = str(texts[i, j])
                    base[i], key = _features_and_answer(text, prompts[i])
                    if normalised:
                        key = _normalised_answer(key, text)
                        # "An answer was stated" also counts code that parses; a bare last line or last number
                        # does not (a hedging answer without a letter still reads as one without an answer).
                        base[i, 0] = max(base[i, 0], float(key.kind == "code"))
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
                    pair = (idx[t], j)
                    if pair not in cache:
                        prev = cache[idx[t]][1]
                        if normalised:
                            same = [answer_agreement(k, pk) for k, pk in zip(keys, prev, strict=True)]
                        else:
                            same = [k != "" and k == pk for k, pk in zip(keys, prev, strict=True)]
                        cache[pair] = np.asarray(same, dtype=float)
                    agree += cache[pair]
                cols.append((agree / s)[:, None])
            out.append(np.hstack(cols))
        return out

    def _fit_scorers(
        self, idx: Sequence[int], q: np.ndarray, feats: list[np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        scorers = []
        for s in range(len(idx)):
            x = feats[s]
            mu, sd = x.mean(axis=0), x.std(axis=0)
            sd = np.where(sd > 1e-9, sd, 1.0)
            z = (x - mu) / sd
            # Column 0: is this stage's answer right; the others: would each later stage's be.
            coef, intercept = fit_logistic(z, q[:, list(idx[s:])], float(self.C), solver="newton")
            scorers.append({"mu": mu, "sd": sd, "coef": coef, "intercept": intercept})
        return scorers

    def _choose_chain(
        self,
        q: np.ndarray,
        c: np.ndarray,
        texts: np.ndarray,
        prompts: Sequence[str],
        cats: Sequence[str],
        cache: dict,
    ) -> list[int]:
        mean_c, mean_q = c.mean(axis=0), q.mean(axis=0)
        hull = nondecreasing_hull_indices(mean_c, mean_q).tolist()  # the models worth chaining
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
        check_operating_point(lam)
        cats = [category or ""]
        texts = np.empty((1, len(self.models_)), dtype=object)
        texts[:] = ""
        trace = CascadeTrace(model="", answer="")
        for s, j in enumerate(self.chain_index_):
            model = self.models_[j]
            answer = str(get_answer(model))
            texts[0, j] = answer
            # Stage s's features read only stages <= s (later ones are still ""); the whole chain is passed so
            # that a subclass may add features of the later stages' models (cascade-stacked does).
            feats = self._stage_features(self.chain_index_, texts, [prompt], cats)
            sc = self.scorers_[s]
            z = (feats[s] - sc["mu"]) / sc["sd"]
            conf = float(_scores(sc, z)[0, 0])
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
        texts = table.wide_text("response")
        _require_responses(texts[:, self.chain_index_], list(self.chain_), "the table to replay")
        feats = self._stage_features(self.chain_index_, texts, list(table.prompts), cats)
        return _replay(
            self.chain_index_,
            self.scorers_,
            feats,
            table.quality,
            table.cost,
            self.stage_cost_,
            models=self.models_,
        )


def _require_responses(texts: np.ndarray, models: Sequence[str], where: str, *, every_model: bool = False) -> None:
    """Refuse to fit or replay on answers that are not there (the confidence is read from them).

    Args:
        texts: (n, len(models)) recorded responses.
        models: The models of the columns.
        where: How to name the table in the message.
        every_model: Only refuse when no model at all has a response (the chain is not chosen yet);
            otherwise refuse when any of ``models`` has none.

    Raises:
        ConfigError: naming the models without a single non-empty response.
    """
    has = [any(isinstance(t, str) and t.strip() for t in texts[:, j]) for j in range(texts.shape[1])]
    empty = [m for m, ok in zip(models, has, strict=True) if not ok]
    if (every_model and len(empty) == len(models)) or (not every_model and empty):
        what = "any model" if len(empty) == len(models) else f"model(s) {', '.join(map(repr, empty))}"
        raise ConfigError(
            f"cascade: {where} has no recorded responses for {what} (its 'response' column is empty there), and "
            "a cascade decides from each stage's answer: collect answers first (routelab collect) or use a "
            "router that decides from the prompt"
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
    p = _scores(scorer, z)
    conf = p[:, 0]
    paid = np.cumsum(np.asarray(stage_cost, dtype=float)[s + 1 :])
    crit = np.full(len(z), np.inf)
    for later, pay in zip(p[:, 1:].T, paid, strict=True):
        gain = later - conf
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
        check_operating_point(lam)
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
def _scores(scorer: dict, z: np.ndarray) -> np.ndarray:
    """Per sample, P(this stage's answer is right) then P(each later stage's is right): shape (n, 1 + later)."""
    return sigmoid(z @ scorer["coef"].T + scorer["intercept"])
