"""``routelab eval CONFIG``: fit, replay and compare routers from one TOML config, then gate on the result.

Prints a table, logs to MLflow (parent run + a child run per router), writes a Markdown + HTML report, and
exits 1 with a message naming the failed gate(s) when a gate in the config's ``[gates]`` is not met. A config
or data problem exits 2 with one line naming the file and the field (every config field is type- and
range-checked before anything runs). Warnings that no conclusion can be drawn (a test split under 100
samples, a model missing from most samples) are printed before any number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evals.exceptions import GateFailed
from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate routers from a TOML config (frontier, savings, MLflow, report, gates)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="TOML config (see examples/mmlu_pro.toml)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="folder for report.md / report.html (default: reports/<config name>)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--data-dir", metavar="D", default=None, help="public-data folder (default: resolved)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``routelab eval`` (raises GateFailed for a failed gate: exit status 1)."""
    # Imported here, not at module top: `routelab --help` imports every command module, and these pull in
    # scikit-learn, torch and mlflow (seconds). The CLI is the top layer, so this hides no import cycle.
    import pandas as pd

    from evals.report import NON_INFERIOR_EXPLAINED, TARGETS_EXPLAINED, cost_provenance, write_report
    from evals.workbench.experiment import check_gates, load_config, run_experiment

    cfg = load_config(args.config)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  {msg}", file=sys.stderr, flush=True)

    result = run_experiment(cfg, data_dir=args.data_dir, progress=progress)
    gate_lines: list[str] = []
    gate_error: str | None = None
    try:
        gate_lines = check_gates(result)
    except GateFailed as exc:
        gate_error = str(exc)

    for warning in result.warnings:  # before any number: these say no conclusion can be drawn
        print(f"WARNING: {warning}")
    for note in result.notes:
        print(f"NOTE: {note}")
    est = " (costs estimated)" if result.cost_estimated else ""
    b, o = result.best_single, result.oracle
    print(
        f"\n{result.dataset}: n_test={result.n_test} "
        f"(train {result.n_train}, validation {result.n_validation})"
        f"{est}; 95% paired-bootstrap intervals, {cfg.n_resamples} resamples"
    )
    print(
        f"best single model: {b['name']}  quality {format_interval(b['quality_ci'], digits=3)}"
        f"  ${b['cost_per_1k']:.4f}/1k"
    )
    print(f"oracle:            quality {o['quality']:.3f}  ${o['cost_per_1k']:.4f}/1k")
    print(cost_provenance(result.table).replace("**", "") + "\n")
    with pd.option_context(
        "display.width",
        250,
        "display.max_columns",
        30,
        "display.max_colwidth",
        40,
        "display.float_format",
        "{:.4f}".format,
    ):
        print(result.summary_frame().to_string(index=False))
        targets = cfg.targets
        if len(targets) > 1 or any(t.risk_control for t in targets):
            print("\ntargets (each chosen on validation from the same fit, measured on test):")
            print(result.targets_frame().to_string(index=False))
            print(f"({TARGETS_EXPLAINED})")
    print(
        f"\nsavings@parity (test frontier): {POINT_TEST_FRONTIER} (cheapest test point within the margin; "
        "optimistic)\n"
        f"savings (val-chosen point): {POINT_VALIDATION_CHOSEN} (what `routelab export` of that point gets)"
    )

    out_dir = (
        Path(args.out) if args.out else Path("reports") / (cfg.name or Path(cfg.path).stem or result.dataset)
    )
    md_path, html_path = write_report(result, out_dir, gate_lines=gate_lines, gate_error=gate_error)
    print(f"\nreport: {md_path}  {html_path}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = result.to_json()
        doc["gates_passed"] = gate_error is None
        doc["gate_error"] = gate_error
        path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        print(f"json: {path}")
    if not args.no_mlflow:
        from evals.tracking import log_evaluation, safe_uri, tracking_uri  # mlflow: only when logging

        run_id = log_evaluation(result, report_paths=[md_path, html_path])
        print(f"mlflow: run {run_id} at {safe_uri(tracking_uri())}")
    for line in gate_lines:
        print(f"gate {line}")
    if gate_lines or gate_error:
        print(f"({NON_INFERIOR_EXPLAINED})")
    if gate_error:
        raise GateFailed(gate_error)
    return 0
