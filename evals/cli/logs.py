"""``routelab logs grade | report | to-outcomes LOGDIR``: from a serving router's decision log back to evidence.

- ``grade``: grade the log's shadow pairs (exact match where the expected answer is known, else a pairwise judge
  in both orders) and append the grades to the log; pairs already graded by that grader are skipped.
- ``report``: promised vs delivered: the export's measured saving and quality beside the live ones (A/B against
  the control arm, win/tie/loss against the reference), per category and over time, off-policy estimates of
  other operating points or exports, drift flags; Markdown + JSON, logged to MLflow.
- ``to-outcomes``: graded shadow pairs, or client feedback naming its request (``POST /v1/feedback`` with
  ``request_id``, on a log that stored texts), as an OutcomeTable (provenance ``production``) for ``routelab eval``,
  the app and ``routelab export``; one grader's scores per table (``--grader feedback`` for the feedback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from evals.exceptions import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``logs`` command group."""
    p = subparsers.add_parser("logs", help="grade, report on and reuse a serving router's decision log",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="logs_command", metavar="SUBCOMMAND")
    sub.required = True

    g = sub.add_parser("grade", help="grade the log's shadow pairs (judge both orders, or exact match)")
    g.add_argument("log_dir", metavar="LOGDIR", help="the decision-log directory ([log] dir of the proxy)")
    g.add_argument("--judge-url", metavar="URL", help="OpenAI-compatible base URL of the judge (up to /v1)")
    g.add_argument("--judge-model", metavar="NAME", help="the judge model's name")
    g.add_argument("--judge-key-env", metavar="VAR", default="",
                   help="NAME of the environment variable holding the judge's API key (default: none)")
    g.add_argument("--exact-grader", default="mcq_letter", metavar="NAME",
                   help="exact-match grader for pairs with an expected answer (mcq_letter, number, text)")
    g.add_argument("--concurrency", type=int, default=8, help="judge calls in flight (default 8)")
    g.set_defaults(func=run_grade)

    r = sub.add_parser("report", help="promised vs delivered: the export's numbers beside the live ones")
    r.add_argument("log_dir", metavar="LOGDIR")
    r.add_argument("--export", required=True, metavar="EXPORT", help="the export folder that served the traffic")
    r.add_argument("--compare", nargs="+", default=[], metavar="OTHER_EXPORT",
                   help="other export folders to estimate off-policy on the logged traffic")
    r.add_argument("--lam", type=float, action="append", default=[], metavar="LAM",
                   help="another operating point of EXPORT to estimate off-policy (repeatable)")
    r.add_argument("--prompts", metavar="SOURCE",
                   help="a source or outcome file whose prompts the log's prompt hashes refer to (for --compare "
                        "when the log stored no texts)")
    r.add_argument("--offline", metavar="SOURCE",
                   help="the evaluation's outcomes (a source or file): per-category offline intervals for the "
                        "drift flags (default: the export's overall interval for every category)")
    r.add_argument("--bucket", choices=("hour", "day"), help="time buckets (default: by the log's span)")
    r.add_argument("--grader", metavar="LABEL", help="only grades of this grader (exact, judge:<model>)")
    r.add_argument("--min-n", type=int, default=20, help="graded requests a category needs to be flagged")
    r.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    r.add_argument("--out", metavar="DIR", help="folder for report.md and report.json "
                                                "(default reports/production-<LOGDIR name>)")
    r.add_argument("--json", metavar="PATH", help="also write the report JSON to PATH")
    r.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    r.set_defaults(func=run_report)

    o = sub.add_parser("to-outcomes", help="graded shadow pairs or feedback -> an OutcomeTable (provenance "
                                           "production)")
    o.add_argument("log_dir", metavar="LOGDIR")
    o.add_argument("-o", "--output", required=True, metavar="FILE", help="the Parquet file to write")
    o.add_argument("--grader", metavar="LABEL",
                   help="scores of this grader: exact, judge:<model>, or feedback (client feedback joined to its "
                        "request); one grader per table (default: the label with the most scores)")
    o.add_argument("--models", metavar="A,B", help="models to keep (default: the reference and the most-graded "
                                                   "answered model; for feedback, the most-scored model and the "
                                                   "one sharing the most prompts with it)")
    o.set_defaults(func=run_to_outcomes)


def run_grade(args: argparse.Namespace) -> int:
    """Handler of ``routelab logs grade``."""
    from evals.production.grading import grade_log, http_judge

    if bool(args.judge_url) != bool(args.judge_model):
        raise ConfigError("--judge-url and --judge-model go together (the judge's endpoint and its model name)")

    async def go():  # noqa: ANN202 - local coroutine
        if args.judge_url:
            async with http_judge(args.judge_url, args.judge_model, api_key_env=args.judge_key_env,
                                  concurrency=args.concurrency) as judge:
                return await grade_log(args.log_dir, judge=judge, judge_model=args.judge_model,
                                       exact_grader=args.exact_grader, concurrency=args.concurrency)
        return await grade_log(args.log_dir, exact_grader=args.exact_grader, concurrency=args.concurrency)

    run = asyncio.run(go())
    print(run.summary())
    for err in run.errors:
        print(f"  judge error: {err}", file=sys.stderr)
    for path in run.segments:
        print(f"wrote {path}")
    if run.skipped.get("needs a judge"):
        print(f"{run.skipped['needs a judge']:,} pair(s) have no expected answer: grade them with --judge-url and "
              "--judge-model", file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Handler of ``routelab logs report``."""
    from evals.sources import load
    from evals.workbench.production_report import build_report, prompts_from_table

    prompts = prompts_from_table(load(args.prompts)) if args.prompts else None
    offline = load(args.offline) if args.offline else None
    report = build_report(args.log_dir, args.export, compare=args.compare, lams=args.lam, prompts=prompts,
                          offline=offline, bucket=args.bucket, grader=args.grader, min_n=args.min_n,
                          n_resamples=args.resamples)
    text = report.to_markdown()
    print(text)
    out = Path(args.out) if args.out else Path("reports") / f"production-{Path(args.log_dir).resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "report.md", out / "report.json"
    md.write_text(text, encoding="utf-8")
    doc = json.dumps(report.to_dict(), indent=2, default=str)
    js.write_text(doc, encoding="utf-8")
    print(f"report: {md}  {js}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(doc, encoding="utf-8")
        print(f"json: {args.json}")
    if not args.no_mlflow:
        from evals.tracking import log_production_report, safe_uri, tracking_uri

        run_id = log_production_report(report, report_paths=[md, js])
        print(f"mlflow: run {run_id} at {safe_uri(tracking_uri())}")
    return 0


def run_to_outcomes(args: argparse.Namespace) -> int:
    """Handler of ``routelab logs to-outcomes``."""
    from evals.production.log_reader import read_log
    from evals.production.to_outcomes import FEEDBACK_GRADER, to_outcomes

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    built = to_outcomes(read_log(args.log_dir), grader=args.grader, models=models, origin=str(args.log_dir))
    path = built.table.to_parquet(args.output)
    print(built.summary())
    what = "feedback" if built.grader == FEEDBACK_GRADER else "graded pairs"
    print(f"answered models' {what}: {built.pairs_per_model}")
    print(f"wrote {path} (use it as a source: [dataset] source = \"{path}\")")
    return 0
