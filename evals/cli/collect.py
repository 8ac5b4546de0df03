"""``routelab collect CONFIG``: collect and grade answers, write an OutcomeTable, print what was spent."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``collect`` sub-command."""
    p = subparsers.add_parser(
        "collect",
        help="call each model once per sample (cached, resumable), grade, write an OutcomeTable",
        description="Call every model of CONFIG once per sample over its OpenAI-compatible API, grade "
        "the answers and write a graded OutcomeTable (Parquet + card). Answers are cached by request, so an "
        "interrupted run resumes without paying twice. Prints calls, cache hits, tokens and dollars per "
        "model, after printing the estimated spend. "
        "Exit status: 0 when every (sample, model) was graded, 1 when some calls failed (rerun to retry "
        "them), 2 on bad input (including a damaged cache file), 3 when the spend cap stopped the run "
        "(rerun with a higher cap to continue).",
    )
    p.add_argument("config", help="collection config (TOML); see examples/collect_replay.toml")
    p.add_argument("--output", help="Parquet file to write (overrides the config's 'output')")
    p.add_argument("--cache", help="SQLite answer cache (overrides the config's 'cache')")
    p.add_argument(
        "--max-spend",
        type=float,
        metavar="USD",
        help="stop before this run pays more than USD dollars (overrides the config's 'max_spend_usd')",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from evals.collect import collect, load_config
    from evals.exceptions import ConfigError

    config = load_config(args.config)
    if args.output:
        config = replace(config, output=Path(args.output))
    if args.cache:
        config = replace(config, cache=Path(args.cache))
    if args.max_spend is not None:
        if not args.max_spend >= 0 or args.max_spend == float("inf"):
            raise ConfigError(f"--max-spend must be a finite number of dollars >= 0, got {args.max_spend!r}")
        config = replace(config, max_spend_usd=args.max_spend)
    result = collect(config, progress=not args.no_progress, on_estimate=lambda e: print(e.describe(), flush=True))
    print(result.format_spend())
    for sid, model, message in result.failures[:10]:
        print(f"failed: sample {sid!r}, model {model!r}: {message}", file=sys.stderr)
    if result.table is None:
        print("routelab: nothing was graded; no table written", file=sys.stderr)
        return 3 if result.stopped_at_cap else 1
    t = result.table
    print(
        f"wrote {config.output} ({t.n_samples} samples x {t.n_models} models, "
        f"grader {t.frame['grader'].iat[0]})"
    )
    return 3 if result.stopped_at_cap else 1 if result.failures else 0
