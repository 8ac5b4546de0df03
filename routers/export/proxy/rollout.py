"""Staged rollout (``[rollout] share``): a share of routed traffic through the router, the rest to a control model.

A policy step (the first after the router's choice). Each routed request gets an arm:

* **sticky:** a request with a session key (the ``sticky_header``, default ``x-routelab-session``, else the body's
  ``user``) goes to the router arm iff ``unit(sha256(key)) < share``; the hash is fixed (no per-process salt), so a
  session keeps its arm across requests, workers and restarts, and raising ``share`` only moves sessions from
  control to the router, never back;
* **otherwise** the arm is drawn at random per request with probability ``share``.

``ctx.arm`` is ``router`` or ``control`` (the response header ``x-routelab-arm`` and the log carry it). In the
control arm the choice is the control model (``decided_by = "control"``, propensity 1, no exploration, no
operating point); in the router arm the router and exploration decide, and the propensity is the probability of
the choice *within the arm* (the unconditional probability is ``share`` times it for a non-sticky request).
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

from evals.exceptions import ConfigError
from routers.export.proxy.context import RequestContext

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["Rollout", "attach", "sticky_unit"]


def sticky_unit(key: str) -> float:
    """A fixed number in [0, 1) for a session key (the first 8 bytes of a sha256, over 2**64)."""
    digest = hashlib.sha256(b"routelab-rollout\x00" + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class Rollout:
    """The rollout's policy step (see the module docstring).

    Args:
        share: Share of routed traffic served by the router, in [0, 1].
        control: The control arm's model.
        seed: Seed of the per-request draws for requests without a session key (None: fresh randomness).
    """

    def __init__(self, share: float, control: str, seed: int | None = None) -> None:
        self.share = float(share)
        self.control = control
        self.rng = random.Random(seed)

    def arm_of(self, session: str | None) -> str:
        """``router`` or ``control`` for a request with this session key (None: a random draw)."""
        u = sticky_unit(session) if session else self.rng.random()
        return "router" if u < self.share else "control"

    def __call__(self, st: ProxyState, ctx: RequestContext) -> None:
        """Assign the request's arm; in the control arm, choose the control model."""
        ctx.arm = self.arm_of(ctx.session)
        st.count("rollout_arm", ctx.arm)
        if ctx.arm == "control":
            ctx.choice, ctx.decided_by, ctx.propensity, ctx.lam = self.control, "control", 1.0, None


def attach(st: ProxyState) -> None:
    """Add the rollout step when ``[rollout] share`` is set; the control model defaults to the export's best single
    model (``router.json`` ``measurement.reference_model``).

    Raises:
        ConfigError: when no control is set and the export records no best single model (or one it cannot route to).
    """
    settings = st.config.section("rollout")
    if not settings.enabled:
        return
    control = settings.control
    if control is None:
        measured = st.exported.measurement
        control = measured.reference_model if measured is not None else None
        if not control:
            raise ConfigError(
                "[rollout] control is not set and the export records no best single model (router.json "
                "measurement.reference_model): set control to one of " + ", ".join(st.exported.models)
            )
    if control not in st.exported.models or control not in st.config.upstreams:
        raise ConfigError(
            f"[rollout] control {control!r} is not one of this proxy's models ({', '.join(st.config.upstreams)})"
        )
    step = Rollout(settings.share, control)
    st.policy_steps.append(step)
    st.health_sections["rollout"] = lambda: {"share": step.share, "control": step.control,
                                             "sticky_header": settings.sticky_header}
