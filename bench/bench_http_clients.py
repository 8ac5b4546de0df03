"""Benchmark: CPU time per request of the HTTP clients the proxy could forward with, at 32 requests in flight.

Why the proxy (``routers/export/proxy/``) forwards with aiohttp and not httpx: at high concurrency httpx's
connection pool costs milliseconds of CPU per request (encode/httpx#3215), more than the proxy's whole latency
budget. Each client posts the same chat-completion body to a minimal uvicorn upstream in another process, which
answers after ``--latency-ms``. Printed per client: CPU milliseconds per request in this process (the client's
own cost) and the ratio to aiohttp, the baseline, measured in the same process.

    python bench/bench_http_clients.py [--requests 3200] [--concurrency 32] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import time

import aiohttp
import httpx
from bench_proxy import free_port  # bench/ is this script's folder, so on sys.path

UPSTREAM = textwrap.dedent("""
    import asyncio, sys, uvicorn
    BODY = (b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
            b'"content":"' + b"a" * 800 + b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,'
            b'"completion_tokens":200}}')
    LATENCY = float(sys.argv[2]) / 1000

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if LATENCY:
            await asyncio.sleep(LATENCY)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": BODY})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
""")


async def cpu_per_request(send, requests: int, concurrency: int) -> float:
    """CPU milliseconds of this process per request, after one warm-up pass."""
    per_worker = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await send()

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up: connections open, code warm
    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return 1000 * (time.process_time() - t0) / (per_worker * concurrency)


async def measure(url: str, requests: int, concurrency: int) -> dict[str, float]:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 700}]}).encode()
    headers = {"content-type": "application/json"}
    out = {}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits) as client:

        async def httpx_send() -> None:
            (await client.post(url, content=body, headers=headers)).raise_for_status()

        out["httpx.AsyncClient"] = await cpu_per_request(httpx_send, requests, concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:

        async def aiohttp_send() -> None:
            async with session.post(url, data=body, headers=headers) as r:
                r.raise_for_status()
                await r.read()

        out["aiohttp.ClientSession"] = await cpu_per_request(aiohttp_send, requests, concurrency)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="upstream delay before each answer")
    args = ap.parse_args()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port), str(args.latency_ms)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("upstream did not start") from None
                time.sleep(0.2)
        result = asyncio.run(measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.concurrency))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    base = result["aiohttp.ClientSession"]
    print(
        f"bench_http_clients: {args.requests} requests, {args.concurrency} in flight, upstream latency "
        f"{args.latency_ms:g} ms"
    )
    for name, ms in result.items():
        print(f"  {name:22s} CPU {ms:6.3f} ms per request  ({ms / base:5.1f}x aiohttp)")


if __name__ == "__main__":
    main()
