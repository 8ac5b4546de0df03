"""The optional sections of ``upstreams.toml`` beyond ``[proxy]`` and ``[upstreams]``, one module each.

Each module holds a frozen settings dataclass whose defaults leave its feature off (or at its documented
default) and a ``parse(table, where, models)`` that checks every key (type, range, no unknown keys) and raises
:class:`~evals.exceptions.ConfigError` naming the file, the section and the key. A missing section is parsed as
an empty table, so :class:`~routers.export.upstreams.ProxyConfig` always holds one settings object per section.

Sections: ``[log]`` (the decision log), ``[rollout]`` (staged rollout against a control model),
``[exploration]`` (epsilon exploration for off-policy estimates), ``[shadow]`` (shadow grading against a
reference model), ``[state]`` (state shared across replicas), ``[budget]`` (spend limits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evals.exceptions import ConfigError
from routers.export.settings import budget, exploration, log, rollout, shadow, shared_state

__all__ = ["SECTIONS", "parse_sections"]

#: Section name -> its parser ``(table, where, models) -> settings``.
SECTIONS: dict[str, Callable[[Mapping[str, Any], str, Sequence[str]], Any]] = {
    "log": log.parse,
    "rollout": rollout.parse,
    "exploration": exploration.parse,
    "shadow": shadow.parse,
    "state": shared_state.parse,
    "budget": budget.parse,
}


def parse_sections(data: Mapping[str, Any], origin: str, models: Sequence[str]) -> dict[str, Any]:
    """Every optional section of a parsed ``upstreams.toml`` (``data``), missing ones at their defaults."""
    out = {}
    for name, parse in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table, got {table!r}")
        out[name] = parse(table, f"{origin} [{name}]", models)
    return out
