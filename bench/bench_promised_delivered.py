"""Promised vs delivered, end to end (issue 15, must-show): a staged rollout of an MMLU-Pro export, replayed.

1. **Export** the ``category`` router of ``examples/mmlu_pro.toml`` exactly as ``routelab export --config ...
   --router category`` does (fitted on train, operating point calibrated on validation for the config's target,
   measured on test: the promise, with its 95% interval).
2. **Serve** it with the real proxy (in-process, as in ``tests/routers/proxy_helpers.py``) with every upstream at the
   replay server (``evals/serving/replay.py``) on loopback, and ``[log]``, ``[rollout] share = 0.5`` (control: the
   best single model), ``[shadow] rate = 0.2`` (reference: the best single model) and exploration at its default.
   ``--requests`` (default 2,000) test prompts, drawn with replacement, each with its category header.
3. **Grade** the shadow pairs offline with ``routelab logs grade`` and the replay server's pairwise judge (verdicts
   from the recorded correctness), then **report** with ``routelab logs report`` (``--offline`` = the test split, so
   each category's drift flag compares with its own offline interval; ``--no-mlflow`` unless ``--mlflow``).

Prints the report and a final line ``delivered saving X [lo, hi] vs promised Y [lo, hi]: inside`` (exit 1 when the
delivered saving lies outside the promised interval).

Run: ``nice python bench/bench_promised_delivered.py [--requests 2000] [--share 0.5] [--shadow-rate 0.2]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_offpolicy_proxy import CLIENT_KEY, ENV, point_at  # noqa: E402

from evals.cli import main as routelab  # noqa: E402
from evals.formatting import format_interval  # noqa: E402
from evals.serving import ReplayServer  # noqa: E402
from evals.workbench.config import load_config  # noqa: E402
from evals.workbench.experiment import load_table, plan_split  # noqa: E402
from evals.workbench.export_workflow import export_from_config  # noqa: E402
from evals.workbench.production_report import build_report  # noqa: E402
from routers.export.proxy import ProxyServer, build_proxy_app  # noqa: E402

CONFIG = ROOT / "examples" / "mmlu_pro.toml"


async def send(base_url: str, prompts: list[str], categories: list[str], concurrency: int) -> dict[str, int]:
    """One chat request per prompt (category header set); the count of each ``x-routelab-arm`` answered."""
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    sem = asyncio.Semaphore(concurrency)
    arms: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=120,
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:

        async def one(prompt: str, category: str) -> None:
            async with sem:
                for attempt in range(3):  # a connection dropped on a loaded machine is retried, as a client would
                    try:
                        r = await client.post("/chat/completions", headers={"x-routelab-category": category},
                                              json={"model": "router",
                                                    "messages": [{"role": "user", "content": prompt}]})
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                        arms["retried"] = arms.get("retried", 0) + 1
                if r.status_code != 200:
                    raise RuntimeError(f"proxy answered {r.status_code}: {r.text[:200]}")
                arm = r.headers.get("x-routelab-arm", "none")
                arms[arm] = arms.get(arm, 0) + 1

        await asyncio.gather(*(one(p, c) for p, c in zip(prompts, categories, strict=True)))
    return arms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--share", type=float, default=0.5, help="[rollout] share")
    ap.add_argument("--shadow-rate", type=float, default=0.2, help="[shadow] rate")
    ap.add_argument("--router", default="category", help="router of examples/mmlu_pro.toml to export")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt draw")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", help="keep the export, log and report here (default: a temporary folder)")
    ap.add_argument("--mlflow", action="store_true", help="also log the report to MLflow")
    args = ap.parse_args()

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="promised-delivered-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = load_config(CONFIG)
    table = load_table(config, None)
    test = plan_split(config, table, None).split.test
    folder, measurement = export_from_config(CONFIG, args.router, work / "export", overwrite=True)
    reference = measurement["reference_model"]
    print(f"export {folder} ({args.router}, lam {measurement['lam']:.4g}) in {time.perf_counter() - t0:.0f} s; "
          f"promised saving {format_interval(measurement['savings'], pct=True)} vs {reference} "
          f"(n_test={measurement['n_test']})")

    log_dir = work / "log"
    if log_dir.exists():  # a log left by an earlier run in the same folder would mix with this one
        shutil.rmtree(log_dir)
    rng = np.random.default_rng(args.seed)
    rows = rng.integers(0, test.n_samples, args.requests)
    prompts = [test.prompts[i] for i in rows]
    cats = [str(test.categories[i]) for i in rows]
    with ReplayServer(table) as replay:
        sections = (f'\n[log]\ndir = "{log_dir}"\n\n[rollout]\nshare = {args.share}\n\n'
                    f'[shadow]\nrate = {args.shadow_rate}\nreference = "{reference}"\ndaily_spend_usd = 1000.0\n')
        point_at(folder, replay.base_url, list(test.models), sections)
        t1 = time.perf_counter()
        app = build_proxy_app(folder, environ=ENV)
        with ProxyServer(app) as proxy:
            arms = asyncio.run(send(proxy.base_url, prompts, cats, args.concurrency))
            deadline = time.monotonic() + 60
            while not app.state.proxy.shadow.idle() and time.monotonic() < deadline:  # reference calls still out
                time.sleep(0.05)
        print(f"served {args.requests:,} requests in {time.perf_counter() - t1:.0f} s; arms {arms}")
        status = routelab(["logs", "grade", str(log_dir), "--judge-url", replay.base_url, "--judge-model",
                           "replay-judge"])
        if status:
            return status
    test_file = test.to_parquet(work / "test.parquet")  # the evaluation's test outcomes: per-category intervals
    report_args = ["logs", "report", str(log_dir), "--export", str(folder), "--offline", str(test_file), "--out",
                   str(work / "report")]
    status = routelab(report_args + ([] if args.mlflow else ["--no-mlflow"]))
    if status:
        return status
    report = build_report(log_dir, folder, offline=test)
    cost = report.delivered["cost"]
    inside = report.saving_inside_promise
    own = report.delivered.get("saving_own_choices")
    what = "delivered saving of the router's own choices" if own else "delivered saving"
    print(f"\n{what} {format_interval(report.delivered['saving_compared'], pct=True)} (router n="
          f"{cost['router']['n']:,}, control n={cost['control']['n']:,}) vs promised "
          f"{format_interval(measurement['savings'], pct=True)}: {'inside' if inside else 'OUTSIDE'}"
          + (f"; with its {report.delivered['explored_picks']:,} exploration picks "
             f"{format_interval(cost['saving'], pct=True)}" if own else ""))
    print(f"work folder: {work}")
    return 0 if inside else 1


if __name__ == "__main__":
    sys.exit(main())
