"""``[shadow]`` of ``upstreams.toml``: shadow grading against a reference model (see
:mod:`routers.export.proxy.shadow`).

::

    [shadow]
    rate = 0.2                 # share of answered, non-streamed requests also sent to the reference model
    reference = "gpt-4o"       # default: the export's most expensive model
    queue_size = 1000          # shadow calls waiting; more are dropped and counted
    workers = 2                # shadow calls in flight at once
    daily_spend_usd = 5.0      # shadow spend per UTC day (this worker); past it, samples are dropped and counted
    timeout_s = 60.0           # one reference (or judge) call's deadline
    store_text = true          # keep prompt, answer and reference texts in the shadow pair (offline grading)
    text_cap = 4000            # characters kept per text
    grade_online = true        # grade each pair now with the pairwise judge (both orders)...
    judge = "replay-judge"     # ...asking this upstream (an [upstreams] entry); required with grade_online
    exact_grader = "mcq_letter"  # pairs whose request sent x-routelab-expected are graded by exact match
    seed = 0                   # seed of the sampling draws (default: not reproducible)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.exceptions import ConfigError
from routers.export.settings._values import boolean, no_unknown_keys, number, text

__all__ = ["ShadowSettings", "parse"]

_KEYS = ("rate", "reference", "queue_size", "workers", "daily_spend_usd", "timeout_s", "store_text", "text_cap",
         "grade_online", "judge", "exact_grader", "seed")


@dataclass(frozen=True)
class ShadowSettings:
    """Settings of ``[shadow]``; shadow sampling is on when ``rate > 0``."""

    rate: float = 0.0
    """Share of answered, non-streamed requests (not answered by the reference itself) sampled, in [0, 1]."""
    reference: str | None = None
    """The reference model (an upstream); None: the export's most expensive model."""
    queue_size: int = 1000
    """Sampled requests waiting for their reference call; a sample arriving at a full queue is dropped."""
    workers: int = 2
    """Reference calls (with their grading) in flight at once."""
    daily_spend_usd: float = 5.0
    """Shadow spend cap per UTC day, this worker (reference calls at the export's prices)."""
    timeout_s: float = 60.0
    """Deadline of one reference call, and of one judge call."""
    store_text: bool = True
    """Keep the prompt, the answer and the reference answer in the shadow pair (needed to grade it offline)."""
    text_cap: int = 4000
    """Characters kept per stored text (key-shaped strings are redacted)."""
    grade_online: bool = False
    """Grade each pair right away with the pairwise judge; an adaptive export learns from the verdicts."""
    judge: str | None = None
    """The upstream asked as the judge (an ``[upstreams]`` entry, e.g. the replay server's ``replay-judge``)."""
    exact_grader: str = "mcq_letter"
    """The exact-match grader of pairs whose request carried its expected answer (``x-routelab-expected``)."""
    seed: int | None = None
    """Seed of the sampling draws (a reproducible sample for tests and benches); None: fresh randomness."""

    @property
    def enabled(self) -> bool:
        """Whether requests are sampled."""
        return self.rate > 0


def parse(table: Mapping[str, Any], where: str, models: Sequence[str]) -> ShadowSettings:
    """Check and read the section (an empty table gives the defaults: no shadow sampling).

    ``models`` are the upstreams of the file: the reference and the judge must be among them.

    Raises:
        ConfigError: naming ``where`` and the key: an unknown key, a number out of range, a reference or judge
            that is not an upstream, ``grade_online`` without a judge.
    """
    no_unknown_keys(table, where, _KEYS)
    d = ShadowSettings()
    rate = float(number(where, "rate", table.get("rate", d.rate), 0.0, 1.0))
    reference = table.get("reference")
    judge = table.get("judge")
    for key, name in (("reference", reference), ("judge", judge)):
        if name is not None:
            text(where, key, name)
            if models and name not in models:
                raise ConfigError(f"{where}: {key} {name!r} is not one of the upstreams ({', '.join(models)}); "
                                  f'add an [upstreams."{name}"] section for it')
    grade_online = boolean(where, "grade_online", table.get("grade_online", d.grade_online))
    if grade_online and judge is None:
        raise ConfigError(f"{where}: grade_online = true needs judge (the upstream asked to compare the answers, "
                          'e.g. judge = "replay-judge")')
    return ShadowSettings(
        rate=rate,
        reference=reference,
        queue_size=int(number(where, "queue_size", table.get("queue_size", d.queue_size), 1, 1_000_000,
                              integer=True)),
        workers=int(number(where, "workers", table.get("workers", d.workers), 1, 64, integer=True)),
        daily_spend_usd=float(number(where, "daily_spend_usd", table.get("daily_spend_usd", d.daily_spend_usd),
                                     0.0, 1e9)),
        timeout_s=float(number(where, "timeout_s", table.get("timeout_s", d.timeout_s), 0.01, 3600.0)),
        store_text=boolean(where, "store_text", table.get("store_text", d.store_text)),
        text_cap=int(number(where, "text_cap", table.get("text_cap", d.text_cap), 1, 10_000_000, integer=True)),
        grade_online=grade_online,
        judge=judge,
        exact_grader=_exact_grader(where, table.get("exact_grader", d.exact_grader)),
        seed=None if table.get("seed") is None else int(number(where, "seed", table["seed"], 0, 2**63 - 1,
                                                                  integer=True)),
    )


def _exact_grader(where: str, name: object) -> str:
    """A registered exact-match grader's name (one that needs no judge)."""
    from evals.graders import grader_registry

    name = text(where, "exact_grader", name)
    if name not in grader_registry.names() or grader_registry.get(name).needs_judge:
        exact = [n for n in grader_registry.names() if not grader_registry.get(n).needs_judge]
        raise ConfigError(f"{where}: exact_grader must be an exact-match grader ({', '.join(exact)}), got {name!r}")
    return name
