"""Benchmark: what the routing proxy adds over calling its upstream directly; the runtime's decision time.

Setup (all on loopback, each server in its own process so they do not share a GIL with the load generator):

* upstream: the replay server (recorded MMLU-Pro answers, zero added latency), served by uvicorn;
* proxy: ``routelab serve`` on an export of one router (default: kNN on static MiniLM embeddings);
* load: ``--concurrency`` (default 32) in-flight requests from one asyncio httpx client, alternating rounds of
  *direct* requests (to the upstream, for the model the router would pick for that prompt) and *proxied*
  requests (``model = "router"``) over the same prompts, so both see the same machine load.

Printed: p50/p99 latency of both, the added latency (proxied minus direct) and the ratio; the proxy's own
server-side time per request (its ``routelab_added_latency_seconds`` histogram: parsing, routing, forwarding,
excluding upstream waits); and the exported runtime's routing decision time per prompt, one prompt at a time,
featurisation included, next to the workbench router's in the same process.

    python bench/bench_proxy.py [--requests 2000] [--concurrency 32] [--router knn] [--encoder minilm-static]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}: "
                f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


REPLAY = textwrap.dedent("""
    import sys, uvicorn
    from evals.outcomes import OutcomeTable
    from evals.serving import build_replay_app
    app = build_replay_app(OutcomeTable.read_parquet(sys.argv[1]))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
                lifespan="off", backlog=4096)
""")


def pct(x: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(x) * 1000, q))


async def load(url: str, bodies: list[dict], concurrency: int, headers: dict) -> tuple[list[float], int]:
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
    lat: list[float] = []
    errors = 0
    queue = list(enumerate(bodies))
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=60, headers=headers) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                _, body = queue.pop()
                t0 = time.perf_counter()
                r = await client.post("/chat/completions", json=body)
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per side (direct / proxied)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4, help="alternating direct/proxied rounds")
    ap.add_argument("--router", default="knn")
    ap.add_argument("--encoder", default="minilm-static")
    ap.add_argument(
        "--samples", type=int, default=3000, help="MMLU-Pro samples used (train half / test half)"
    )
    args = ap.parse_args()

    from evals import sources
    from routers import Queries, make_router
    from routers.export import export_router, load_exported

    table = sources.load("mmlu-pro")
    ids = table.sample_ids[np.random.default_rng(0).permutation(table.n_samples)[: args.samples]]
    table = table.select(sample_ids=list(ids))
    split = table.split((0.5, 0.1, 0.4), random_state=0)
    cls_params = make_router(args.router).get_params()
    params = {"encoder": args.encoder} if "encoder" in cls_params else {}
    router = make_router({"name": args.router, "params": params}).fit(split.train)
    lam = float(np.median(router.policy(split.validation).grid(50)))
    test = split.test
    prompts = list(test.prompts)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        tmp_path = Path(tmp)
        folder = export_router(router, tmp_path / "export", lam=lam)
        exported = load_exported(folder)

        # ------------------------------------------------------ routing decision, one prompt at a time
        for p in prompts[:20]:
            exported.route_indices([p])
            router.route_indices(Queries.of([p]), lam)
        rt, wb = [], []
        for p in prompts[:500]:
            t0 = time.perf_counter()
            exported.route_indices([p])
            t1 = time.perf_counter()
            router.route_indices(Queries.of([p]), lam)
            rt.append(t1 - t0)
            wb.append(time.perf_counter() - t1)

        # ---------------------------------------------------------------- servers
        test.to_parquet(tmp_path / "replay.parquet")
        up_port, px_port = free_port(), free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        replay = subprocess.Popen(
            [sys.executable, "-c", REPLAY, str(tmp_path / "replay.parquet"), str(up_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ups = (folder / "upstreams.toml").read_text()
        ups = re.sub(r'base_url = "[^"]*"', f'base_url = "http://127.0.0.1:{up_port}/v1"', ups)
        (tmp_path / "upstreams.toml").write_text(ups)
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evals.cli",
                "serve",
                str(folder),
                "--port",
                str(px_port),
                "--upstreams",
                str(tmp_path / "upstreams.toml"),
                "--log-level",
                "warning",
            ],
            env={**env, "ROUTELAB_PROXY_KEYS": "bench-key"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_up(f"http://127.0.0.1:{up_port}/v1/models", replay)
            wait_up(f"http://127.0.0.1:{px_port}/healthz", proxy)
            choice = exported.route(prompts)
            rng = np.random.default_rng(1)
            order = rng.integers(0, len(prompts), size=args.requests)
            direct_bodies = [
                {"model": choice[i], "messages": [{"role": "user", "content": prompts[i]}]} for i in order
            ]
            proxy_bodies = [
                {"model": "router", "messages": [{"role": "user", "content": prompts[i]}]} for i in order
            ]
            d_url, p_url = f"http://127.0.0.1:{up_port}/v1", f"http://127.0.0.1:{px_port}/v1"
            auth = {"authorization": "Bearer bench-key"}
            asyncio.run(load(d_url, direct_bodies[:200], args.concurrency, {}))  # warm-up both paths
            asyncio.run(load(p_url, proxy_bodies[:200], args.concurrency, auth))
            metrics0 = httpx.get(f"http://127.0.0.1:{px_port}/metrics", headers=auth).text
            direct, proxied, errs = [], [], 0
            per = max(1, args.requests // args.rounds)
            t_direct = t_proxy = 0.0
            for k in range(args.rounds):
                sl = slice(k * per, (k + 1) * per)
                t0 = time.perf_counter()
                lat, e = asyncio.run(load(d_url, direct_bodies[sl], args.concurrency, {}))
                t_direct += time.perf_counter() - t0
                direct += lat
                errs += e
                t0 = time.perf_counter()
                lat, e = asyncio.run(load(p_url, proxy_bodies[sl], args.concurrency, auth))
                t_proxy += time.perf_counter() - t0
                proxied += lat
                errs += e
            metrics = httpx.get(f"http://127.0.0.1:{px_port}/metrics", headers=auth).text
        finally:
            for proc in (proxy, replay):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def metric(text: str, name: str) -> float:
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    srv_n = metric(metrics, "routelab_added_latency_seconds_count") - metric(
        metrics0, "routelab_added_latency_seconds_count"
    )
    srv_s = metric(metrics, "routelab_added_latency_seconds_sum") - metric(
        metrics0, "routelab_added_latency_seconds_sum"
    )
    print(
        f"bench_proxy: router={args.router} ({params or 'no encoder'}) lam={lam:.4g}, "
        f"{len(prompts)} MMLU-Pro test "
        f"prompts (~{np.mean([len(p) for p in prompts]):.0f} chars), concurrency {args.concurrency}, "
        f"{len(direct)} requests per side in {args.rounds} alternating rounds, errors {errs}, "
        f"cores {os.cpu_count()}"
    )
    print(
        f"  direct to upstream : p50 {pct(direct, 50):7.2f} ms  p99 {pct(direct, 99):7.2f} ms  "
        f"throughput {len(direct) / t_direct:7.0f} req/s"
    )
    print(
        f"  through the proxy  : p50 {pct(proxied, 50):7.2f} ms  p99 {pct(proxied, 99):7.2f} ms  "
        f"throughput {len(proxied) / t_proxy:7.0f} req/s"
    )
    add50, add99 = pct(proxied, 50) - pct(direct, 50), pct(proxied, 99) - pct(direct, 99)
    print(
        f"  added by the proxy : p50 {add50:+7.2f} ms  p99 {add99:+7.2f} ms  "
        f"(ratio p50 {pct(proxied, 50) / pct(direct, 50):.2f}x, "
        f"target p50 < 2 ms: {'MET' if add50 < 2 else 'NOT MET'})"
    )
    print(
        f"  proxy server-side  : {1000 * srv_s / max(srv_n, 1):.3f} ms mean per request "
        "excluding upstream waits "
        f"(n={srv_n:.0f}; its own CPU time: parse, route, forward)"
    )
    print(f"  routing decision, one prompt at a time (featurisation included), n={len(rt)}:")
    print(f"    exported runtime : p50 {pct(rt, 50):.3f} ms  p99 {pct(rt, 99):.3f} ms")
    print(
        f"    workbench router : p50 {pct(wb, 50):.3f} ms  p99 {pct(wb, 99):.3f} ms  (runtime/workbench p50 "
        f"{pct(rt, 50) / pct(wb, 50):.2f}x)"
    )


if __name__ == "__main__":
    main()
