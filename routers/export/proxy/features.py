"""Where each optional proxy feature attaches itself to a :class:`~routers.export.proxy.state.ProxyState`.

A feature configured in ``upstreams.toml`` (see :mod:`routers.export.settings`) adds what it needs to the state:
a policy step (``st.policy_steps``), a finisher called once per finished request (``st.finishers``), a component
with ``async startup()``/``async shutdown()`` run with the server (``st.components``), an observer of every
upstream attempt (``st.upstreams.attempt_observers``). One line per feature below; a feature that is off adds
nothing, so the request path of a plain proxy is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routers.export.proxy import budget, decision_log, exploration, rollout, shadow, shared_state, telemetry

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["attach_features"]


def attach_features(st: ProxyState) -> None:
    """Attach every configured feature to ``st`` (called once, at the end of ``ProxyState.__init__``)."""
    # Order matters for policy steps: rollout, then exploration, then budget.
    rollout.attach(st)
    exploration.attach(st)
    shared = shared_state.attach(st)  # [state]: breakers, feedback and counters shared through Redis
    budget.attach(st, shared)  # [budget]: spend limits (counters in Redis when [state] has a url)
    telemetry.attach(st)  # live latency and error rate per upstream (an attempt observer; provider exports)
    shadow.attach(st)  # [shadow]: before the decision log, whose record carries the shadow flag it sets
    # Last: its finisher records what the other finishers marked (the shadow flag).
    decision_log.attach(st)
