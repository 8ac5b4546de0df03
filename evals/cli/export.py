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
    # Imported here: `routelab --help` imports every command module, and the workflow pulls in routers,
    # scikit-learn and torch (seconds). The CLI is the top layer, so this hides no import cycle.
    from evals.workbench.export_workflow import export_from_config, export_from_run

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

    print(f"exported to {folder}")
    for line in measurement_lines(m):
        print(f"  {line}")
    print(f"  serve it: ROUTELAB_PROXY_KEYS=... routelab serve {folder}")
    return 0


def measurement_lines(m: dict) -> list[str]:
    """What ``routelab export`` prints about the measurement: the export README's lines, word for word."""
    from routers.export.measurement import Measurement  # lazy, as above: `import routers` loads scikit-learn

    return Measurement.from_dict(m).lines()
