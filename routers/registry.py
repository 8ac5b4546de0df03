"""The router registry: ``@register_router(name)`` on a :class:`~routers.base.Router` subclass.

Registering is enough to appear in ``routelab routers list``, in the app, in configs, and in the
conformance check that the test suite runs over every registered router.

Parameters are checked against each router's declared ``parameter_constraints`` (:mod:`routers.params`):
:func:`validate_params` for configs and forms, :func:`param_specs` to describe them (CLI, app widgets).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from evals.exceptions import ConfigError
from evals.registry import Registry, did_you_mean
from routers.params import validate_constraints

__all__ = [
    "make_router",
    "name_of",
    "param_specs",
    "register_router",
    "router_registry",
    "validate_params",
]

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
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"router {spec['name']!r}: params must be a table of name = value, got {params!r}")
    params = dict(params)
    cls = validate_params(str(spec["name"]), params)
    return cls(**params)


def _router_class(name: str) -> type:
    import routers  # noqa: F401  (imports every strategy module so that all are registered)

    return router_registry.get(name)


def validate_params(name: str, params: Mapping[str, Any]) -> type:
    """Check parameters for the router registered as ``name`` without building it; returns its class.

    Used by :func:`make_router`, by the workbench's config loader and by the app's forms, so that a bad value
    is refused up front with one line naming the router and the parameter. Only the given parameters are
    checked (the others keep their defaults). Model names are checked against the table later, in ``fit``.

    Raises:
        UnknownComponentError: an unregistered router name (with the closest names).
        ConfigError: a parameter the router does not take (with the closest names and the full list).
        routers.params.InvalidParameterError: a value outside the declared constraint, e.g.
            ``router 'knn': parameter 'k' must be an int >= 1, got -5``.

    Example:
        >>> validate_params("knn", {"k": 10}).__name__
        'KNNRouter'
    """
    cls = _router_class(name)
    valid = cls._get_param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        hint = did_you_mean(unknown[0], valid) if len(unknown) == 1 else ""
        raise ConfigError(
            f"router {name!r} has no parameter(s) {unknown}{hint}; its parameters are: "
            f"{', '.join(sorted(valid)) or '(none)'}"
        )
    validate_constraints(f"router {name!r}", cls.parameter_constraints, params)
    return cls


def param_specs(name_or_cls: str | type) -> list[dict[str, Any]]:
    """One JSON-able description per parameter of a router, in ``__init__`` order, to build forms from.

    Each entry is ``{"name", "default", "help", "kind", "low", "high", "closed", "options", "free_text",
    "nullable", "role", "text"}``: ``kind`` is ``int``/``float``/``bool``/``str``/``list``; ``low``/``high``
    bound numbers (None = open), ``closed`` says which ends are included (``both``/``left``/``right``/
    ``neither``); ``options`` lists the choices of a string (``free_text`` False: only those; True: a
    suggestion list, e.g. encoders); ``nullable`` means None is valid (usually "chosen on the train table");
    ``role`` is ``model``/``encoder``/``path``/``""``; ``text`` is the constraint in words; ``help`` is the
    parameter's line in the class docstring.

    Example:
        >>> [(p["name"], p["kind"], p["low"]) for p in param_specs("knn")][:2]
        [('encoder', 'str', None), ('k', 'int', 1)]
    """
    cls = _router_class(name_or_cls) if isinstance(name_or_cls, str) else name_or_cls
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    helps = _param_help(cls.__doc__ or "")
    out = []
    for pname in cls._get_param_names():
        declared = cls.parameter_constraints.get(pname)
        described = declared.to_dict() if declared is not None else {"kind": None, "text": "(undeclared)"}
        out.append({"name": pname, "default": defaults.get(pname), "help": helps.get(pname, ""), **described})
    order = list(inspect.signature(cls.__init__).parameters)
    return sorted(out, key=lambda d: order.index(d["name"]) if d["name"] in order else len(order))


_ARG_LINE = re.compile(r"^(\s+)([A-Za-z_][A-Za-z0-9_]*(?:, [A-Za-z_][A-Za-z0-9_]*)*): (.*)$")


def _param_help(doc: str) -> dict[str, str]:
    """Parameter -> its description, from the first ``Args:`` block of a Google-style docstring."""
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        m = _ARG_LINE.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            names = m.group(2).split(", ")
            for n in names:
                out[n] = m.group(3).strip()
        elif names and indent is not None and len(line) - len(line.lstrip()) > indent:
            for n in names:  # a continuation line
                out[n] += " " + line.strip()
        else:
            break
    return out
