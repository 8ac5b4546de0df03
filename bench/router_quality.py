"""Router quality on real outcomes: savings at parity on MMLU-Pro; APGR on RouteLLM's GPT-4 vs Mixtral MMLU.

    python bench/router_quality.py                       # both benchmarks, MiniLM embeddings
    python bench/router_quality.py --encoder minilm-static --only mmlu-pro

MMLU-Pro (14 models, ``split(random_state=0)``): each router is fitted on train; its operating point is the
cheapest ``lam`` (on the router's own grid) whose VALIDATION accuracy is at least the best single model's
validation accuracy (the best single model = best on train). At that point, on TEST: cost per 1k requests,
accuracy with a bootstrap 95% interval, savings vs the best single model on test, and the paired-bootstrap
95% interval of the accuracy difference (router - best single model). Costs are estimated from token counts
and a price table (the table's ``cost_estimated`` flag), which the output says.

RouteLLM MMLU (2 models): fit on train, on TEST sweep the operating point; APGR = area under
``(quality - weak) / (strong - weak)`` as a function of the share of strong-model calls (0..1), RouteLLM's
definition (random = 0.5). The ratio to the random baseline measured in the same run is printed too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.outcomes import OutcomeTable  # noqa: E402
from routers import Router, make_router  # noqa: E402

N_BOOT = 2000


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``values`` over samples (resampled with replacement)."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def mmlu_pro_routers(encoder: str) -> list[tuple[str, dict]]:
    """(label, spec) of the routers compared on MMLU-Pro."""
    emb = {"encoder": encoder}
    return [
        ("random-mix", {"name": "random-mix", "params": {}}),
        ("category", {"name": "category", "params": {}}),
        ("classifier (LR, no category)", {"name": "classifier", "params": {**emb, "use_category": False}}),
        ("classifier (LR + category)", {"name": "classifier", "params": {**emb, "use_category": True}}),
        ("knn", {"name": "knn", "params": {**emb, "use_category": True}}),
        ("mf", {"name": "mf", "params": {**emb, "use_category": True}}),
        ("cost-aware", {"name": "cost-aware", "params": {**emb, "use_category": True}}),
        ("ensemble", {"name": "ensemble", "params": {**emb}}),
    ]


def choose_lam(router: Router, validation: OutcomeTable, target: float) -> float:
    """The cheapest operating point whose validation accuracy is >= target (the dearest point if none)."""
    policy = router.policy(validation)
    grid = policy.grid(400)
    cost, qual, _ = policy.curve(grid)
    ok = np.flatnonzero(qual >= target - 1e-12)
    if len(ok) == 0:
        return float(grid[int(np.argmax(qual))])
    return float(grid[ok[np.argmin(cost[ok])]])


def bench_mmlu_pro(encoder: str, seed: int = 0) -> None:
    from evals import sources

    table = sources.load("mmlu-pro")
    split = table.split(random_state=seed)
    train, val, test = split
    rng = np.random.default_rng(seed)
    single = make_router("single").fit(train)
    best = single.chosen_model_
    j = list(test.models).index(best)
    val_target = float(val.quality[:, list(val.models).index(best)].mean())
    base_q, base_c = test.quality[:, j], test.cost[:, j]
    oracle = make_router("oracle").fit(train).policy(test)
    _, oc, oq = oracle.outcomes(1e6)
    est = " (estimated)" if table.cost_estimated else ""
    print(
        f"\nMMLU-Pro: {table.n_models} models; "
        f"train/val/test = {train.n_samples}/{val.n_samples}/{test.n_samples} "
        f"samples; encoder={encoder}; costs{est} in $ per 1k requests"
    )
    print(f"best single model on train: {best}; its validation accuracy {val_target:.4f} is the target")
    header = (
        f"{'router':32s} {'$/1k':>8s} {'acc':>7s} {'acc 95% CI':>17s} {'savings':>8s} "
        f"{'diff 95% CI':>19s} {'fit s':>6s}"
    )
    print(header)
    print("-" * len(header))
    lo, hi = bootstrap_ci(base_q, rng)
    print(
        f"{'single: ' + best:32s} {base_c.mean() * 1e3:8.4f} {base_q.mean():7.4f} "
        f"[{lo:.4f}, {hi:.4f}] {0:7.1%} {'':>19s}"
    )
    lo, hi = bootstrap_ci(oq, rng)
    print(
        f"{'oracle (max quality, cheapest)':32s} {oc.mean() * 1e3:8.4f} {oq.mean():7.4f} "
        f"[{lo:.4f}, {hi:.4f}] "
        f"{1 - oc.mean() / base_c.mean():7.1%} {'':>19s}"
    )
    for label, spec in mmlu_pro_routers(encoder):
        t0 = time.perf_counter()
        try:
            router = make_router(spec).fit(train)
        except Exception as exc:  # noqa: BLE001 - a missing router must not hide the others' numbers
            print(f"{label:32s} failed: {type(exc).__name__}: {exc}")
            continue
        fit_s = time.perf_counter() - t0
        lam = choose_lam(router, val, val_target)
        _, cost, qual = router.policy(test).outcomes(lam)
        lo, hi = bootstrap_ci(qual, rng)
        dlo, dhi = bootstrap_ci(qual - base_q, rng)  # paired: same resampled samples for both
        savings = 1 - cost.mean() / base_c.mean()
        print(
            f"{label:32s} {cost.mean() * 1e3:8.4f} {qual.mean():7.4f} [{lo:.4f}, {hi:.4f}] {savings:7.1%} "
            f"[{dlo:+.4f}, {dhi:+.4f}] {fit_s:6.1f}"
        )


def apgr(router: Router, test: OutcomeTable, strong: int, weak: int) -> float:
    """Area under PGR vs strong-call share (RouteLLM), interpolating linearly between operating points."""
    policy = router.policy(test)
    grid = policy.grid(1000)
    _, qual, share = policy.curve(np.concatenate([[0.0], grid, [grid[-1] * 1e6 + 1.0]]))
    q_s, q_w = test.quality[:, strong].mean(), test.quality[:, weak].mean()
    pgr = (qual - q_w) / (q_s - q_w)
    s = share[:, strong]
    # Endpoints: all weak and all strong are always attainable by routing everything one way.
    s = np.concatenate([[0.0], s, [1.0]])
    pgr = np.concatenate([[0.0], pgr, [1.0]])
    order = np.lexsort((pgr, s))
    s, pgr = s[order], pgr[order]
    # Keep, for each share, the best PGR reached (the curve the router's knob traces).
    uniq, first = np.unique(s, return_index=True)
    best = np.maximum.reduceat(pgr, first)
    return float(np.trapezoid(best, uniq))


def bench_routellm(encoder: str, seed: int = 0) -> None:
    from evals import sources

    table = sources.load("routellm-mmlu")
    train, _, test = table.split(random_state=seed)
    q = train.quality.mean(axis=0)
    strong, weak = int(np.argmax(q)), int(np.argmin(q))
    print(
        f"\nRouteLLM MMLU: strong={table.models[strong]}, weak={table.models[weak]}; "
        f"train/test = {train.n_samples}/{test.n_samples} samples; encoder={encoder}"
    )
    emb = {"encoder": encoder}
    specs = [
        ("random-mix", {"name": "random-mix", "params": {}}),
        ("category (subject)", {"name": "category", "params": {}}),
        ("classifier (LR + category)", {"name": "classifier", "params": {**emb}}),
        ("knn", {"name": "knn", "params": {**emb, "use_category": True}}),
        ("mf", {"name": "mf", "params": {**emb}}),
        ("ensemble", {"name": "ensemble", "params": {**emb}}),
    ]
    base = None
    print(f"{'router':32s} {'APGR':>6s} {'vs random':>9s}")
    for label, spec in specs:
        try:
            router = make_router(spec).fit(train)
        except Exception as exc:  # noqa: BLE001
            print(f"{label:32s} failed: {type(exc).__name__}: {exc}")
            continue
        value = apgr(router, test, strong, weak)
        base = value if base is None else base
        print(f"{label:32s} {value:6.3f} {value / base:9.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="minilm", help="sentence encoder of the embedding routers")
    parser.add_argument("--only", choices=["mmlu-pro", "routellm"], help="run one benchmark")
    args = parser.parse_args(argv)
    if args.only in (None, "mmlu-pro"):
        bench_mmlu_pro(args.encoder)
    if args.only in (None, "routellm"):
        bench_routellm(args.encoder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
