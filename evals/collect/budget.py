"""What a collection run will cost before it starts, and a spend cap that stops it before it is exceeded.

The estimate (:func:`estimate_spend`) prices every (sample, model) pair that is not already in the answer cache:
input tokens are the prompt's characters / 4 (the convention of the importers), output tokens the model's
``expected_output_tokens`` (default :data:`DEFAULT_EXPECTED_OUTPUT_TOKENS`), capped by its ``max_tokens``
parameter. The upper bound prices every answer at ``max_tokens`` when the model sets it.

The cap (:class:`SpendCap`) is checked before each paid call: a call starts only when what was spent, plus a
*reservation* for every call in flight, plus this call's reservation stays within ``max_spend_usd``; when only
the calls in flight stand in the way it waits for them to finish (their real cost replaces their reservation).
A reservation is deliberately pessimistic (input = characters / 2, output = ``max_tokens`` when set, else four
times the expected output), so the run stops within one call's reservation of the cap, never past it (as long
as providers bill no more than ``max_tokens``). Once one call is refused, the run asks nothing more. Cache hits
are free and never blocked. Judge calls are capped the same way (their prompts are only known when made).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from evals.collect.cache import ResponseCache, request_key
from evals.collect.config import CollectConfig, ModelConfig
from evals.prices import Price

__all__ = ["DEFAULT_EXPECTED_OUTPUT_TOKENS", "SpendCap", "SpendEstimate", "estimate_spend", "messages_for"]

#: Output tokens assumed per answer when a model's config does not say (``expected_output_tokens``).
DEFAULT_EXPECTED_OUTPUT_TOKENS = 300


def messages_for(model: ModelConfig, prompt: str) -> list[dict[str, str]]:
    """The chat messages sent to ``model`` for ``prompt`` (an optional system turn, then the user turn)."""
    msgs = [{"role": "system", "content": model.system}] if model.system else []
    return msgs + [{"role": "user", "content": prompt}]


def _max_tokens(model: ModelConfig) -> float | None:
    value = model.params.get("max_tokens", model.params.get("max_completion_tokens"))
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def expected_output_tokens(model: ModelConfig) -> float:
    """Output tokens assumed per answer of ``model``: its ``expected_output_tokens``, capped by ``max_tokens``."""
    expected = float(model.expected_output_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS)
    cap = _max_tokens(model)
    return min(expected, cap) if cap is not None else expected


def reservation(price: Price, model: ModelConfig, prompt_chars: int) -> float:
    """Dollars held back while one call of ``model`` is in flight (a pessimistic bound, see the module doc)."""
    cap = _max_tokens(model)
    out = cap if cap is not None else 4 * expected_output_tokens(model)
    return price.cost((prompt_chars + len(model.system)) / 2.0, out)


@dataclass(frozen=True)
class SpendEstimate:
    """The spend expected before a run starts (printed by ``routelab collect``)."""

    n_prompts: int
    n_models: int
    cached: int
    """(sample, model) pairs already in the answer cache: free."""
    to_ask: int
    """Pairs that will be paid for."""
    expected_usd: float
    """Expected dollars of the pairs to ask (input = characters / 4, output = expected tokens)."""
    upper_usd: float | None
    """Dollars if every answer used ``max_tokens``; None when some model sets no ``max_tokens``."""
    per_model_usd: dict[str, float]
    max_spend_usd: float | None
    judge: str = ""
    """The judge model, whose calls come on top (not estimated: its prompts depend on the answers)."""

    def describe(self) -> str:
        """One or two lines: the estimate, what it assumes, and how it compares with the cap."""
        pairs = self.n_prompts * self.n_models
        upper = f", at most ${self.upper_usd:.4f} if every answer uses max_tokens" if self.upper_usd else ""
        text = (
            f"estimated spend: ${self.expected_usd:.4f} for {self.to_ask} of {pairs} answers "
            f"({self.n_prompts} prompts x {self.n_models} models; {self.cached} already cached, free){upper}; "
            "input tokens = characters / 4, output = expected_output_tokens per model"
        )
        if self.judge:
            text += f"; judge calls ({self.judge}) come on top"
        if self.max_spend_usd is not None:
            verdict = "exceeds" if self.expected_usd > self.max_spend_usd else "is within"
            text += (
                f"\nspend cap: ${self.max_spend_usd:.4f} (max_spend_usd / --max-spend); the estimate {verdict} it; "
                "the run stops before the cap would be passed and keeps every answer received"
            )
        return text


def estimate_spend(
    config: CollectConfig,
    prompts: Sequence[str],
    prices: dict[str, Price],
    cache: ResponseCache | None,
) -> SpendEstimate:
    """Estimate what collecting ``prompts`` with every model of ``config`` will cost (cache hits excluded)."""
    keys = cache.keys() if cache is not None else set()
    cached, expected, upper, per_model = 0, 0.0, 0.0, {}
    bounded = True
    for m in config.models:
        base_url = config.providers[m.provider].base_url
        out_tok, cap = expected_output_tokens(m), _max_tokens(m)
        bounded = bounded and cap is not None
        spent = 0.0
        for prompt in prompts:
            if request_key(base_url, m.wire_name, messages_for(m, prompt), m.params) in keys:
                cached += 1
                continue
            in_tok = (len(prompt) + len(m.system)) / 4.0
            spent += prices[m.name].cost(in_tok, out_tok)
            upper += prices[m.name].cost(in_tok, cap or 0.0)
        per_model[m.name] = spent
        expected += spent
    pairs = len(prompts) * len(config.models)
    judge = config.grader.judge.name if config.grader.judge is not None else ""
    return SpendEstimate(
        n_prompts=len(prompts),
        n_models=len(config.models),
        cached=cached,
        to_ask=pairs - cached,
        expected_usd=expected,
        upper_usd=upper if bounded else None,
        per_model_usd=per_model,
        max_spend_usd=config.max_spend_usd,
        judge=judge,
    )


class SpendCap:
    """Admits a paid call only while spent + in-flight reservations + its reservation stay within the cap.

    Used from one asyncio loop (no locks: there is no await between a check and its update).

    Args:
        limit_usd: The cap in dollars; None admits everything (and still counts what was spent).
    """

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.refused = 0
        """Calls not made because of the cap."""
        self._settled: asyncio.Event | None = None

    @property
    def reached(self) -> bool:
        """True once a call was refused."""
        return self.refused > 0

    async def admit(self, reserve_usd: float) -> bool:
        """Reserve ``reserve_usd`` for a call about to start; False (nothing reserved) if the cap forbids it.

        Waits while only calls in flight stand in the way: each of them ends (settles) at some point.
        """
        while True:
            if self.limit_usd is None or self.spent_usd + self.reserved_usd + reserve_usd <= self.limit_usd:
                if not self.reached:
                    self.reserved_usd += reserve_usd
                    return True
            if self.reached or self.reserved_usd <= 0 or self.spent_usd + reserve_usd > self.limit_usd:
                # Spending only grows, so this call can never fit; refuse it and, to keep the stopping point
                # simple to explain, every later one.
                self.refused += 1
                return False
            if self._settled is None:
                self._settled = asyncio.Event()
            self._settled.clear()
            await self._settled.wait()

    def settle(self, reserve_usd: float, cost_usd: float) -> None:
        """Replace a call's reservation by what it really cost (0 for a failure or a cache hit)."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserve_usd)
        if not math.isnan(cost_usd):
            self.spent_usd += cost_usd
        if self._settled is not None:
            self._settled.set()  # wake the calls waiting for room under the cap
