"""Epsilon exploration (``[exploration] epsilon``): a known positive propensity for every eligible model.

The policy step runs after the router's choice (and after the rollout, whose control arm it leaves alone). With
``ctx.predictions`` filled in (the policy computes them whenever the decision log or exploration is on):

1. **Greedy choice.** The router's own choice when that model is eligible (its upstream's circuit is closed);
   otherwise the best eligible model by the one decision rule (:func:`evals.production.propensity.greedy_choice`
   on the predictions), so the request goes where the policy's propensities say rather than down the fallback
   order.
2. **Exploration.** With probability ``epsilon`` a uniformly random eligible model
   (:func:`evals.production.propensity.explore`; ``ctx.explored``, ``decided_by = "explored"``).
3. **Propensity.** ``ctx.propensity`` is the probability of the final choice under this policy,
   ``(1 - epsilon) * [choice == greedy] + epsilon / n_eligible``, computed by
   :func:`evals.production.propensity.propensity_matrix` (the definition the off-policy estimates use).

For an export whose router follows the decision rule (every embedding, linear, kNN, MF, category router), the
logged propensity equals ``propensity_matrix`` of the logged candidates, operating point and epsilon, which is how
:class:`evals.production.offpolicy.LoggedDecisions` checks it. Kinds with their own choice rule (adaptive, rules,
random-mix, single) log their true propensity too, but their choice need not be the argmax of their predictions,
so the reader may set such records aside as ``propensity_mismatch``.

Within the rollout's router arm the propensity is conditional on the arm (the control arm's requests have
propensity 1: the control model is always chosen there).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import numpy as np

from evals.production.propensity import explore, greedy_choice, propensity_matrix
from routers.export.proxy.context import RequestContext

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["EpsilonPolicy", "attach"]

log = logging.getLogger("routelab.proxy")


class EpsilonPolicy:
    """The policy step of the module docstring.

    Args:
        epsilon: Exploration rate in [0, 1] (0: only the greedy re-decision among eligible models).
        seed: Seed of the random draws (None: fresh randomness).
    """

    def __init__(self, epsilon: float, seed: int | None = None) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.rng = random.Random(seed)
        self._cache: dict[tuple[int, tuple[bool, ...]], list[float]] = {}

    def __call__(self, st: ProxyState, ctx: RequestContext) -> None:
        """Apply the step to one routed request (see the module docstring)."""
        if ctx.arm == "control" or not ctx.predictions or ctx.choice is None:
            return
        models = [p.model for p in ctx.predictions]
        mask = tuple(p.eligible for p in ctx.predictions)
        greedy = models.index(ctx.choice)
        if not mask[greedy]:  # the router's model is cooling down: the best eligible one by the same rule
            quality = np.array([[p.quality for p in ctx.predictions]])
            cost = np.array([[p.cost for p in ctx.predictions]])
            greedy = int(greedy_choice(quality, cost, float(ctx.lam or 0.0), np.array([mask]))[0])
            ctx.choice = models[greedy]
            st.count("policy_rerouted", "circuit_open")
        ctx.epsilon = self.epsilon
        if self.epsilon == 0.0:  # nothing random: the greedy choice, certainly
            ctx.propensity = 1.0
            return
        u_explore = self.rng.random()
        chosen, explored = greedy, False
        if u_explore < self.epsilon:  # explore() keeps the greedy choice otherwise: call it only when it picks
            picked, did = explore(np.array([greedy]), self.epsilon, np.array([u_explore]),
                                  np.array([self.rng.random()]), np.array([mask]))
            chosen, explored = int(picked[0]), bool(did[0])
        ctx.propensity = self._probabilities(greedy, mask)[chosen]
        ctx.explored = explored
        if explored:
            ctx.choice = models[chosen]
            ctx.decided_by = "explored"
            st.count("explored", models[chosen])

    def _probabilities(self, greedy: int, eligible: tuple[bool, ...]) -> list[float]:
        """Every model's probability under the policy for this greedy choice and eligibility (cached: a few
        distinct keys per export, each computed once with propensity_matrix)."""
        key = (greedy, eligible)
        probs = self._cache.get(key)
        if probs is None:
            m = len(eligible)
            # The greedy choice as a one-hot score at zero cost: propensity_matrix's argmax is then exactly that
            # choice (even for a kind whose own rule is not the argmax of its predictions).
            one_hot = np.zeros((1, m))
            one_hot[0, greedy] = 1.0
            mask = np.array(eligible, dtype=bool)[None, :]
            probs = [float(p) for p in propensity_matrix(one_hot, np.zeros(m), 1.0, self.epsilon, mask)[0]]
            if len(self._cache) < 4096:
                self._cache[key] = probs
        return probs


def attach(st: ProxyState) -> None:
    """Add the exploration step when its effective epsilon is above 0 or the decision log is on (the log's
    propensities need the eligible re-decision even at epsilon 0); see
    :meth:`routers.export.settings.exploration.ExplorationSettings.effective_epsilon` for the default."""
    settings = st.config.section("exploration")
    log_on = st.config.section("log").enabled
    epsilon = settings.effective_epsilon(log_on)
    if epsilon == 0.0 and not log_on:
        return
    if epsilon > 0 and not log_on:
        log.warning("[exploration] epsilon = %g without a [log] dir: the exploration's propensities are not recorded",
                    epsilon)
    st.wants_predictions = True
    step = EpsilonPolicy(epsilon, settings.seed)
    st.policy_steps.append(step)
    st.health_sections["exploration"] = lambda: {"epsilon": step.epsilon}
