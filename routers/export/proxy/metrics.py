"""The proxy's counters and its ``/metrics`` page (Prometheus text format)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

__all__ = ["LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: Request outcomes always listed (zero or not), so dashboards see every series from the start.
_REASONS = ("routed", "fallback", "passthrough", "failed", "deadline", "too_large")

#: (metric, counter key, help, label names) of the labelled counters.
_SERIES = (
    ("routelab_model_requests_total", "answered", "Requests answered per model.", ("model",)),
    ("routelab_router_choice_total", "choice", "Router decisions per model (before any fallback).", ("model",)),
    ("routelab_upstream_attempts_total", "attempts", "Upstream attempts per model.", ("model",)),
    (
        "routelab_upstream_failures_total",
        "failures",
        "Failed upstream attempts per model and kind (timeout, connection, http_<status>, redirect, malformed, "
        "truncated, too_large, dropped_stream, auth).",
        ("model", "kind"),
    ),
    (
        "routelab_invalid_usage_total",
        "invalid_usage",
        "Answers whose usage was not non-negative integer token counts (not priced).",
        ("model",),
    ),
    ("routelab_client_errors_total", "client_errors", "Requests refused as invalid, per code.", ("code",)),
    ("routelab_feedback_total", "feedback", "Feedback received per model (adaptive exports).", ("model",)),
    ("routelab_cost_usd_total", "cost_usd", "Dollars spent per model (usage x export prices).", ("model",)),
    ("routelab_rollout_arm_total", "rollout_arm", "Routed requests per rollout arm (router, control).", ("arm",)),
    ("routelab_explored_total", "explored", "Requests sent to a random model by exploration, per model.", ("model",)),
    (
        "routelab_decision_log_written_total",
        "decision_log_written",
        "Decision-log lines written per record kind (decision, shadow, grade).",
        ("kind",),
    ),
    (
        "routelab_decision_log_dropped_total",
        "decision_log_dropped",
        "Decision-log lines dropped per reason (queue_full, write_error, invalid_record, stopped).",
        ("reason",),
    ),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class Metrics:
    """Thread-safe counters, the added-latency histogram and the routing-time summary of one worker."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = defaultdict(float)
        self.latency_hist = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_n = 0
        self.routing_sum = 0.0  # seconds spent deciding (featurisation included)
        self.routing_n = 0
        self.lock = threading.Lock()

    def count(self, *key: str, by: float = 1.0) -> None:
        """Add ``by`` to the counter ``key`` (its first element names the series)."""
        with self.lock:
            self.counts[key] += by

    def observe_added(self, seconds: float) -> None:
        """Record the proxy's own time for one request (total minus time waiting on upstreams)."""
        with self.lock:
            self.latency_sum += seconds
            self.latency_n += 1
            for i, b in enumerate(LATENCY_BUCKETS):
                if seconds <= b:
                    self.latency_hist[i] += 1
                    break
            else:
                self.latency_hist[-1] += 1

    def observe_routing(self, seconds: float) -> None:
        """Record one routing decision's time (one event loop calls this: two adds need no lock)."""
        self.routing_sum += seconds
        self.routing_n += 1

    def render(self, models: Iterable[str], is_up: Callable[[str], bool]) -> str:
        """The Prometheus text page; ``is_up(model)`` says whether an upstream is not cooling down."""
        with self.lock:
            counts = dict(self.counts)
            hist, total, n = list(self.latency_hist), self.latency_sum, self.latency_n
        out = [
            "# HELP routelab_requests_total Chat requests by outcome (" + ", ".join(_REASONS) + ").",
            "# TYPE routelab_requests_total counter",
        ]
        for reason in _REASONS:
            out.append(f'routelab_requests_total{{reason="{reason}"}} {counts.get(("requests", reason), 0):g}')
        for metric, key, help_, labels in _SERIES:
            out += [f"# HELP {metric} {help_}", f"# TYPE {metric} counter"]
            for k, v in sorted(counts.items()):
                if k[0] == key:
                    lab = ",".join(f'{name}="{_label(val)}"' for name, val in zip(labels, k[1:], strict=False))
                    out.append(f"{metric}{{{lab}}} {v:.10g}")
        out += [
            "# HELP routelab_upstream_up 1 unless the upstream is cooling down after failures.",
            "# TYPE routelab_upstream_up gauge",
        ]
        out += [f'routelab_upstream_up{{model="{_label(m)}"}} {1 if is_up(m) else 0}' for m in models]
        out += [
            "# HELP routelab_added_latency_seconds Proxy time per request, excluding upstream waits.",
            "# TYPE routelab_added_latency_seconds histogram",
        ]
        cum = 0
        for b, c in zip(LATENCY_BUCKETS, hist, strict=False):
            cum += c
            out.append(f'routelab_added_latency_seconds_bucket{{le="{b:g}"}} {cum}')
        out.append(f'routelab_added_latency_seconds_bucket{{le="+Inf"}} {n}')
        out += [f"routelab_added_latency_seconds_sum {total:.9f}", f"routelab_added_latency_seconds_count {n}"]
        out += [
            "# HELP routelab_routing_seconds Time spent on routing decisions (featurisation included).",
            "# TYPE routelab_routing_seconds summary",
            f"routelab_routing_seconds_sum {self.routing_sum:.9f}",
            f"routelab_routing_seconds_count {self.routing_n}",
        ]
        return "\n".join(out) + "\n"
