"""Benchmark: the routing proxy in front of an upstream that fails half the time, in every way it can fail.

Setup (loopback, each server its own process):

* upstream: ``routelab replay-serve`` (recorded MMLU-Pro answers) with ``--fault-rate`` (default 0.5) over every
  fault kind it has (``--fault-kinds all``: 429, 500, timeouts, truncated JSON and HTML 200s, 200s without
  ``choices``, connections dropped before the first byte or mid-stream, streams ending without ``[DONE]``,
  negative and overflowing ``usage``, slow bodies; see :mod:`evals.serving.answers`). Its timeouts and slow bodies
  last ``--hang-s`` (default: the proxy's deadline + 5 s), so only the proxy's own deadline can cut them short;
* proxy: ``routelab serve --no-auth`` on a ``category`` export whose upstreams all point at the replay server
  (the export's defaults otherwise: per-attempt timeout, retries, fallbacks, ``request_deadline_s``);
* load: ``--requests`` (default 5,000) routed requests, ``--concurrency`` (default 50) in flight, from one aiohttp
  client; ``--stream-share`` of them (default 0.4) streamed, half of those asking for the usage chunk.

Every answer is checked, and the run prints:

* **malformed 200s** (must be 0): a non-streamed 200 that is not a JSON object with a non-empty ``choices`` list
  whose first message has string content, or a streamed 200 that does not end with ``data: [DONE]`` (all its
  events valid JSON) or with an OpenAI-style error event; a connection the proxy dropped counts here too;
* **non-OpenAI errors** (must be 0): a non-200 whose body is not ``{"error": {"message", "type", "code"}}``;
* **bad cost headers** (must be 0): an ``x-routelab-cost-usd`` header or SSE comment that is not a finite
  number >= 0 (the upstream's invalid ``usage`` must not be priced);
* the status histogram, and the total time per request (p50 / p99 / p100) against the deadline + 1 s;
* resident memory and open file descriptors of the proxy (its process tree) after a warm-up and after the run
  (target: back within 10%), and the proxy's failure counters from ``/metrics``.

    python bench/bench_proxy_faults.py [--requests 5000] [--concurrency 50] [--fault-rate 0.5]
        [--stream-share 0.4] [--deadline-s S] [--hang-s S] [--samples 3000] [--seed 0]

``--deadline-s`` writes ``request_deadline_s`` into the export's ``[proxy]`` section (default: the export's own);
use a short one with a small ``--requests`` for a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from bench_proxy import free_port, pct, wait_up  # the proxy bench's helpers (run as python bench/...)

# ------------------------------------------------------------------------------------------- answer checks


def check_json_answer(status: int, body: bytes, stream_asked: bool) -> str:
    """Classify a complete non-SSE response: ``ok``, ``error`` (OpenAI-shaped), or what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError:
        return "malformed 200 (not JSON)" if status == 200 else "non-OpenAI error (not JSON)"
    if status != 200:
        err = data.get("error") if isinstance(data, dict) else None
        ok = isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)
        return "error" if ok and "code" in err else "non-OpenAI error (shape)"
    if stream_asked:
        return "malformed 200 (JSON body for a stream request)"
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "malformed 200 (no choices)"
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return "malformed 200 (no message content)"
    return "ok"


def check_stream(body: bytes) -> tuple[str, list[str]]:
    """Classify a complete SSE body: ``ok``, ``stream error event``, or what is wrong; plus its cost comments."""
    text = body.decode("utf-8", "replace")
    costs = [line.split()[-1] for line in text.split("\n") if line.startswith(": x-routelab-cost-usd")]
    data = [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]
    if not data:
        return "malformed 200 (empty stream)", costs
    events = data[:-1] if data[-1] == "[DONE]" else data
    parsed = []
    for event in events:
        try:
            parsed.append(json.loads(event))
        except ValueError:
            return "malformed 200 (stream event not JSON)", costs
    last = parsed[-1] if parsed else None
    if isinstance(last, dict) and "error" in last:
        err = last["error"]
        shaped = isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)
        return ("stream error event" if shaped else "malformed 200 (error event not OpenAI-shaped)"), costs
    if data[-1] != "[DONE]":
        return "malformed 200 (stream ends without [DONE])", costs
    if not any(isinstance(p, dict) and p.get("choices") for p in parsed):
        return "malformed 200 (stream without a choice)", costs
    return "ok", costs


def cost_is_valid(value: str | None) -> bool:
    """An ``x-routelab-cost-usd`` value: absent, or a finite number >= 0."""
    if value is None:
        return True
    try:
        cost = float(value)
    except ValueError:
        return False
    return math.isfinite(cost) and cost >= 0


# ------------------------------------------------------------------------------------------- process state


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Linux /proc)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            children = [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        out.append(p)
        stack.extend(children)
    return out


def rss_and_fds(pid: int) -> tuple[float, int]:
    """Resident memory (MB) and open file descriptors of a process tree."""
    rss_kb, fds = 0, 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            rss_kb += int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, ProcessLookupError, AttributeError):
            continue
    return rss_kb / 1024, fds


# ------------------------------------------------------------------------------------------- load


async def run_load(url: str, bodies: list[dict], concurrency: int, client_timeout_s: float) -> list[dict]:
    """Send every body with ``concurrency`` in flight; one result per request (status, verdict, time, cost)."""
    import aiohttp

    queue = list(enumerate(bodies))
    results: list[dict] = []
    timeout = aiohttp.ClientTimeout(total=client_timeout_s)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def one(body: dict) -> dict:
            stream = bool(body.get("stream"))
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/chat/completions", json=body) as r:
                    t_headers = time.perf_counter() - t0
                    raw = await r.read()
                    status, ctype = r.status, r.headers.get("content-type", "")
                    cost = r.headers.get("x-routelab-cost-usd")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                took = time.perf_counter() - t0
                return {"status": "no answer", "verdict": f"malformed (connection: {type(exc).__name__})",
                        "s": took, "headers_s": took, "bad_cost": False, "stream": stream}  # fmt: skip
            elapsed = time.perf_counter() - t0
            costs = [cost] if cost is not None else []
            if status == 200 and ctype.startswith("text/event-stream"):
                verdict, comments = check_stream(raw) if stream else ("malformed 200 (stream for a JSON request)", [])
                costs += comments
            else:
                verdict = check_json_answer(status, raw, stream and status == 200)
            return {"status": status, "verdict": verdict, "s": elapsed, "headers_s": t_headers, "stream": stream,
                    "bad_cost": not all(cost_is_valid(c) for c in costs), "sample": raw[:160]}  # fmt: skip

        async def worker() -> None:
            while queue:
                _, body = queue.pop()
                results.append(await one(body))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


# ------------------------------------------------------------------------------------------- setup


def build_export(folder: Path, replay_url: str, samples: int, seed: int) -> tuple[Path, list[str], object]:
    """A ``category`` export of MMLU-Pro pointing every upstream at ``replay_url``; its test prompts and table."""
    from evals import sources
    from routers import make_router
    from routers.export import export_router

    table = sources.load("mmlu-pro")
    ids = table.sample_ids[np.random.default_rng(seed).permutation(table.n_samples)[:samples]]
    split = table.select(sample_ids=list(ids)).split((0.5, 0.1, 0.4), random_state=seed)
    router = make_router("category").fit(split.train)
    lam = float(np.median(router.policy(split.validation).grid(50)))
    out = export_router(router, folder, lam=lam, upstreams={"*": {"base_url": replay_url}})
    return out, list(split.test.prompts), split.test


def set_deadline(upstreams_toml: Path, deadline_s: float) -> None:
    """Write ``request_deadline_s`` into the ``[proxy]`` section (replacing the export's value)."""
    text = upstreams_toml.read_text()
    line = f"request_deadline_s = {deadline_s!r}"
    if re.search(r"^request_deadline_s\s*=.*$", text, flags=re.M):
        text = re.sub(r"^request_deadline_s\s*=.*$", line, text, flags=re.M)
    else:
        text = text.replace("[proxy]\n", f"[proxy]\n{line}\n", 1)
    upstreams_toml.write_text(text)


def proxy_deadline(folder: Path) -> float | None:
    """The proxy's ``request_deadline_s`` as it will read it (None: this proxy has no deadline)."""
    from routers.export import load_exported

    cfg = load_exported(folder).proxy_config()
    value = getattr(cfg, "request_deadline_s", None)
    if value is None:
        value = (getattr(cfg, "extra", None) or {}).get("request_deadline_s")
    return None if value is None else float(value)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def metrics_failures(text: str) -> list[str]:
    """The ``/metrics`` lines counting upstream failures and failed requests, summed over models."""
    sums: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.match(r"^(routelab_\w*(?:fail|malformed|invalid|deadline)\w*)\{?([^}]*)\}? ([0-9.e+-]+)$", line)
        if m:
            labels = ",".join(p for p in m.group(2).split(",") if p and not p.startswith("model="))
            sums[f"{m.group(1)}{{{labels}}}"] += float(m.group(3))
    return [f"{k} {v:g}" for k, v in sorted(sums.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000, help="routed requests to send (default 5000)")
    ap.add_argument("--concurrency", type=int, default=50, help="requests in flight (default 50)")
    ap.add_argument("--fault-rate", type=float, default=0.5, help="share of upstream requests faulted")
    ap.add_argument("--fault-kinds", default="all", help="replay-serve --fault-kinds (default all)")
    ap.add_argument("--stream-share", type=float, default=0.4, help="share of requests streamed")
    ap.add_argument("--deadline-s", type=float, help="set the proxy's request_deadline_s (default: the export's)")
    ap.add_argument("--hang-s", type=float, help="replay timeouts / slow bodies last this (default deadline + 5)")
    ap.add_argument("--warmup", type=int, default=200, help="requests before the baseline RSS/fd reading")
    ap.add_argument(
        "--settle-s",
        type=float,
        default=16.0,
        help="wait before each RSS/fd reading, so idle pooled connections (aiohttp keeps them 15 s) are closed",
    )
    ap.add_argument("--samples", type=int, default=3000, help="MMLU-Pro samples (train half / test 40%%)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-proxy-faults-") as tmp:
        tmp_path = Path(tmp)
        up_port, px_port = free_port(), free_port()
        replay_url = f"http://127.0.0.1:{up_port}/v1"
        t_build = time.perf_counter()
        folder, prompts, test = build_export(tmp_path / "export", replay_url, args.samples, args.seed)
        if args.deadline_s is not None:
            set_deadline(folder / "upstreams.toml", args.deadline_s)
        deadline = proxy_deadline(folder)
        hang_s = args.hang_s if args.hang_s is not None else (deadline or 30.0) + 5.0
        test.to_parquet(tmp_path / "replay.parquet")
        build_s = time.perf_counter() - t_build

        rng = np.random.default_rng(args.seed)
        bodies = []
        for _ in range(args.warmup + args.requests):
            prompt = prompts[rng.integers(len(prompts))]
            body: dict = {"model": "router", "messages": [{"role": "user", "content": prompt}]}
            if rng.random() < args.stream_share:
                body["stream"] = True
                if rng.random() < 0.5:
                    body["stream_options"] = {"include_usage": True}
            bodies.append(body)

        replay = subprocess.Popen(
            [sys.executable, "-m", "evals.cli", "replay-serve", str(tmp_path / "replay.parquet"), "--port",
             str(up_port), "--fault-rate", str(args.fault_rate), "--fault-kinds", args.fault_kinds,
             "--hang-s", str(hang_s), "--retry-after-s", "0.5", "--seed", str(args.seed)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        proxy_log = (tmp_path / "proxy.log").open("wb")
        proxy = subprocess.Popen(
            [sys.executable, "-m", "evals.cli", "serve", str(folder), "--no-auth", "--port", str(px_port),
             "--log-level", "error"],
            env=env, stdout=proxy_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_up(f"{replay_url}/models", replay)
            wait_up(f"http://127.0.0.1:{px_port}/healthz", proxy)
            url = f"http://127.0.0.1:{px_port}/v1"
            client_timeout = (deadline or 300.0) + hang_s + 30.0  # only a proxy that hangs reaches it
            asyncio.run(run_load(url, bodies[: args.warmup], args.concurrency, client_timeout))
            time.sleep(args.settle_s)
            rss0, fds0 = rss_and_fds(proxy.pid)
            t0 = time.perf_counter()
            results = asyncio.run(run_load(url, bodies[args.warmup :], args.concurrency, client_timeout))
            wall = time.perf_counter() - t0
            time.sleep(args.settle_s)  # the same wait as before the baseline reading
            rss1, fds1 = rss_and_fds(proxy.pid)
            metrics = httpx.get(f"http://127.0.0.1:{px_port}/metrics", timeout=10).text
            replay_stats = httpx.get(f"{replay_url.removesuffix('/v1')}/_stats", timeout=30).json()
        finally:
            stop(proxy)
            stop(replay)
            proxy_log.close()
        report(args, results, wall, build_s, deadline, hang_s, (rss0, fds0, rss1, fds1), metrics, replay_stats)


def report(args, results, wall, build_s, deadline, hang_s, mem, metrics, replay_stats) -> None:  # noqa: ANN001
    """Print the run's figures (see the module docstring)."""
    rss0, fds0, rss1, fds1 = mem
    verdicts = Counter(r["verdict"] for r in results)
    statuses = Counter(str(r["status"]) for r in results)
    malformed = sum(n for v, n in verdicts.items() if v.startswith("malformed"))
    non_openai = sum(n for v, n in verdicts.items() if v.startswith("non-OpenAI"))
    bad_cost = sum(r["bad_cost"] for r in results)
    times = [r["s"] for r in results]
    p100 = max(times)
    limit = None if deadline is None else deadline + 1.0
    streamed = sum(r["stream"] for r in results)
    print(
        f"bench_proxy_faults: {len(results)} routed requests ({streamed} streamed), concurrency {args.concurrency}, "
        f"category export of {args.samples} MMLU-Pro samples (built in {build_s:.0f} s); upstream replay-serve "
        f"--fault-rate {args.fault_rate:g} --fault-kinds {args.fault_kinds} --hang-s {hang_s:g}; "
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    faults = replay_stats.get("faults", {})
    print(
        f"  upstream saw {replay_stats.get('requests')} requests: {replay_stats.get('ok')} answered, "
        f"{sum(faults.values())} faulted ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})"
    )
    print(f"  wall {wall:.1f} s ({len(results) / wall:.0f} req/s)")
    print(f"  status histogram: {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}")
    print(f"  verdicts: {', '.join(f'{k}: {v}' for k, v in verdicts.most_common())}")
    print(f"  malformed 200s / broken answers : {malformed}  (target 0: {'MET' if malformed == 0 else 'NOT MET'})")
    print(f"  non-OpenAI-shaped errors        : {non_openai}  (target 0: {'MET' if non_openai == 0 else 'NOT MET'})")
    print(f"  invalid cost headers/comments   : {bad_cost}  (target 0: {'MET' if bad_cost == 0 else 'NOT MET'})")
    deadline_txt = "no request_deadline_s in this proxy" if limit is None else (
        f"deadline {deadline:g} s + 1 s = {limit:g} s: {'MET' if p100 <= limit else 'NOT MET'}"
    )
    print(
        f"  total time per request: p50 {pct(times, 50) / 1000:.3f} s  p99 {pct(times, 99) / 1000:.3f} s  "
        f"p100 {p100:.3f} s  ({deadline_txt})"
    )
    for label, subset in (("non-streamed", [r for r in results if not r["stream"]]),
                          ("streamed", [r for r in results if r["stream"]])):  # fmt: skip
        if subset:
            total, head = [r["s"] for r in subset], [r["headers_s"] for r in subset]
            print(
                f"    {label:12s} ({len(subset)}): total p50 {pct(total, 50) / 1000:.3f} s  p100 {max(total):.3f} s;"
                f"  time to response headers p50 {pct(head, 50) / 1000:.3f} s  p100 {max(head):.3f} s"
            )
    drss, dfds = (rss1 - rss0) / rss0, (fds1 - fds0) / max(fds0, 1)
    print(
        f"  proxy RSS {rss0:.1f} -> {rss1:.1f} MB ({drss:+.1%}), open fds {fds0} -> {fds1} ({dfds:+.1%})  "
        f"(target within 10%: {'MET' if abs(drss) <= 0.10 and abs(dfds) <= 0.10 else 'NOT MET'})"
    )
    lines = metrics_failures(metrics)
    if lines:
        print("  proxy /metrics failure counters (summed over models):")
        for line in lines:
            print(f"    {line}")
    slowest = sorted(results, key=lambda r: -r["s"])[:5]
    kind = {True: "stream", False: "json"}
    described = [f"{r['s']:.2f} s {kind[r['stream']]} {r['status']} {r['verdict']}" for r in slowest]
    print("  slowest: " + "; ".join(described))
    examples = {}
    for r in results:
        label = r["verdict"] + (" + invalid cost" if r["bad_cost"] else "")
        if (r["verdict"].startswith(("malformed", "non-OpenAI")) or r["bad_cost"]) and label not in examples:
            examples[label] = r.get("sample", b"")
    for verdict, sample in examples.items():
        print(f"  e.g. {verdict}: {sample!r}")


if __name__ == "__main__":
    main()
