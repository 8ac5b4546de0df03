"""``routelab serve FOLDER``: the OpenAI-compatible routing proxy for an export folder.

Clients send ``Authorization: Bearer <key>`` with a key listed (comma-separated) in the environment variable
named by the folder's ``upstreams.toml`` (``ROUTELAB_PROXY_KEYS`` by default); ``--no-auth`` runs without
client keys (local use only). Upstream keys come from the environment variables named in ``upstreams.toml``.

At start it prints each upstream, its key variable and whether it can answer ("ready", or "NO KEY" when the
variable it names is unset; upstreams that name no variable need none). ``upstreams.toml`` is checked first:
a wrong field, an upstream key variable equal to the client-key variable, or plain http to another machine
without ``allow_insecure = true`` stops it with a one-line error (exit 2). Its ``[proxy]`` section sets the
per-request deadline, fallback hops, size caps, client timeouts and the connection cap.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    p = subparsers.add_parser(
        "serve",
        help="serve an exported router as an OpenAI-compatible proxy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", help="export folder written by `routelab export`")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a client bearer key")
    p.add_argument("--upstreams", help="use this upstreams.toml instead of the folder's")
    p.add_argument(
        "--trust-runtime",
        action="store_true",
        help="run a runtime.py written by another RouteLab version (review it first)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (default 1); each keeps its own breakers, metrics and "
        "adaptive counts",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from routers.export.proxy import serve

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if args.no_auth and not loopback:
        print(
            f"routelab serve: warning: --no-auth on {args.host}: anyone who can reach this port can spend "
            "your "
            "upstream keys",
            file=sys.stderr,
        )
    serve(
        args.folder,
        host=args.host,
        port=args.port,
        no_auth=args.no_auth,
        upstreams_path=args.upstreams,
        trust_foreign_runtime=args.trust_runtime,
        log_level=args.log_level,
        workers=args.workers,
    )
    return 0
