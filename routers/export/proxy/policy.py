"""The serving policy: which model a routed request goes to, and with what probability.

The router's own choice comes first (:func:`router_choice`); then each configured step of
``ProxyState.policy_steps`` may change it, in order: staged rollout (a share of traffic to a control model),
epsilon exploration (a random eligible model), spend budgets (the cheapest model past a limit). A step reads
and updates the :class:`~routers.export.proxy.context.RequestContext`: ``choice``, ``decided_by``, ``arm``,
``explored`` and ``propensity`` (the probability of ``choice`` under the whole policy, which off-policy
estimates need). The candidates to try (choice, then fallbacks) are set after the last step.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from routers.export.proxy.context import Prediction, RequestContext

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["PolicyStep", "decide", "router_choice"]

#: A policy step: may change ``ctx.choice`` (and its propensity); runs on the event loop, must not block.
PolicyStep = Callable[["ProxyState", RequestContext], Awaitable[None] | None]


async def router_choice(st: ProxyState, ctx: RequestContext) -> None:
    """The exported router's decision for ``ctx.prompt`` at the export's operating point (propensity 1)."""
    exported = st.exported
    cats = [ctx.category] if ctx.category else None
    t_route = time.perf_counter()
    if st.wants_predictions:  # the decision log or exploration reads every model's predictions
        await _choice_with_predictions(st, ctx)
        return
    if st.offload_routing:
        from starlette.concurrency import run_in_threadpool

        idx = await run_in_threadpool(exported.route_indices, [ctx.prompt], None, cats)
    else:
        idx = exported.route_indices([ctx.prompt], None, cats)
    st.metrics.observe_routing(time.perf_counter() - t_route)
    choice = exported.models[int(idx[0])]
    ctx.routed = True
    ctx.router_choice = ctx.choice = choice
    ctx.lam = exported.lam
    ctx.decided_by = "router"
    ctx.propensity = 1.0


async def _choice_with_predictions(st: ProxyState, ctx: RequestContext) -> None:
    """:func:`router_choice` that also fills ``ctx.predictions`` (features computed once, the same decision).

    A model is eligible unless its upstream's circuit is open; when every circuit is open, every model counts as
    eligible (the proxy then probes them all in order), so a policy always has a model to pick.
    """
    exported = st.exported
    t_route = time.perf_counter()
    if st.offload_routing:
        from starlette.concurrency import run_in_threadpool

        idx, quality, cost = await run_in_threadpool(exported.predictions, ctx.prompt, ctx.category)
    else:
        idx, quality, cost = exported.predictions(ctx.prompt, ctx.category)
    st.metrics.observe_routing(time.perf_counter() - t_route)
    now = time.monotonic()
    open_ = [st.is_open(m, now) for m in exported.models]
    all_open = all(open_)
    ctx.predictions = tuple(
        Prediction(m, float(q), float(c), all_open or not o)
        for m, q, c, o in zip(exported.models, quality.tolist(), cost.tolist(), open_, strict=True)
    )
    ctx.routed = True
    ctx.router_choice = ctx.choice = exported.models[idx]
    ctx.lam = exported.lam
    ctx.decided_by = "router"
    ctx.propensity = 1.0


async def decide(st: ProxyState, ctx: RequestContext) -> None:
    """Run the router, then every policy step; set ``ctx.candidates``."""
    await router_choice(st, ctx)
    for step in st.policy_steps:
        result = step(st, ctx)
        if result is not None:
            await result
    assert ctx.choice is not None
    st.count("choice", ctx.choice)
    ctx.candidates = st.candidates(ctx.choice)
