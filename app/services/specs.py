"""Routers as the Compare page offers them: which are preselected, their parameters, labels and cache keys.

The app's embedding routers default to the fast ``minilm-static`` encoder (sub-millisecond per prompt; its
table is distilled once per machine, about a minute) so that a first comparison finishes in a couple of
minutes; the full ``minilm`` encoder stays one click away and is labelled as slow. A label names only what
differs from the app's defaults, so ``knn`` here is ``knn`` with ``minilm-static``, as in ``examples/*.toml``.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = [
    "APP_PARAM_DEFAULTS",
    "DEFAULT_ROUTERS",
    "ENCODER_NOTES",
    "MODEL_PARAMS",
    "ROUTERS_ENV",
    "default_routers",
    "encoder_choices",
    "make_spec",
    "router_class",
    "router_defaults",
    "router_description",
    "router_names",
    "spec_key",
    "spec_label",
]

#: Routers the Compare page preselects (those registered are kept, in this order); override with a
#: comma-separated ``ROUTELAB_APP_ROUTERS``.
DEFAULT_ROUTERS = ("category", "knn", "mf", "cost-aware", "random-mix")
ROUTERS_ENV = "ROUTELAB_APP_ROUTERS"
#: Parameters whose value is a model name: the page offers the table's models.
MODEL_PARAMS = ("model", "strong", "weak", "default_model")
#: Where the app's default differs from the router's constructor: the fast encoder for a fast first run.
APP_PARAM_DEFAULTS: dict[str, Any] = {"encoder": "minilm-static"}
#: Shown next to an encoder's name in the encoder picker.
ENCODER_NOTES = {
    "minilm-static": "fast: static MiniLM vectors, < 1 ms per prompt (distilled once, ~1 min)",
    "minilm": "SLOW: the full MiniLM network, ~5-15 prompts/s per core on a first run (cached afterwards)",
}


def router_names() -> list[str]:
    """Registered router names (importing :mod:`routers` registers every strategy)."""
    import routers

    return list(routers.router_registry.names())


def default_routers() -> list[str]:
    """The routers the Compare page preselects (``$ROUTELAB_APP_ROUTERS`` or :data:`DEFAULT_ROUTERS`)."""
    env = os.environ.get(ROUTERS_ENV, "")
    wanted = [n.strip() for n in env.split(",") if n.strip()] if env.strip() else list(DEFAULT_ROUTERS)
    have = set(router_names())
    return [n for n in wanted if n in have]


def router_class(name: str) -> type:
    """The registered class of a router name."""
    from routers.registry import router_registry

    return router_registry.get(name)


def router_defaults(name: str) -> dict[str, Any]:
    """A router's default parameters as the app offers them: the constructor's, with :data:`APP_PARAM_DEFAULTS`
    where the router has that parameter."""
    params = router_class(name)().get_params(deep=False)
    return {k: APP_PARAM_DEFAULTS.get(k, v) for k, v in params.items()}


def router_description(name: str) -> str:
    """The first line of a router's docstring."""
    return router_class(name).describe()


def encoder_choices() -> list[str]:
    """Encoder names for the picker: the fast default first, then the rest of the registry."""
    from routers.embeddings import encoder_names

    names = encoder_names()
    first = [n for n in ("minilm-static", "minilm") if n in names]
    return first + [n for n in names if n not in first]


def make_spec(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The spec the page runs: the parameters that differ from the router's *constructor* defaults.

    So the app's own defaults (the fast encoder) are written out, and the spec means the same to
    ``routelab eval``, MLflow and an export as it does here.
    """
    ctor = router_class(name)().get_params(deep=False)
    return {"name": name, "params": {k: v for k, v in params.items() if ctor.get(k, object()) != v}}


def spec_label(spec: dict[str, Any]) -> str:
    """A short label: the name plus the parameters that differ from the app's defaults, ``knn(k=20)``."""
    defaults = router_defaults(spec["name"])
    changed = {k: v for k, v in (spec.get("params") or {}).items() if defaults.get(k, object()) != v}
    if not changed:
        return str(spec["name"])
    return f"{spec['name']}(" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"


def spec_key(spec: dict[str, Any]) -> str:
    """A canonical JSON text of a spec (cache key)."""
    return json.dumps({"name": spec["name"], "params": spec.get("params") or {}}, sort_keys=True, default=str)
