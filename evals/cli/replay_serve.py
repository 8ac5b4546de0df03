"""``routelab replay-serve SOURCE``: an OpenAI-compatible server answering from recorded outcomes."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay-serve`` sub-command."""
    p = subparsers.add_parser(
        "replay-serve",
        help="serve recorded answers of an OutcomeTable over the OpenAI chat-completions API",
        description="Start an OpenAI-compatible server (POST /v1/chat/completions, GET /v1/models, "
        "GET /_stats) "
        "that answers with the recorded response of the requested model for the prompt of the last user "
        "message. Useful to try routelab collect and the exported proxy without keys.",
    )
    p.add_argument("source", help="a source name (routelab datasets list) or an outcome file")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added delay per answer, in ms")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests given an injected fault")
    p.add_argument("--faults", default="429,500,timeout,malformed,drop", help="fault kinds to inject")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault sequence")
    p.add_argument("--models", help="comma-separated models to serve (default: all of the table)")
    p.add_argument("--limit", type=int, help="serve only the first N samples")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from evals import sources
    from evals.serving import ReplayServer

    table = sources.load(args.source)
    if args.models:
        table = table.select(models=[m.strip() for m in args.models.split(",") if m.strip()])
    if args.limit:
        table = table.select(sample_ids=table.sample_ids[: args.limit])
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    server = ReplayServer(
        table,
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        faults=faults,
        seed=args.seed,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"routelab: warning: serving on {args.host}, not loopback", file=sys.stderr)

    def announce(base_url: str) -> None:
        print(
            f"replaying {table!r} ({', '.join(table.models)}); base_url {base_url} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

    try:
        server.serve_forever(announce)
    except KeyboardInterrupt:
        pass
    return 0
