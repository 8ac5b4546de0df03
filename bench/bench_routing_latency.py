"""Routing-decision latency, one prompt at a time, featurisation included, on MMLU-Pro prompts.

Measured in one process, against a baseline measured in the same run:

* baseline: a bare sentence-transformers all-MiniLM-L6-v2 ``encode`` of the prompt (what any embedding
  router pays per request before it can decide);
* the ``minilm-static`` encoder (``routers.embeddings``) alone;
* ``router.route([prompt], lam)`` for every registered router, fitted on the MMLU-Pro train split (seed 0,
  stratified 60/20/20). Routers that take an ``encoder`` are run twice, with ``minilm`` and with
  ``minilm-static``. The embedding disk cache is switched off while timing, so every decision pays for its
  featurisation as a service would (the test prompts are usually in the workbench's cache).

With ``--aiq`` it also reports, for each embedding router, the AIQ of its test-split frontier with each
encoder (RouterBench's area under the non-decreasing convex hull, over a cost range common to both), so the
latency gain can be weighed against the quality lost.

Usage::

    python bench/bench_routing_latency.py                     # all routers, 300 prompts
    python bench/bench_routing_latency.py --routers category,classifier --n 100 --aiq
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np

# One prompt at a time on a shared CPU: one thread is the honest (and usually the fastest) setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def percentiles(fn: Callable[[str], object], prompts: list[str], warmup: int = 5) -> tuple[float, float]:
    """p50 and p99 latency in milliseconds of ``fn(prompt)`` over the prompts, after a few warm-up calls."""
    for p in prompts[:warmup]:
        fn(p)
    times = np.empty(len(prompts))
    for i, p in enumerate(prompts):
        t0 = time.perf_counter_ns()
        fn(p)
        times[i] = (time.perf_counter_ns() - t0) / 1e6
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def common_aiq(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """AIQ of each (cost, quality) curve over the cost range all curves cover."""
    from evals import metrics

    lo = max(float(c.min()) for c, _ in curves.values())
    hi = min(float(c.max()) for c, _ in curves.values())
    return {k: metrics.aiq(c, q, cost_range=(lo, hi)) for k, (c, q) in curves.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="number of test prompts timed (default 300)")
    ap.add_argument("--routers", default="", help="comma-separated router names (default: all)")
    ap.add_argument("--lam", type=float, default=0.01, help="operating point of route() ($ per +1 quality)")
    ap.add_argument("--aiq", action="store_true", help="also compare test AIQ with minilm vs minilm-static")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    import routers
    from evals import sources
    from routers.embeddings import disk_cache_disabled, embed, get_encoder
    from routers.encoders.minilm import minilm_path

    table = sources.load("mmlu-pro")
    split = table.split((0.6, 0.2, 0.2), random_state=0, stratify=True)
    prompts = list(split.test.prompts[: args.n])
    chars = np.array([len(p) for p in prompts])
    print(f"MMLU-Pro: {table.n_samples} samples x {len(table.models)} models; train {split.train.n_samples}, "
          f"test {split.test.n_samples}. Timing {len(prompts)} test prompts one at a time "
          f"(mean {chars.mean():.0f} chars, median {np.median(chars):.0f}); torch threads {args.threads}.")

    rows: list[tuple[str, float, float]] = []
    skipped: list[tuple[str, str]] = []

    # (a) the baseline, (b) the static encoder alone.
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    base50, base99 = percentiles(lambda p: st.encode(p, show_progress_bar=False), prompts)
    rows.append(("sentence-transformers MiniLM encode (baseline)", base50, base99))
    t0 = time.perf_counter()
    static = get_encoder("minilm-static")
    print(f"minilm-static encoder ready in {time.perf_counter() - t0:.1f} s (distilled now if not cached)")
    rows.append(("minilm-static encode", *percentiles(lambda p: static.encode([p]), prompts)))
    minilm = get_encoder("minilm")
    rows.append(("routers.embeddings minilm encode", *percentiles(lambda p: minilm.encode([p]), prompts)))

    # (c) every registered router.
    wanted = [n for n in args.routers.split(",") if n] or routers.router_registry.names()
    print("fitting embeddings of the train split (cached after the first run)...", flush=True)
    embed(list(split.train.prompts), "minilm")
    aiq_rows: list[tuple[str, dict[str, float]]] = []
    for name in wanted:
        try:
            cls = routers.router_registry.get(name)
            encoders = ["minilm", "minilm-static"] if "encoder" in cls._get_param_names() else [None]
        except Exception as exc:  # noqa: BLE001 - a benchmark reports every failure and carries on
            skipped.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        curves = {}
        for enc in encoders:
            label = name if enc is None else f"{name} [{enc}]"
            try:
                params = {} if enc is None else {"encoder": enc}
                router = routers.make_router({"name": name, "params": params})
                t0 = time.perf_counter()
                router.fit(split.train)
                fit_s = time.perf_counter() - t0
                with disk_cache_disabled():
                    p50, p99 = percentiles(lambda p, r=router: r.route([p], args.lam), prompts)
                rows.append((f"{label} route (fit {fit_s:.1f} s)", p50, p99))
                if args.aiq and enc is not None:
                    pol = router.policy(split.test)
                    cost, quality, _ = pol.curve(pol.grid(200))
                    curves[enc] = (np.asarray(cost) * 1000.0, np.asarray(quality))
            except Exception as exc:  # noqa: BLE001 - a benchmark reports every failure and carries on
                skipped.append((label, f"{type(exc).__name__}: {str(exc)[:200]}"))
            print(f"  done: {label}", flush=True)
        if len(curves) == 2:
            aiq_rows.append((name, common_aiq(curves)))

    width = max(len(r[0]) for r in rows) + 2
    print()
    head = f"{'p50 ms':>9} {'p99 ms':>9} {'p50/base':>9} {'p99/base':>9}"
    print(f"{'what (one prompt per call)':<{width}} {head}")
    for label, p50, p99 in rows:
        print(f"{label:<{width}} {p50:>9.3f} {p99:>9.3f} {p50 / base50:>9.4f} {p99 / base99:>9.4f}")
    if aiq_rows:
        print("\nTest-split AIQ (mean accuracy under the non-decreasing hull, on the cost range both cover;")
        print(f"{len(split.test.prompts)} test samples):")
        print(f"{'router':<16} {'minilm':>8} {'static':>8} {'static-minilm':>14}")
        for name, a in aiq_rows:
            diff = a["minilm-static"] - a["minilm"]
            print(f"{name:<16} {a['minilm']:>8.4f} {a['minilm-static']:>8.4f} {diff:>+14.4f}")
    for label, why in skipped:
        print(f"SKIPPED {label}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
