"""Collection throughput against the replay server, as a ratio to the server's own capacity.

Both measurements run in this process against the same replay server (started as a separate process with
``routelab replay-serve``, so it does not share this interpreter's GIL), at concurrency 64 and zero added
latency:

- baseline: a plain asyncio + httpx loop that POSTs every request (no cache, no grading, no bookkeeping);
- collect: :func:`evals.collect.collect` over the same (sample, model) pairs with a fresh cache: the SQLite
  commit per answer, grading, cost accounting, progress bookkeeping and building the OutcomeTable included.

The ratio collect / baseline is the share of the server's capacity that collection uses; target >= 0.8.

Usage: ``python bench/bench_collect.py [--samples 1000] [--models 3] [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from evals import sources
from evals.collect import collect, parse_config


def start_server(table_path: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "evals.cli", "replay-serve", str(table_path), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    if "base_url " not in line:
        proc.kill()
        raise RuntimeError(f"replay server did not start: {line}")
    return proc, line.split("base_url ")[1].split()[0]


async def plain_loop(base_url: str, pairs: list[tuple[str, str]], concurrency: int, params: dict) -> float:
    """Requests per second of a bare httpx loop."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        queue = list(pairs)

        async def worker() -> None:
            while queue:
                model, prompt = queue.pop()
                r = await client.post(
                    f"{base_url}/chat/completions",
                    json={**params, "model": model, "messages": [{"role": "user", "content": prompt}]},
                )
                r.raise_for_status()
                r.json()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(pairs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="alternating baseline/collect rounds (best of)")
    args = ap.parse_args()

    full = sources.load("mmlu-pro")
    models = list(full.models[: args.models])
    table = full.select(models=models, sample_ids=full.sample_ids[: args.samples])
    params = {"temperature": 0.0, "max_tokens": 1024}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table_path = table.to_parquet(tmp / "table.parquet")
        proc, base_url = start_server(table_path)
        try:
            pairs = list(zip(table.frame["model"], table.frame["prompt"], strict=True))
            asyncio.run(plain_loop(base_url, pairs[:500], args.concurrency, params))  # warm-up
            base_rates, collect_rates = [], []
            for r in range(args.rounds):
                base_rates.append(asyncio.run(plain_loop(base_url, pairs, args.concurrency, params)))
                config = parse_config(
                    {
                        "output": str(tmp / f"out{r}.parquet"),
                        "cache": str(tmp / f"cache{r}.sqlite"),
                        "tasks": {"source": str(table_path)},
                        "grader": {"name": "mcq_letter"},
                        "providers": {"replay": {"base_url": base_url, "concurrency": args.concurrency}},
                        "models": [
                            {
                                "name": m,
                                "provider": "replay",
                                "params": params,
                                "input_per_1m": 1.0,
                                "output_per_1m": 1.0,
                            }
                            for m in models
                        ],
                    },
                    origin="bench",
                )
                t0 = time.perf_counter()
                result = collect(config, progress=False)
                elapsed = time.perf_counter() - t0
                assert result.table is not None and len(result.table) == len(pairs) and not result.failures
                collect_rates.append(len(pairs) / elapsed)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    base, coll = max(base_rates), max(collect_rates)
    print(
        f"pairs per run: {len(pairs)} ({table.n_samples} samples x {len(models)} models), "
        f"concurrency {args.concurrency}, latency 0 ms, cpu count {os.cpu_count()}"
    )
    print(
        f"plain httpx loop (server capacity): {', '.join(f'{x:.0f}' for x in base_rates)} req/s"
        f" -> best {base:.0f}"
    )
    print(
        f"routelab collect (cache+grade+table): {', '.join(f'{x:.0f}' for x in collect_rates)} req/s"
        f" -> best {coll:.0f}"
    )
    print(f"ratio collect / capacity = {coll / base:.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
