"""What the shared state reports: the ``state`` section of ``/healthz`` and its lines of ``/metrics``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routers.export.proxy.shared_state import SharedState

__all__ = ["health", "metrics_text"]

#: Request outcomes counted across replicas (the same reasons as ``routelab_requests_total``).
SHARED_REASONS = ("routed", "fallback", "passthrough", "failed", "deadline")


def health(shared: SharedState) -> dict[str, Any]:
    """The ``state`` section of ``/healthz``."""
    out: dict[str, Any] = {
        "backend": "redis",
        "status": "ok" if shared.up else "degraded",
        "namespace": shared.namespace,
        "resyncs": shared.resyncs,
    }
    if not shared.up:
        out["detail"] = "Redis unreachable; serving on this replica's local state: " + shared.last_error
        if shared.degraded_since is not None:
            out["degraded_for_s"] = round(time.time() - shared.degraded_since, 3)
        out["pending"] = {"feedback": len(shared.pending_feedback), "counters": len(shared.pending)}
    return out

def metrics_text(shared: SharedState) -> str:
    """The shared-state lines of ``/metrics``."""
    lines = [
        "# HELP routelab_state_redis_up 1 while the shared state's Redis answers.",
        "# TYPE routelab_state_redis_up gauge",
        f"routelab_state_redis_up {int(shared.up)}",
        "# HELP routelab_state_degraded 1 while this replica serves on local state (Redis unreachable).",
        "# TYPE routelab_state_degraded gauge",
        f"routelab_state_degraded {int(not shared.up)}",
        "# HELP routelab_state_resyncs_total Reconnections to Redis (local deltas pushed, shared state pulled).",
        "# TYPE routelab_state_resyncs_total counter",
        f"routelab_state_resyncs_total {shared.resyncs}",
        "# HELP routelab_state_errors_total Redis calls that failed or timed out.",
        "# TYPE routelab_state_errors_total counter",
        f"routelab_state_errors_total {shared.errors}",
        "# HELP routelab_state_roundtrip_seconds Redis calls made for requests (feedback, budget reads).",
        "# TYPE routelab_state_roundtrip_seconds summary",
        f"routelab_state_roundtrip_seconds_sum {shared.rt_sum:.9f}",
        f"routelab_state_roundtrip_seconds_count {shared.rt_n}",
        "# HELP routelab_shared_requests_total Chat requests by outcome, all replicas together.",
        "# TYPE routelab_shared_requests_total counter",
    ]
    lines += [f'routelab_shared_requests_total{{reason="{r}"}} {shared.estimate(shared.key("requests", r)):g}'
              for r in SHARED_REASONS]
    lines += ["# HELP routelab_shared_cost_usd_total Dollars spent per model, all replicas together.",
              "# TYPE routelab_shared_cost_usd_total counter"]
    lines += [f'routelab_shared_cost_usd_total{{model="{m}"}} {shared.estimate(shared.key("cost", m)):.10g}'
              for m in shared.st.config.upstreams]
    return "\n".join(lines) + "\n"
