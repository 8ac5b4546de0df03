"""``routelab export``: write a deployable folder for one router at one operating point.

Examples::

    routelab export --config examples/mmlu_pro.toml --router knn --target parity:0.01 --out exports/knn
    routelab export --config examples/mmlu_pro.toml --router category --lam 0.002 --out exports/cat
    routelab export --run-id 3f2a... --out exports/knn            # a router run logged by `routelab eval`
"""

from __future__ import annotations

import argparse
import json

from evals.exceptions import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="export a fitted router at an operating point to a deployable folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="evaluation config (TOML) whose split and router spec to use")
    src.add_argument(
        "--run-id", help="MLflow run logged by `routelab eval` (a router run, or the parent + --router)"
    )
    p.add_argument("--router", help="router label (or name) in the config / evaluation run")
    point = p.add_mutually_exclusive_group()
    point.add_argument("--lam", type=float, help="operating point: dollars per request paid for +1.0 quality")
    point.add_argument(
        "--target",
        help="calibrate on validation: parity:0.01, budget:2.0, quality_floor:0.7, "
        "strong_share:0.3 (default: the config's [target])",
    )
    p.add_argument("--out", required=True, help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    p.add_argument("--data-dir", help="public-data folder (default: ROUTELAB_DATA_DIR or ../shared/data)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI for --run-id (default: MLFLOW_TRACKING_URI or ./mlflow.db)",
    )
    p.add_argument(
        "--upstream-base-url", help="base URL (up to /v1) for every model's upstream in upstreams.toml"
    )
    p.add_argument(
        "--upstream-key-env", help="environment variable NAME holding the upstream key (every model)"
    )
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from routers.export.workflow import export_from_config, export_from_run

    common = {}
    if args.upstream_base_url:
        common["base_url"] = args.upstream_base_url
    if args.upstream_key_env:
        common["api_key_env"] = args.upstream_key_env
    upstreams = {"*": common} if common else None
    if args.config:
        if not args.router:
            raise ConfigError("--config needs --router (a router label of that config)")
        folder, m = export_from_config(
            args.config,
            args.router,
            args.out,
            lam=args.lam,
            target=args.target,
            data_dir=args.data_dir,
            overwrite=args.overwrite,
            upstreams=upstreams,
        )
    else:
        if args.target:
            raise ConfigError(
                "--target calibrates a config's router; with --run-id use the run's point or --lam"
            )
        folder, m = export_from_run(
            args.run_id,
            args.out,
            router=args.router,
            lam=args.lam,
            tracking_uri=args.tracking_uri,
            data_dir=args.data_dir,
            overwrite=args.overwrite,
            upstreams=upstreams,
        )
    if args.json:
        print(json.dumps({"folder": str(folder), "measurement": m}, indent=2))
        return 0

    def ci(pair: list, scale: float = 1.0, fmt: str = ".3f") -> str:
        return "[" + ", ".join("—" if v is None else format(v * scale, fmt) for v in pair) + "]"

    est = " (costs ESTIMATED)" if m["cost_estimated"] else ""
    print(f"exported to {folder}")
    print(f"  operating point: {m['operating_point']}")
    print(
        f"  on test (n={m['n_test']}){est}: quality {m['quality']:.3f} {ci(m['quality_ci95'])}, "
        f"${m['cost_per_1k_usd']:.4f}/1k requests {ci(m['cost_per_1k_ci95'], 1, '.4f')}"
    )
    sav = m["savings_vs_best_single"]
    print(
        f"  vs best single model {m['best_single_model']} ({m['best_single_quality']:.3f}): quality "
        f"{m['quality_diff_vs_best_single']:+.3f} {ci(m['quality_diff_ci95'])}, savings "
        f"{'n/a' if sav is None else f'{sav:.1%}'} {ci(m['savings_ci95'], 100, '.1f')}%"
    )
    print(f"  serve it: ROUTELAB_PROXY_KEYS=... routelab serve {folder}")
    return 0
