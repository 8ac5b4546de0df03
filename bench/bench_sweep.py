"""Benchmark: a full frontier sweep (10 routers x 200 operating points) over a 100,000 x 14 outcome table.

The table is the real MMLU-Pro outcomes (14 models x 12,032 questions, costs estimated) tiled to 100,000
rows. Each router's scores are computed ONCE, before timing (featurisation and scoring are excluded, as in an
evaluation, where ``Router.policy`` scores a table once); what is timed is the sweep itself: finding the
operating-point grid (``Policy.grid(200)``) and the mean cost, quality and traffic shares at every point
(``Policy.curve``), for all 10 routers.

The baseline, measured in the same process, is a straightforward per-row Python loop (for each operating
point,
for each row, pick ``argmax lam * q - c``, ties to the cheaper) over a 1,000-row slice; its time is scaled
linearly to 100,000 rows x 10 routers. The sweep's results on that slice are checked against the loop's.

The 10 score matrices: the registered ``category`` router (two settings), the oracle (the true outcomes), and
seven learned-router stand-ins derived from the real outcomes (category means blended with the true score
plus noise, at several noise levels; three of them with per-request cost predictions), so that the hull walk
sees realistic, dense, per-row-distinct scores.

Run: ``python bench/bench_sweep.py [--rows 100000] [--points 200] [--data-dir D]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals import sources  # noqa: E402
from evals.workbench.frontier import sweep_policies  # noqa: E402
from routers import Queries, ScorePolicy, make_router  # noqa: E402


def score_matrices(table, n_rows: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, quality_hat, cost_hat) of 10 routers over the table tiled to ``n_rows`` (not timed)."""
    rng = np.random.default_rng(seed)
    reps = -(-n_rows // table.n_samples)
    tile = lambda a: np.tile(a, (reps, 1))[:n_rows]  # noqa: E731
    Q, C = tile(table.quality), tile(table.cost)
    queries = Queries.from_table(table)
    out = []
    for name, params in [("category", {}), ("category", {"per_category_cost": False, "smoothing": 10.0})]:
        router = make_router({"name": name, "params": params}).fit(table)
        out.append(
            (
                f"{name}{'' if not params else '-global-cost'}",
                tile(router.predict_quality(queries)),
                tile(router.predict_cost(queries)),
            )
        )
    out.append(("oracle", Q, C))
    cat_q = out[0][1]
    mean_c = np.broadcast_to(C.mean(axis=0), C.shape)
    for i, (blend, noise) in enumerate(
        [(0.2, 0.05), (0.3, 0.1), (0.4, 0.15), (0.5, 0.2), (0.6, 0.1), (0.3, 0.3), (0.7, 0.25)]
    ):
        q_hat = np.clip((1 - blend) * cat_q + blend * Q + rng.normal(0, noise, Q.shape), 0, 1)
        c_hat = C * rng.lognormal(0, 0.2, C.shape) if i >= 4 else mean_c
        out.append((f"learned-{i + 1}{'-cost' if i >= 4 else ''}", q_hat, np.ascontiguousarray(c_hat)))
    return out


def loop_curve(q_hat, c_hat, Q, C, lams):
    """The straightforward per-row Python loop: decide each row at each point."""
    n, m = len(q_hat), len(q_hat[0])
    costs, quals = [], []
    for lam in lams:
        tot_c = tot_q = 0.0
        for i in range(n):
            best_j, best_u = 0, None
            for j in range(m):
                u = lam * q_hat[i][j] - c_hat[i][j]
                if (
                    best_u is None
                    or u > best_u + 1e-12
                    or (abs(u - best_u) <= 1e-12 and c_hat[i][j] < c_hat[i][best_j])
                ):
                    best_j, best_u = j, u
            tot_c += C[i][best_j]
            tot_q += Q[i][best_j]
        costs.append(tot_c / n)
        quals.append(tot_q / n)
    return np.array(costs), np.array(quals)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--slice", type=int, default=1000, help="rows of the per-row Python loop baseline")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (the best is reported)")
    args = ap.parse_args(argv)

    table = sources.load("mmlu-pro", data_dir=args.data_dir).complete()
    t0 = time.perf_counter()
    mats = score_matrices(table, args.rows)
    reps = -(-args.rows // table.n_samples)
    Q = np.tile(table.quality, (reps, 1))[: args.rows]
    C = np.tile(table.cost, (reps, 1))[: args.rows]
    print(
        f"table: MMLU-Pro {table.n_samples} x {table.n_models} (costs estimated) tiled to {args.rows:,} x "
        f"{Q.shape[1]}; scores for {len(mats)} routers computed once in {time.perf_counter() - t0:.1f}s "
        "(featurisation/scoring excluded from the timing below)"
    )

    def timed(workers: int) -> tuple[float, float, list[int]]:
        best, best_cpu, n_points = np.inf, np.inf, []
        for _ in range(args.repeat):
            policies = [ScorePolicy(table.models, qh, ch, Q, C) for _, qh, ch in mats]  # no work in __init__
            t, t_cpu = time.perf_counter(), time.process_time()
            out = sweep_policies(policies, n_points=args.points, max_workers=workers)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - t_cpu)
            n_points = [len(lams) for lams, *_ in out]
        return best, best_cpu, n_points

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    one_wall, one_cpu, n_points = timed(1)
    best, best_cpu, _ = timed(os.cpu_count() or 1)
    print(
        f"sweep: {len(mats)} routers x {args.points} points "
        f"(grid sizes {min(n_points)}-{max(n_points)}) over {args.rows:,} rows "
        f"(best of {args.repeat}; target < 1 s; machine load average {load:.1f} on {os.cpu_count()} cores):\n"
        f"  one thread            : {one_wall:.3f}s wall, {one_cpu:.3f}s CPU\n"
        f"  a thread per core ({os.cpu_count()}) : {best:.3f}s wall, {best_cpu:.3f}s CPU "
        f"(evals.workbench.frontier.sweep_policies)"
    )

    # Baseline: per-row Python loop over a slice, same points, one router at a time.
    k = args.slice
    name, qh, ch = mats[3]
    lams = ScorePolicy(table.models, qh[:k], ch[:k], Q[:k], C[:k]).grid(args.points)
    lists = [a[:k].tolist() for a in (qh, ch, Q, C)]
    t = time.perf_counter()
    lc, lq = loop_curve(*lists, lams)
    t_loop = time.perf_counter() - t
    fc, fq, _ = ScorePolicy(table.models, qh[:k], ch[:k], Q[:k], C[:k]).curve(lams)
    assert np.allclose(fc, lc) and np.allclose(fq, lq), "sweep and loop disagree on the slice"
    scaled = t_loop * (args.rows / k) * len(mats)
    print(
        f"baseline: per-row Python loop, 1 router ({name}) x {len(lams)} points x {k:,} rows: {t_loop:.2f}s "
        f"-> scaled to {args.rows:,} rows x {len(mats)} routers: {scaled:.0f}s "
        "(results identical on the slice)"
    )
    ratio = scaled / best
    print(
        f"ratio: the vectorised sweep is {ratio:,.0f}x faster than the loop (wall clock, same process; "
        f"{scaled / one_wall:,.0f}x on one thread)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
