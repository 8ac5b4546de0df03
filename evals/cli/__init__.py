"""The ``routelab`` command line.

Each module in this package that defines ``register(subparsers)`` adds one sub-command (or a group), so a
new command is a new file here. Any :class:`~evals.exceptions.WorkbenchError` is printed as a one-line
message without a traceback and exits with status 2 (``GateFailed`` exits with 1).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from evals.exceptions import GateFailed, WorkbenchError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command module of this package registered."""
    parser = argparse.ArgumentParser(
        prog="routelab", description="RouteLab: fit, evaluate, compare and export LLM routers."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a failed gate, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except GateFailed as exc:
        print(f"routelab: gate failed: {exc}", file=sys.stderr)
        return 1
    except WorkbenchError as exc:
        print(f"routelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("routelab: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
