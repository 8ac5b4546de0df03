"""``[rollout]`` of ``upstreams.toml``: staged rollout against a control model (see
:mod:`routers.export.proxy.rollout`).

::

    [rollout]
    share = 0.1                          # share of routed traffic served by the router; the rest by control
    control = "gpt-4o"                   # default: the export's best single model (router.json measurement)
    sticky_header = "x-routelab-session" # a request carrying it (else the body's `user`) keeps its arm
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.exceptions import ConfigError
from routers.export.settings._values import no_unknown_keys, number, text

__all__ = ["DEFAULT_STICKY_HEADER", "RolloutSettings", "parse"]

#: The request header whose value keeps a session in one arm (the body's ``user`` when the header is absent).
DEFAULT_STICKY_HEADER = "x-routelab-session"


@dataclass(frozen=True)
class RolloutSettings:
    """Settings of ``[rollout]``; the rollout is on when ``share`` is set."""

    share: float | None = None
    """Share of routed requests (sessions, when sticky) served by the router, in [0, 1]; None: no rollout."""
    control: str | None = None
    """The control arm's model; None: the export's best single model (``measurement.reference_model``)."""
    sticky_header: str = DEFAULT_STICKY_HEADER
    """Header naming a session; requests with the same value always get the same arm."""

    @property
    def enabled(self) -> bool:
        """Whether a rollout is configured."""
        return self.share is not None


def parse(table: Mapping[str, Any], where: str, models: Sequence[str]) -> RolloutSettings:
    """Check and read the section (an empty table gives the defaults: no rollout).

    Raises:
        ConfigError: naming ``where`` and the key: an unknown key, a share outside [0, 1], a control that is not
            one of the export's models, a header name that is not a valid HTTP header name.
    """
    no_unknown_keys(table, where, ("share", "control", "sticky_header"))
    if not table:
        return RolloutSettings()
    if "share" not in table:
        raise ConfigError(f"{where}: share is required (the share of routed traffic the router serves, 0 to 1)")
    share = float(number(where, "share", table["share"], 0.0, 1.0))
    control = table.get("control")
    if control is not None:
        control = text(where, "control", control)
        if models and control not in models:
            raise ConfigError(f"{where}: control {control!r} is not one of the export's models ({', '.join(models)})")
    header = text(where, "sticky_header", table.get("sticky_header", DEFAULT_STICKY_HEADER)).strip().lower()
    if not all(ch.isalnum() or ch in "-_" for ch in header):
        raise ConfigError(f"{where}: sticky_header must be an HTTP header name (letters, digits, '-'), got {header!r}")
    return RolloutSettings(share=share, control=control, sticky_header=header)
