"""Benchmark: one proxy vs two replicas behind nginx (throughput at saturation), and what the shared state costs.

The replicated side is what ``scripts/stack`` runs: two ``routelab serve`` replicas of the same export whose
``upstreams.toml`` has ``[state] url`` pointing at one Redis, behind nginx with the stack's generated config
(``evals/cli/_stack_topology.py``). Upstream: the replay server (recorded MMLU-Pro answers) with an added latency.
Load: bench_proxy's aiohttp generator (one asyncio process). Each server is its own process.

1. **Throughput at saturation** (``--concurrency``, default 128 in flight, ``--saturation-latency-ms`` upstream
   latency, default 10): alternating rounds against (a) one proxy, called directly (the baseline, in the same
   run) and (b) nginx over the two replicas. Printed: requests/s of each, the ratio, and each process's CPU
   per request (from /proc), from which the ratio on a machine with more cores can be read.
2. **What the Redis round trips add** at ``--latency-ms`` (default 100) upstream latency and
   ``--latency-concurrency`` in flight to each side: rounds sent at once (default 16 to each, 32 on the machine;
   ``--alternate``: one side per round, 32 in flight) through nginx over two replicas *with*
   ``[state] url`` and over two replicas *without* it (in-process state); p50/p99 of both, the added p50
   (target: under 0.5 ms), and the replicas' mean Redis call time (``routelab_state_roundtrip_seconds``: from
   the call until the replica's event loop resumes the request). Both sides have a ``[budget]`` that is never
   reached (``--no-budget`` drops it). No request waits on Redis in either (budgets read Redis only near a limit
   or for a counter a replica has not seen yet); breakers, feedback, counters, telemetry and spend reach Redis
   off the request path, so what the shared state costs shows as the replicas' CPU per request (printed).

On 2 cores the ratio of (b) to (a) cannot approach 2: one proxy process already uses one core, and the
second core is shared by the second replica, nginx, the replay upstream and the load generator. The CPU per
request printed per process says what the replicas would give where each has a core of its own. On a
machine busy with other work (load average above the core count) the ratio is inflated instead: the kernel
shares the cores per process, so two replicas get a larger share of the machine than one proxy.

    python bench/bench_replicas.py [--parts 1,2] [--requests 3000] [--rounds 4] [--concurrency 128]
        [--router classifier] [--encoder minilm-static] [--saturation-latency-ms 10] [--latency-ms 100]
        [--latency-concurrency 16] [--alternate] [--no-budget] [--samples 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import REPLAY, cpu_seconds, free_port, load, pct, wait_up  # noqa: E402

from evals.cli._stack_topology import find_binaries, render_nginx_conf, render_upstreams  # noqa: E402

AUTH = {"authorization": "Bearer bench-key"}


class Processes:
    """The servers of one bench phase; all stopped (and waited for) on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, []

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc.log_path = self.tmp / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append((proc, log))
        return proc

    def stop(self) -> None:
        for proc, log in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        self.procs = []


@contextlib.contextmanager
def phase(tmp: Path) -> Iterator[Processes]:
    procs = Processes(tmp)
    try:
        yield procs
    finally:
        procs.stop()


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    try:
        wait_up(url, proc, timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; log: {proc.log_path.read_text(errors='replace')[-1500:]}") from exc  # type: ignore[attr-defined]


def start_replay(procs: Processes, table_path: Path, latency_ms: float) -> str:
    port = free_port()
    proc = procs.start(f"replay-{latency_ms:g}", [sys.executable, "-c", REPLAY, str(table_path), str(port),
                                                  str(latency_ms)])  # fmt: skip
    wait_for(f"http://127.0.0.1:{port}/v1/models", proc)
    return f"http://127.0.0.1:{port}/v1"


def start_redis(procs: Processes, redis_server: Path, tmp: Path) -> str:
    port = free_port()
    proc = procs.start("redis", [str(redis_server), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp)])  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return f"redis://127.0.0.1:{port}/0"
        assert proc.poll() is None, proc.log_path.read_text()  # type: ignore[attr-defined]
        time.sleep(0.1)
    raise RuntimeError("redis did not answer PING")


def start_replicas(
    procs: Processes, folder: Path, tmp: Path, name: str, upstream: str, state_url: str | None, n: int,
    extra: str = "",
) -> tuple[list[subprocess.Popen], list[int]]:
    """``n`` ``routelab serve`` replicas of ``folder`` whose upstreams are ``upstream`` (and state ``state_url``);
    ``extra`` is appended to their ``upstreams.toml``."""
    text = re.sub(r'base_url = "[^"]*"', f'base_url = "{upstream}"', (folder / "upstreams.toml").read_text())
    ups = tmp / f"{name}-upstreams.toml"
    ups.write_text(render_upstreams(text + extra, state_url))
    env = {**os.environ, "ROUTELAB_PROXY_KEYS": AUTH["authorization"].split()[1], "PYTHONUNBUFFERED": "1"}
    ports, started = [free_port() for _ in range(n)], []
    for k, port in enumerate(ports):
        started.append(procs.start(f"{name}-{k}", [sys.executable, "-m", "evals.cli", "serve", str(folder),
                                                   "--port", str(port), "--upstreams", str(ups),
                                                   "--log-level", "warning"], env))  # fmt: skip
    for proc, port in zip(started, ports, strict=True):
        wait_for(f"http://127.0.0.1:{port}/healthz", proc)
    return started, ports


def start_nginx(procs: Processes, nginx: Path, tmp: Path, name: str, replica_ports: list[int]) -> tuple:
    prefix = tmp / name
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(listen=f"127.0.0.1:{port}", replicas=[f"127.0.0.1:{p}" for p in replica_ports],
                                      prefix=str(prefix), logs=str(prefix),
                                      user="root" if os.geteuid() == 0 else None))  # fmt: skip
    proc = procs.start(name, [str(nginx), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")])
    wait_for(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def metrics_sum(ports: list[int], name: str) -> float:
    total = 0.0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH).text
        total += sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))
    return total


def alternate(targets: dict[str, tuple[str, list[subprocess.Popen]]], bodies: list[dict], rounds: int,
              concurrency: int, ramp_s: float) -> dict[str, dict]:  # fmt: skip
    """Rounds of ``bodies`` against each target in turn; latencies, errors, wall time and CPU per process."""
    out = {k: {"lat": [], "errors": 0, "wall": 0.0, "cpu": {}} for k in targets}
    per = max(1, len(bodies) // rounds)
    for r in range(rounds):
        chunk = bodies[r * per : (r + 1) * per]
        for key, (url, watched) in targets.items():
            cpu0 = {p.pid: cpu_seconds(p.pid) for p in watched}
            t0 = time.perf_counter()
            lat, errors = asyncio.run(load(url, chunk, concurrency, AUTH, ramp_s))
            out[key]["wall"] += time.perf_counter() - t0
            out[key]["lat"] += lat
            out[key]["errors"] += errors
            for p in watched:
                out[key]["cpu"][p.pid] = out[key]["cpu"].get(p.pid, 0.0) + cpu_seconds(p.pid) - cpu0[p.pid]
    return out


def together(targets: dict[str, tuple[str, list[subprocess.Popen]]], bodies: list[dict], rounds: int,
             concurrency: int, ramp_s: float) -> dict[str, dict]:  # fmt: skip
    """Rounds of ``bodies`` sent to every target at once (``concurrency`` in flight to each), so that all of them
    see the same machine load at the same moments; what :func:`alternate` returns, plus each round's p50."""
    out = {k: {"lat": [], "errors": 0, "wall": 0.0, "cpu": {}, "round_p50": []} for k in targets}
    per = max(1, len(bodies) // rounds)
    for r in range(rounds):
        chunk = bodies[r * per : (r + 1) * per]
        cpu0 = {p.pid: cpu_seconds(p.pid) for _, watched in targets.values() for p in watched}

        async def all_at_once(chunk: list[dict] = chunk) -> list:
            return await asyncio.gather(*(load(url, chunk, concurrency, AUTH, ramp_s) for url, _ in targets.values()))

        t0 = time.perf_counter()
        results = asyncio.run(all_at_once())
        wall = time.perf_counter() - t0
        for (key, (_, watched)), (lat, errors) in zip(targets.items(), results, strict=True):
            out[key]["wall"] += wall
            out[key]["lat"] += lat
            out[key]["errors"] += errors
            out[key]["round_p50"].append(pct(lat, 50))
            for p in watched:
                out[key]["cpu"][p.pid] = out[key]["cpu"].get(p.pid, 0.0) + cpu_seconds(p.pid) - cpu0[p.pid]
    return out


def throughput_part(args: argparse.Namespace, bins, folder: Path, tmp: Path, bodies: list[dict]) -> None:
    """Part 1: one proxy (directly) vs nginx over two replicas sharing state, at saturation."""
    with phase(tmp) as procs:
        upstream = start_replay(procs, tmp / "replay.parquet", args.saturation_latency_ms)
        replay = procs.procs[-1][0]
        redis_url = start_redis(procs, bins.redis_server, tmp)
        redis = procs.procs[-1][0]
        (single,), (single_port,) = start_replicas(procs, folder, tmp, "single", upstream, None, 1)
        replicas, ports = start_replicas(procs, folder, tmp, "replica", upstream, redis_url, 2)
        balancer, lb_port = start_nginx(procs, bins.nginx, tmp, "nginx-tp", ports)
        targets = {
            "one proxy": (f"http://127.0.0.1:{single_port}/v1", [single, replay]),
            "nginx + 2 replicas": (f"http://127.0.0.1:{lb_port}/v1", [*replicas, balancer, redis, replay]),
        }
        alternate(targets, bodies[:400], 1, args.concurrency, 0.0)  # warm-up
        tp = alternate(targets, bodies, args.rounds, args.concurrency, 0.0)
    print(f"  1. throughput at saturation ({args.concurrency} in flight, upstream {args.saturation_latency_ms:g} ms, "
          f"load average now {os.getloadavg()[0]:.1f}):")  # fmt: skip
    rps = {}
    for key, r in tp.items():
        rps[key] = len(r["lat"]) / r["wall"]
        cpu = ", ".join(f"{1000 * s / len(r['lat']):.2f}" for s in r["cpu"].values())
        print(f"    {key:20s}: {rps[key]:7.0f} req/s  p50 {pct(r['lat'], 50):7.1f} ms  errors {r['errors']}  "
              f"CPU ms/request per process [{cpu}]")  # fmt: skip
    print(f"    ratio (nginx + 2 replicas) / (one proxy): {rps['nginx + 2 replicas'] / rps['one proxy']:.2f}x")
    print("    (CPU: ms per request sent to that target, per process; one proxy = [proxy, replay]; replicated = "
          "[replica a, replica b, nginx, redis, replay], each replica serving half)")


def redis_part(args: argparse.Namespace, bins, folder: Path, tmp: Path, bodies: list[dict]) -> None:
    """Part 2: the p50 the Redis round trips add: nginx over 2 replicas with vs without ``[state] url``."""
    # A budget that is never reached puts the one Redis read a request waits for (the spend counters,
    # one MGET before routing) on the request path; the in-process side keeps the same budget locally.
    budget = "\n[budget]\ndaily_usd = 1000000.0\n" if args.budget else ""
    with phase(tmp) as procs:
        upstream = start_replay(procs, tmp / "replay.parquet", args.latency_ms)
        redis_url = start_redis(procs, bins.redis_server, tmp)
        shared, shared_ports = start_replicas(procs, folder, tmp, "shared", upstream, redis_url, 2, budget)
        local, local_ports = start_replicas(procs, folder, tmp, "local", upstream, None, 2, budget)
        _, lb_shared = start_nginx(procs, bins.nginx, tmp, "nginx-shared", shared_ports)
        _, lb_local = start_nginx(procs, bins.nginx, tmp, "nginx-local", local_ports)
        targets = {
            "with [state] url (Redis)": (f"http://127.0.0.1:{lb_shared}/v1", shared),
            "without (in-process)": (f"http://127.0.0.1:{lb_local}/v1", local),
        }
        ramp = args.latency_ms / 1000
        run = alternate if args.alternate else together
        run(targets, bodies[:200], 1, args.latency_concurrency, ramp)
        names = ("routelab_state_roundtrip_seconds", "routelab_added_latency_seconds")
        sides = {"shared": shared_ports, "local": local_ports}
        keys = [(side, name, f) for side in sides for name in names for f in ("sum", "count")]
        before = {key: metrics_sum(sides[key[0]], f"{key[1]}_{key[2]}") for key in keys}
        lat = run(targets, bodies, args.rounds, args.latency_concurrency, ramp)
        delta = {key: metrics_sum(sides[key[0]], f"{key[1]}_{key[2]}") - v for key, v in before.items()}
        degraded = metrics_sum(shared_ports, "routelab_state_degraded")

    def mean_ms(side: str, name: str) -> float:
        return 1000 * delta[(side, name, "sum")] / max(delta[(side, name, "count")], 1)

    how = "alternating rounds" if args.alternate else "both at once"
    print(f"  2. Redis round trips at upstream latency {args.latency_ms:g} ms ({args.latency_concurrency} in flight "
          f"to each, {how}, both through nginx, {'with' if args.budget else 'without'} a [budget] that is never "
          f"reached; load average now {os.getloadavg()[0]:.1f}):")  # fmt: skip
    for key, r in lat.items():
        print(f"    {key:25s}: p50 {pct(r['lat'], 50):8.2f} ms  p99 {pct(r['lat'], 99):8.2f} ms  errors {r['errors']}")
    with_state, without = (lat[k]["lat"] for k in targets)
    added = pct(with_state, 50) - pct(without, 50)
    if args.alternate:
        print(f"    added p50: {added:+.2f} ms (target < 0.5 ms: {'MET' if added < 0.5 else 'NOT MET'})")
    else:
        # Two standard errors of the per-round p50 differences: the resolution of this run. A verdict only when it
        # can tell 0.5 ms apart.
        diffs = np.subtract(*(lat[k]["round_p50"] for k in targets))
        half = 2 * float(np.std(diffs, ddof=1)) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
        verdict = (f"NOT RESOLVED: this run resolves +-{half:.2f} ms" if half >= 0.5
                   else "MET (the whole interval below it)" if added + half < 0.5
                   else f"MET by the estimate; the interval reaches {added + half:+.2f} ms" if added < 0.5
                   else "NOT MET")
        print(f"    added p50: {added:+.2f} ms +-{half:.2f} ms (2 standard errors of the per-round differences; "
              f"target < 0.5 ms: {verdict}); per-round differences median {np.median(diffs):+.2f} ms, range "
              f"[{diffs.min():+.2f}, {diffs.max():+.2f}] ms")
    shared_ms, local_ms = (mean_ms(side, "routelab_added_latency_seconds") for side in ("shared", "local"))
    print(f"    replicas' server-side time per request (routelab_added_latency_seconds, upstream waits excluded): "
          f"with {shared_ms:.3f} ms, without {local_ms:.3f} ms, difference {shared_ms - local_ms:+.3f} ms")
    cpu = {k: 1000 * sum(r["cpu"].values()) / len(r["lat"]) for k, r in lat.items()}
    print("    replicas' CPU per request (both replicas, from /proc; background Redis pushes included): "
          + ", ".join(f"{k} {v:.3f} ms" for k, v in cpu.items()))
    calls = delta[("shared", "routelab_state_roundtrip_seconds", "count")]
    print(f"    Redis calls a request waited for: {calls:.0f} (mean {mean_ms('shared', names[0]):.3f} ms); "
          f"degraded flags {degraded:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests per target in each part")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per part")
    ap.add_argument("--alternate", action="store_true",
                    help="part 2: one side per round, alternating (default: both sides at once, the same load)")
    ap.add_argument("--concurrency", type=int, default=128, help="in flight during the throughput part")
    ap.add_argument("--router", default="classifier")
    ap.add_argument("--encoder", default="minilm-static")
    ap.add_argument("--saturation-latency-ms", type=float, default=10.0)
    ap.add_argument("--latency-ms", type=float, default=100.0, help="upstream latency of the Redis part")
    ap.add_argument("--latency-concurrency", type=int, default=None,
                    help="in flight to each side during the Redis part (default 16 when both sides run at once, so "
                         "that the machine carries 32; 32 with --alternate)")
    ap.add_argument("--samples", type=int, default=3000, help="MMLU-Pro samples used (train half / test half)")
    ap.add_argument("--parts", default="1,2", help="which parts to run (1 throughput, 2 Redis)")
    ap.add_argument("--no-budget", dest="budget", action="store_false",
                    help="part 2 without a [budget] (then no Redis call waits on the request path)")
    args = ap.parse_args()
    if args.latency_concurrency is None:
        args.latency_concurrency = 32 if args.alternate else 16
    bins = find_binaries()

    from evals import sources
    from routers import make_router
    from routers.export import export_router

    table = sources.load("mmlu-pro")
    ids = table.sample_ids[np.random.default_rng(0).permutation(table.n_samples)[: args.samples]]
    split = table.select(sample_ids=list(ids)).split((0.5, 0.1, 0.4), random_state=0)
    params = {"encoder": args.encoder} if "encoder" in make_router(args.router).get_params() else {}
    router = make_router({"name": args.router, "params": params}).fit(split.train)
    lam = float(np.median(router.policy(split.validation).grid(50)))
    prompts = list(split.test.prompts)
    order = np.random.default_rng(1).integers(0, len(prompts), size=args.requests)
    bodies = [{"model": "router", "messages": [{"role": "user", "content": prompts[i]}]} for i in order]

    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as t:
        tmp = Path(t)
        folder = export_router(router, tmp / "export", lam=lam)
        split.test.to_parquet(tmp / "replay.parquet")
        print(
            f"bench_replicas: router={args.router} ({params or 'no encoder'}), {len(prompts)} MMLU-Pro test "
            f"prompts, {args.requests} requests per target in {args.rounds} rounds, cores "
            f"{os.cpu_count()}, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if "1" in args.parts:
            throughput_part(args, bins, folder, tmp, bodies)
        if "2" in args.parts:
            redis_part(args, bins, folder, tmp, bodies)


if __name__ == "__main__":
    main()
