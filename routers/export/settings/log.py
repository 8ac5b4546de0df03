"""``[log]`` of ``upstreams.toml``: the decision log (one JSON line per chat request, see
:mod:`routers.export.proxy.decision_log`).

::

    [log]
    dir = "logs/decisions"        # required to turn the log on; relative to the directory `routelab serve` runs in
    max_segment_bytes = 67108864  # start a new segment past this size (64 MiB)
    max_segment_seconds = 3600    # ... or after this long
    queue_size = 10000            # lines waiting for the writer; past it a line is dropped and counted
    store_text = false            # prompt and answer texts (off by default)
    text_cap = 4000               # characters kept per text when store_text is on
    telemetry_every_s = 60        # upstream latency/error-rate snapshots every this many seconds (0 = none)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.exceptions import ConfigError
from evals.production.records import DEFAULT_TEXT_CAP
from routers.export.settings._values import boolean, no_unknown_keys, number, text

__all__ = ["LogSettings", "MIN_TELEMETRY_EVERY_S", "parse"]

_KEYS = ("dir", "max_segment_bytes", "max_segment_seconds", "queue_size", "store_text", "text_cap",
         "telemetry_every_s")
#: The shortest period of telemetry snapshots (a shorter one would only repeat the same moving averages).
MIN_TELEMETRY_EVERY_S = 0.1


@dataclass(frozen=True)
class LogSettings:
    """Settings of ``[log]``; the log is on when ``dir`` is set."""

    dir: str | None = None
    """Directory of the segments (created at start-up); None: no decision log."""
    max_segment_bytes: int = 64 * 1024 * 1024
    """A segment is closed and a new one started before it would grow past this many bytes."""
    max_segment_seconds: float = 3600.0
    """... or once it is this old."""
    queue_size: int = 10_000
    """Lines waiting for the writer thread; when full a line is dropped and counted, never waited for."""
    store_text: bool = False
    """Store the prompt and the answer (redacted, capped); off by default: the log holds a prompt hash only."""
    text_cap: int = DEFAULT_TEXT_CAP
    """Characters kept per stored text (a longer text is cut and flagged ``text_truncated``)."""
    telemetry_every_s: float = 60.0
    """Seconds between snapshots of each upstream's live latency and error rate written to the log (only upstreams
    with new attempts since their last snapshot; one more at shutdown); 0 writes none."""

    @property
    def enabled(self) -> bool:
        """Whether the decision log is on."""
        return self.dir is not None


def parse(table: Mapping[str, Any], where: str, models: Sequence[str]) -> LogSettings:
    """Check and read the section (an empty table gives the defaults: no log).

    Raises:
        ConfigError: naming ``where`` and the key, for an unknown key or a value of the wrong type or range.
    """
    no_unknown_keys(table, where, _KEYS)
    if not table:
        return LogSettings()
    if "dir" not in table:
        raise ConfigError(f"{where}: dir is required (the directory the decision log is written to)")
    d = LogSettings()
    return LogSettings(
        dir=text(where, "dir", table["dir"]),
        max_segment_bytes=int(
            number(where, "max_segment_bytes", table.get("max_segment_bytes", d.max_segment_bytes), 1024, 2**40,
                   integer=True)
        ),
        max_segment_seconds=float(
            number(where, "max_segment_seconds", table.get("max_segment_seconds", d.max_segment_seconds), 0.1,
                   366 * 86400.0)
        ),
        queue_size=int(number(where, "queue_size", table.get("queue_size", d.queue_size), 1, 10_000_000,
                              integer=True)),
        store_text=boolean(where, "store_text", table.get("store_text", d.store_text)),
        text_cap=int(number(where, "text_cap", table.get("text_cap", d.text_cap), 1, 10_000_000, integer=True)),
        telemetry_every_s=_every(where, table.get("telemetry_every_s", d.telemetry_every_s)),
    )


def _every(where: str, value: Any) -> float:
    """``telemetry_every_s``: 0 (off) or a period from :data:`MIN_TELEMETRY_EVERY_S` to a day."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return float(number(where, "telemetry_every_s (0 = no snapshots)", value, MIN_TELEMETRY_EVERY_S, 86400.0))

