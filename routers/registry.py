"""The router registry: ``@register_router(name)`` on a :class:`~routers.base.Router` subclass.

Registering is enough to appear in ``routelab routers list``, in the app, in configs, and in the
conformance check that the test suite runs over every registered router.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evals.exceptions import ConfigError
from evals.registry import Registry

__all__ = ["make_router", "name_of", "register_router", "router_registry"]

router_registry: Registry[type] = Registry("router")


def register_router(name: str) -> Callable[[type], type]:
    """Class decorator: register a Router subclass under ``name``."""

    def decorator(cls: type) -> type:
        from routers.base import Router

        if not (isinstance(cls, type) and issubclass(cls, Router)):
            raise TypeError(f"@register_router({name!r}) needs a Router subclass, got {cls!r}")
        router_registry.add(name, cls)
        cls._registered_name = name  # type: ignore[attr-defined]
        return cls

    return decorator


def name_of(cls: type) -> str:
    """The registered name of a router class (its class name if unregistered)."""
    # Look in the class's own namespace: an unregistered subclass must not borrow its parent's name.
    return cls.__dict__.get("_registered_name", cls.__name__)


def make_router(spec: str | dict[str, Any]) -> Any:
    """Build a router from a spec: a name, or ``{"name": ..., "params": {...}}``.

    Raises:
        UnknownComponentError: for an unregistered name (lists the registered ones).
        ConfigError: for a parameter the router does not take (lists those it does).
    """
    import routers  # noqa: F401  (imports every strategy module so that all are registered)

    if isinstance(spec, str):
        spec = {"name": spec, "params": {}}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"a router spec needs a 'name', got {spec!r}")
    cls = router_registry.get(str(spec["name"]))
    params = dict(spec.get("params") or {})
    valid = cls().get_params(deep=False) if not params else cls._get_param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"router {spec['name']!r} has no parameter(s) {unknown}; its parameters are: {', '.join(sorted(valid))}"
        )
    return cls(**params)
