"""``routelab routers list``: every registered routing strategy, what it does, its parameters and the values each
takes (the router's declared ``parameter_constraints``, see :mod:`routers.params`)."""

from __future__ import annotations

import argparse
import inspect
import json

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``routers`` command group."""
    parser = subparsers.add_parser("routers", help="list the registered router strategies")
    sub = parser.add_subparsers(dest="routers_command", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser(
        "list", help="print every registered strategy with a one-line description and its parameters"
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    ls.set_defaults(func=_list)


def describe_routers() -> list[dict]:
    """One dict per registered router: name, description, exportable, parameters with defaults, constraints.

    ``params`` maps each parameter to its default; ``constraints`` to the constraint in words (``"an int >=
    1"``); ``param_specs`` is :func:`routers.registry.param_specs` (kind, range, options, help: for forms).
    """
    import routers
    from routers.registry import param_specs

    out = []
    for name, cls in routers.router_registry.items():
        sig = inspect.signature(cls.__init__)
        params = {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        specs = param_specs(cls)
        out.append(
            {
                "name": name,
                "description": cls.describe(),
                "exportable": bool(getattr(cls, "exportable", True)),
                "params": params,
                "constraints": {p["name"]: p["text"] for p in specs},
                "param_specs": specs,
            }
        )
    return out


def _list(args: argparse.Namespace) -> int:
    rows = describe_routers()
    if args.json:
        print(json.dumps(rows, indent=2, default=repr))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        note = "" if r["exportable"] else "  [not exportable]"
        print(f"{r['name']:<{width}}  {r['description']}{note}")
        params = ", ".join(f"{k}={json.dumps(v, default=repr)}" for k, v in r["params"].items())
        print(f"{'':<{width}}  params: {params or '(none)'}")
        pad = max((len(k) for k in r["constraints"]), default=0)
        for k, text in r["constraints"].items():
            print(f"{'':<{width}}    {k:<{pad}}  {text}")
    return 0
