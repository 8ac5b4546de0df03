"""``[exploration]`` of ``upstreams.toml``: epsilon exploration (see :mod:`routers.export.proxy.exploration`).

::

    [exploration]
    epsilon = 0.05   # share of routed requests sent to a uniformly random eligible model; 0 turns it off
    seed = 7         # optional: a fixed random seed (reproducible experiments); default: fresh randomness

Default: without ``epsilon``, exploration is on at :data:`DEFAULT_EPSILON` **only when the decision log is on**
(``[log] dir``): exploring buys known positive propensities for every model, which only a log can use, so a
proxy without a log routes exactly as before. An explicit ``epsilon`` (0 included) always wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routers.export.settings._values import no_unknown_keys, number

__all__ = ["DEFAULT_EPSILON", "ExplorationSettings", "parse"]

#: Exploration rate used when ``[log]`` is on and ``epsilon`` is not set.
DEFAULT_EPSILON = 0.05


@dataclass(frozen=True)
class ExplorationSettings:
    """Settings of ``[exploration]``."""

    epsilon: float | None = None
    """Exploration rate in [0, 1]; None: :data:`DEFAULT_EPSILON` when the decision log is on, else 0."""
    seed: int | None = None
    """Seed of the exploration's random draws; None: fresh randomness per process."""

    def effective_epsilon(self, log_on: bool) -> float:
        """The rate the proxy uses, given whether the decision log is on (see the module docstring)."""
        if self.epsilon is not None:
            return self.epsilon
        return DEFAULT_EPSILON if log_on else 0.0


def parse(table: Mapping[str, Any], where: str, models: Sequence[str]) -> ExplorationSettings:
    """Check and read the section (an empty table gives the defaults).

    Raises:
        ConfigError: naming ``where`` and the key, for an unknown key or a value out of range.
    """
    no_unknown_keys(table, where, ("epsilon", "seed"))
    eps = table.get("epsilon")
    seed = table.get("seed")
    return ExplorationSettings(
        epsilon=None if eps is None else float(number(where, "epsilon", eps, 0.0, 1.0)),
        seed=None if seed is None else int(number(where, "seed", seed, 0, 2**63 - 1, integer=True)),
    )
