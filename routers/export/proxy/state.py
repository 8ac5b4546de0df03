"""Everything one proxy worker holds: the export, its upstream config and keys, the client, the metrics."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from starlette.requests import Request

from routers.export.loader import ExportedRouter
from routers.export.proxy.context import RequestContext
from routers.export.proxy.features import attach_features
from routers.export.proxy.metrics import Metrics
from routers.export.proxy.upstream import Scrubber, UpstreamClient, valid_usage
from routers.export.upstreams import ProxyConfig

__all__ = ["ProxyState"]

log = logging.getLogger("routelab.proxy")


class ProxyState:
    """Everything the proxy holds: the router, its upstream config, keys, breakers and metrics.

    Args:
        exported: The loaded export.
        config: Parsed ``upstreams.toml``.
        client_keys: Accepted bearer keys; ``None`` disables client auth (``--no-auth``).
        upstream_keys: Per model, the upstream key ("" = none), read from the environment by the caller.
        connector: An aiohttp connector (default: pooled TCP connections, created at startup).
        offload_routing: Run the routing decision in a worker thread (for encoders that take milliseconds).
    """

    def __init__(
        self,
        exported: ExportedRouter,
        config: ProxyConfig,
        *,
        client_keys: list[str] | None,
        upstream_keys: Mapping[str, str],
        connector: aiohttp.BaseConnector | None = None,
        offload_routing: bool | None = None,
    ) -> None:
        self.exported = exported
        self.config = config
        self.client_keys = [k.encode() for k in client_keys] if client_keys is not None else None
        self.upstream_keys = dict(upstream_keys)
        # Upstream keys and client keys alike never leave in a body (an upstream may echo either).
        self.scrubber = Scrubber([*self.upstream_keys.values(), *(client_keys or [])])
        self.metrics = Metrics()
        self.upstreams = UpstreamClient(config, self.upstream_keys, self.metrics, self.scrubber, connector)
        self.offload_routing = exported.routes_slowly if offload_routing is None else offload_routing
        self.by_upstream_name = {u.upstream_model: m for m, u in config.upstreams.items()}
        # Optional features (upstreams.toml sections) hook in here; see routers.export.proxy.features.
        self.policy_steps: list[Callable[..., Any]] = []
        """Steps after the router's choice (rollout, exploration, budget), see :mod:`.policy`."""
        self.finishers: list[Callable[[RequestContext], None]] = []
        """Called once per finished chat request; must return at once (queue work, no I/O)."""
        self.components: list[Any] = []
        """Objects with ``async startup()`` and ``async shutdown()``, run with the server (in this order)."""
        self.wants_predictions = False
        """Set by a feature that reads every model's predictions (decision log, exploration): the policy then
        fills ``ctx.predictions`` (see :func:`routers.export.proxy.policy.router_choice`)."""
        self.wants_request_messages = False
        """Set by shadow grading: routed requests keep their ``messages`` in ``ctx.messages`` (re-sent to the
        reference model)."""
        self.health_sections: dict[str, Callable[[], dict[str, Any]]] = {}
        """Extra sections of ``/healthz`` (name -> a function returning a JSON-able dict), added by features."""
        self.metrics_sections: list[Callable[[], str]] = []
        """Extra ``/metrics`` lines (functions returning Prometheus text), added by features (shared state, budget)."""
        self.feedback_sink: Callable[[str | None, str, float], Any] | None = None
        """Set by shared state: an async ``(category, model, score)`` that counts a feedback on every replica
        (None: this worker's evidence only)."""
        self.evidence_sink: Callable[[Any], Any] | None = None
        """Set by shared state: an async ``(state)`` that replaces the adaptive evidence on every replica
        (``PUT /v1/feedback/state``; None: this worker's only)."""
        attach_features(self)

    # ------------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        """Open the pooled upstream client, then start the features' components (inside the server's loop)."""
        await self.upstreams.startup()
        for c in self.components:
            await c.startup()

    async def shutdown(self) -> None:
        """Stop the components (last started, first stopped), then close the upstream client."""
        for c in reversed(self.components):
            try:
                await c.shutdown()
            except Exception:  # noqa: BLE001 - one component failing to stop must not keep the others running
                log.exception("a proxy component failed to shut down: %r", c)
        await self.upstreams.shutdown()

    def finish(self, ctx: RequestContext) -> None:
        """Hand a finished request to every finisher. A finisher that raises is logged and counted; the request
        it describes is already answered, so nothing reaches the client."""
        for f in self.finishers:
            try:
                f(ctx)
            except Exception:  # noqa: BLE001
                self.metrics.count("finisher_errors", getattr(f, "__qualname__", "finisher"))
                log.exception("a request finisher failed")

    def client_key_id(self, request: Request) -> str | None:
        """A short, non-reversible id of the request's bearer key (for per-key budgets and logs), or None."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        return hashlib.sha256(header[7:].strip().encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ helpers
    def scrub(self, text: str) -> str:
        """Replace every secret (upstream and client keys) in ``text`` with ``***``."""
        return self.scrubber.text(text)

    def count(self, *key: str, by: float = 1.0) -> None:
        """Add to a metric counter."""
        self.metrics.count(*key, by=by)

    def is_open(self, model: str, now: float) -> bool:
        """Whether the circuit of ``model``'s upstream is open (cooling down)."""
        return self.upstreams.is_open(model, now)

    def key_missing(self, model: str) -> bool:
        """Whether ``model``'s upstream names a key variable that is not set."""
        return bool(self.config.upstreams[model].api_key_env) and not self.upstream_keys.get(model)

    def upstream_states(self) -> dict[str, dict[str, Any]]:
        """Per upstream: ``state`` (``up``, ``cooling down``, ``key missing``), and seconds of cooldown left."""
        now = time.monotonic()
        out = {}
        for m in self.config.upstreams:
            b = self.upstreams.breakers[m]
            if self.key_missing(m):
                state = "key missing"
            elif b.open_until > now:
                state = "cooling down"
            else:
                state = "up"
            out[m] = {
                "state": state,
                "cooldown_left_s": round(max(0.0, b.open_until - now), 3),
                "failed_requests": b.failures,
            }
        return out

    def cost_of(self, model: str, usage: Any) -> float | None:
        """Dollars for a ``usage`` at the export's price of ``model``.

        None when the model has no price or the usage is not non-negative integer token counts (counted in
        ``routelab_invalid_usage_total``: a broken counter must not become a negative or infinite bill).
        """
        p = self.exported.prices.get(model) or {}
        if usage is None or p.get("input_per_1m") is None:
            return None
        tokens = valid_usage(usage)
        if tokens is None:
            self.metrics.count("invalid_usage", model)
            return None
        cost = (tokens[0] * p["input_per_1m"] + tokens[1] * p["output_per_1m"]) / 1e6 + float(
            p.get("request_fee") or 0.0
        )
        self.metrics.count("cost_usd", model, by=cost)
        return cost

    def authorised(self, request: Request) -> bool:
        """Whether the request carries an accepted bearer key (always true without client auth)."""
        if self.client_keys is None:
            return True
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return False
        given = header[7:].strip().encode()
        ok = False
        for k in self.client_keys:  # compare with every key, constant time, no early exit
            ok |= hmac.compare_digest(given, k)
        return ok

    def candidates(self, chosen: str) -> list[str]:
        """The chosen model, then the fallback order after it (wrapping around), at most ``max_fallback_hops``
        models after the chosen one."""
        order = list(self.config.fallback_order)
        if chosen in order:
            i = order.index(chosen)
            rest = order[i + 1 :] + order[:i]
        else:
            rest = order
        return ([chosen] + [m for m in rest if m != chosen])[: 1 + self.config.max_fallback_hops]
