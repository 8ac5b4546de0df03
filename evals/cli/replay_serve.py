"""``routelab replay-serve SOURCE``: an OpenAI-compatible server answering from recorded outcomes."""

from __future__ import annotations

import argparse
import sys

from evals.exceptions import ConfigError

# Constants only (answers.py is light): the heavy modules are imported when the command runs.
from evals.serving.answers import CANNED_PREFIX, DEFAULT_FAULTS, FAULT_KINDS, UNKNOWN_PROMPT_MODES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay-serve`` sub-command."""
    p = subparsers.add_parser(
        "replay-serve",
        help="serve recorded answers of an OutcomeTable over the OpenAI chat-completions API",
        description="Start an OpenAI-compatible server (POST /v1/chat/completions, GET /v1/models, "
        "GET /_stats) "
        "that answers with the recorded response of the requested model for the prompt of the last user "
        "message. Useful to try routelab collect and the exported proxy without keys. It also answers as a "
        "pairwise judge (--judge-model, from the recorded correctness of the two answers) and can stage quality "
        "drift (--drift, or POST/DELETE /_drift at run time).",
    )
    p.add_argument("source", help="a source name (routelab datasets list) or an outcome file")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added delay per answer, in ms")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests given an injected fault")
    p.add_argument(
        "--fault-kinds",
        "--faults",
        dest="faults",
        metavar="KINDS",
        default=",".join(DEFAULT_FAULTS),
        help=f"comma-separated fault kinds to inject, or 'all' (default {','.join(DEFAULT_FAULTS)}; "
        f"all: {','.join(FAULT_KINDS)}; what each does: pydoc evals.serving.answers)",
    )
    p.add_argument(
        "--hang-s",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds an injected timeout holds a request (and a slow body takes)",
    )
    p.add_argument(
        "--retry-after-s", type=float, default=1.0, metavar="S", help="Retry-After seconds of an injected 429"
    )
    p.add_argument(
        "--unknown-prompts",
        choices=UNKNOWN_PROMPT_MODES,
        default="404",
        help="a prompt without a recorded answer gets a 404 (default) or, with 'canned', a 200 whose content "
        f"starts with {CANNED_PREFIX!r} (so any prompt works in a demo)",
    )
    p.add_argument(
        "--judge-model",
        default="replay-judge",
        metavar="NAME",
        help="model name answered as a pairwise judge from the recorded scores of the two answers "
        "(default replay-judge)",
    )
    p.add_argument(
        "--drift",
        action="append",
        default=[],
        metavar="MODEL:CATEGORY[@START_S[-STOP_S]]",
        help="make MODEL's answers to CATEGORY's prompts wrong from START_S seconds after start (default 0) "
        "until STOP_S (default: until DELETE /_drift); repeatable. POST/DELETE /_drift does the same at run time",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fault sequence")
    p.add_argument("--models", help="comma-separated models to serve (default: all of the table)")
    p.add_argument("--limit", type=int, help="serve only the first N samples")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import time

    from evals import sources
    from evals.serving import ReplayServer
    from evals.serving.drift import parse_drift_flag

    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    if faults == ["all"]:
        faults = list(FAULT_KINDS)
    unknown = [f for f in faults if f not in FAULT_KINDS]
    if unknown:  # before the (slow) table load
        raise ConfigError(f"--fault-kinds: unknown fault kind(s) {unknown}; valid: all, {', '.join(FAULT_KINDS)}")
    started = time.time()
    drifts = [parse_drift_flag(d, started) for d in args.drift]  # form checked before the (slow) table load
    table = sources.load(args.source)
    if args.models:
        table = table.select(models=[m.strip() for m in args.models.split(",") if m.strip()])
    if args.limit:
        table = table.select(sample_ids=table.sample_ids[: args.limit])
    server = ReplayServer(
        table,
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        faults=faults,
        seed=args.seed,
        retry_after_s=args.retry_after_s,
        hang_s=args.hang_s,
        unknown_prompts=args.unknown_prompts,
        judge_model=args.judge_model,
    )
    for model, category, at, until in drifts:
        server.start_drift(model, category, at, until)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"routelab: warning: serving on {args.host}, not loopback", file=sys.stderr)

    def announce(base_url: str) -> None:
        notes = []
        if args.unknown_prompts == "canned":
            notes.append("unknown prompts get a canned answer")
        if drifts:
            notes.append("drift: " + ", ".join(args.drift))
        if args.fault_rate:
            notes.append(f"injected faults on {args.fault_rate:g} of requests ({', '.join(faults)})")
        print(
            f"replaying {table!r} ({', '.join(table.models)}); base_url {base_url}"
            f"{''.join('; ' + n for n in notes)} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

    try:
        server.serve_forever(announce)
    except KeyboardInterrupt:
        pass
    return 0
