"""The replay server's drift switch: make one model's answers wrong for one category from a given moment on.

Quality drift (a provider silently swapping a model, a regression in a new version) is what production routing
must notice and back off from. To stage it without keys, the replay server keeps a list of :class:`Drift`
entries; while one is active, the model's answers to prompts of that category are replaced by a wrong answer:
the recorded answer with the lowest score among the other models' answers to the same prompt when that score
is below the model's own, else a labelled wrong answer (:data:`DRIFT_PREFIX`). Either way the replay judge
knows it is wrong (score 0), so online grading sees the drift.

Switched on and off with ``POST``/``DELETE /_drift`` on the replay server, or ``--drift`` of
``routelab replay-serve`` (see :func:`parse_drift_flag`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass

from evals.exceptions import ConfigError

__all__ = ["DRIFT_PREFIX", "Drift", "DriftSwitch", "parse_drift_flag"]

#: How a labelled wrong answer starts (served when no other recorded answer to the prompt is wrong).
DRIFT_PREFIX = "[replay drift: a wrong answer]"


@dataclass(frozen=True)
class Drift:
    """One staged drift: ``model`` answers ``category`` wrongly from ``start`` until ``stop`` (Unix seconds)."""

    model: str
    category: str
    start: float
    stop: float = math.inf

    def active(self, model: str, category: str, now: float) -> bool:
        """Whether this drift applies to an answer of ``model`` to a prompt of ``category`` at ``now``."""
        return model == self.model and category == self.category and self.start <= now < self.stop

    def to_dict(self) -> dict[str, object]:
        """JSON-able (an open-ended ``stop`` is null)."""
        d = asdict(self)
        d["stop"] = None if math.isinf(self.stop) else self.stop
        return d


class DriftSwitch:
    """The active and scheduled drifts of one replay server (thread-safe).

    Args:
        models: The models the server serves (a drift must name one).
        categories: The categories of its prompts (a drift must name one).
    """

    def __init__(self, models: list[str], categories: list[str]) -> None:
        self.models, self.categories = list(models), sorted(set(categories))
        self._drifts: list[Drift] = []
        self._lock = threading.Lock()

    def start(self, model: str, category: str, at: float | None = None, until: float | None = None) -> Drift:
        """Make ``model`` wrong on ``category`` from ``at`` (default now) until ``until`` (default: until stopped).

        Raises:
            ConfigError: for an unknown model or category, or ``until`` not after ``at``.
        """
        if model not in self.models:
            raise ConfigError(f"drift: unknown model {model!r}; this replay server has {', '.join(self.models)}")
        if category not in self.categories:
            raise ConfigError(
                f"drift: unknown category {category!r}; the table's categories are {', '.join(self.categories)}"
            )
        begin = time.time() if at is None else float(at)
        end = math.inf if until is None else float(until)
        if not (math.isfinite(begin) and end > begin):
            raise ConfigError(f"drift: the stop time ({until!r}) must come after the start time ({begin!r})")
        drift = Drift(model, category, begin, end)
        with self._lock:
            self._drifts.append(drift)
        return drift

    def stop(self, model: str | None = None, category: str | None = None, at: float | None = None) -> int:
        """End the drifts matching ``model``/``category`` (None = any) at ``at`` (default now); how many ended."""
        end = time.time() if at is None else float(at)
        n = 0
        with self._lock:
            kept = []
            for d in self._drifts:
                if (model is None or d.model == model) and (category is None or d.category == category) \
                        and d.stop > end:
                    n += 1
                    if d.start < end:  # keep its history: it applied until now
                        kept.append(Drift(d.model, d.category, d.start, end))
                    continue
                kept.append(d)
            self._drifts = kept
        return n

    def active(self, model: str, category: str, now: float | None = None) -> bool:
        """Whether an answer of ``model`` to a prompt of ``category`` is drifted at ``now`` (default: now)."""
        t = time.time() if now is None else now
        with self._lock:
            return any(d.active(model, category, t) for d in self._drifts)

    def listing(self) -> list[dict[str, object]]:
        """Every drift, past, current and scheduled, as JSON-able dicts."""
        with self._lock:
            return [d.to_dict() for d in self._drifts]


def parse_drift_flag(value: str, started: float) -> tuple[str, str, float, float | None]:
    """``MODEL:CATEGORY[@START_S[-STOP_S]]`` (seconds after ``started``) -> (model, category, at, until).

    Example:
        >>> parse_drift_flag("cheap:easy@30-90", 1000.0)
        ('cheap', 'easy', 1030.0, 1090.0)

    Raises:
        ConfigError: naming the flag and the expected form.
    """
    form = "--drift MODEL:CATEGORY[@START_S[-STOP_S]] (seconds after the server starts)"
    head, _, when = value.partition("@")
    model, sep, category = head.rpartition(":")
    if not sep or not model or not category:
        raise ConfigError(f"{form}: got {value!r}")
    try:
        begin_s, _, end_s = when.partition("-")
        at = started + (float(begin_s) if begin_s else 0.0)
        until = started + float(end_s) if end_s else None
    except ValueError:
        raise ConfigError(f"{form}: the times in {value!r} are not numbers") from None
    return model, category, at, until
