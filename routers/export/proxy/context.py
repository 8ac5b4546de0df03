"""What the proxy knows about one request, from arrival to the last byte of its answer.

A :class:`RequestContext` is created when a chat request arrives, filled in by the serving policy
(:mod:`.policy`: the router's choice, then rollout, exploration and budget steps) and by the forwarding code
(which model answered, the status, usage and cost), and handed once to every *finisher* registered on the
:class:`~routers.export.proxy.state.ProxyState` when the request is over: for a stream, when its last byte was
sent or it broke. Finishers (the decision log, shadow sampling, telemetry, spend counters) must return at once:
they queue work, never do I/O on the request path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Prediction", "RequestContext"]


@dataclass(frozen=True)
class Prediction:
    """The router's prediction for one model on one request."""

    model: str
    quality: float
    cost: float
    eligible: bool = True


@dataclass
class RequestContext:
    """One chat request's facts (see the module docstring). Fields are filled in as the request goes."""

    route: str
    """The ``model`` the client asked for (a route name, a model of the export, or a pass-through name)."""
    stream: bool = False
    category: str | None = None
    """The ``x-routelab-category`` header."""
    session: str | None = None
    """A sticky key for rollout arms: the ``x-routelab-session`` header, else the body's ``user`` field."""
    client_key_id: str | None = None
    """A short hash of the client's bearer key (per-key budgets); never the key itself."""
    prompt: str | None = None
    """The routed text (the last user message); None for pass-through."""
    messages: list[Any] | None = None
    """The routed request's ``messages``, kept only when a feature re-sends the request (shadow grading sets
    ``ProxyState.wants_request_messages``); that feature's finisher clears it."""
    expected: str | None = None
    """The ``x-routelab-expected`` header (the known correct answer of a replayed or evaluation request), read
    with ``messages``: a shadow pair carrying it is graded by exact match."""
    request_id: str = field(default_factory=lambda: os.urandom(16).hex())
    """128 random bits in hex (as ``uuid4().hex`` spells them, at a quarter of its cost)."""
    received: float = field(default_factory=time.time)
    """Arrival, Unix seconds."""
    t_start: float = field(default_factory=time.perf_counter)
    """Arrival, ``perf_counter`` seconds (latencies)."""
    # ---- set by the policy (routed requests only)
    routed: bool = False
    router_choice: str | None = None
    """What the router itself chose (before rollout, exploration or budget changed it)."""
    choice: str | None = None
    """The model the serving policy chose (what is tried first)."""
    candidates: list[str] = field(default_factory=list)
    """Models to try, in order (the choice, then fallbacks)."""
    rename: bool = True
    """Whether ``model`` in the body is replaced by the upstream's name for it."""
    decided_by: str = "router"
    """Which step chose: ``router``, ``control`` (rollout), ``explored``, ``budget``, ``passthrough``, ``direct``."""
    arm: str = "none"
    """Rollout arm: ``router``, ``control`` or ``none``."""
    lam: float | None = None
    epsilon: float = 0.0
    explored: bool = False
    propensity: float | None = None
    """Probability that the serving policy picks ``choice`` for this request."""
    predictions: tuple[Prediction, ...] = ()
    """Every model's predicted quality and cost, in the export's model order (when the policy computed them)."""
    # ---- set by forwarding
    answered_by: str | None = None
    reason: str = ""
    """``routed``, ``fallback from <model>``, ``passthrough``, ``failed``, ``deadline``, ``refused``, ..."""
    status: int = 0
    latency_s: float | None = None
    """Seconds from arrival to the answer's headers."""
    attempts: int = 0
    """Upstream attempts made for this request, over every model tried (retries and fallbacks)."""
    usage: tuple[int, int] | None = None
    """(input, output) tokens reported by the upstream, when valid."""
    cost_usd: float | None = None
    answer_text: str | None = None
    """The answer's text (non-streamed answers; streams when a finisher asked for texts)."""
    error: str | None = None
    """Why no answer came (scrubbed), when none did."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-feature facts (e.g. ``shadow``: True) that other finishers may read."""

    def elapsed(self) -> float:
        """Seconds since arrival."""
        return time.perf_counter() - self.t_start
