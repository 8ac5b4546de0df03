"""Does the irt-blend router clear issue 3's bar? Savings at parity on MMLU-Pro, APGR on RouteLLM's MMLU.

    python bench/router_quality_stacked.py                     # both, MiniLM embeddings
    python bench/router_quality_stacked.py --only mmlu-pro --seeds 0,1,2,3

MMLU-Pro (14 models, ``split(random_state=seed)``): every router is fitted on TRAIN; its operating point is
the cheapest ``lam`` of its own grid whose VALIDATION accuracy is >= the best single model's validation
accuracy (best = highest train accuracy; never tuned on test). At that point, on TEST: cost per 1k requests
(estimated from text lengths and list prices, as the table's ``cost_estimated`` flag says), accuracy with a
bootstrap 95% interval, savings vs the best single model on test, and the paired-bootstrap 95% interval of
the accuracy difference (router - best single model, same resampled questions). The bar: savings >= 80%
and the difference interval reaching zero or above. With several seeds, a summary line per router follows.

RouteLLM MMLU (GPT-4 vs Mixtral): fit on train, sweep the operating point on TEST; APGR = area under PGR
against the strong-call share (``evals.metrics.apgr``; random = 0.5). The ratio to the plain logistic
regression measured in the same run is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.metrics import apgr  # noqa: E402
from evals.outcomes import OutcomeTable  # noqa: E402
from routers import Router, make_router  # noqa: E402

N_BOOT = 2000
PLAIN_LR = "classifier (plain LR + category)"


def routers_compared(encoder: str) -> list[tuple[str, dict]]:
    """(label, spec) of the MMLU-Pro contenders: the baselines, the plain LR, the others' best, ours."""
    emb = {"encoder": encoder}
    return [
        ("category", {"name": "category", "params": {}}),
        (PLAIN_LR, {"name": "classifier", "params": {**emb, "use_category": True, "C": 1.0}}),
        (
            "classifier (shrunk, C=0.1)",
            {"name": "classifier", "params": {**emb, "use_category": True, "C": 0.1}},
        ),
        (
            "classifier (shrunk, C=0.02)",
            {"name": "classifier", "params": {**emb, "use_category": True, "C": 0.02}},
        ),
        (
            "classifier (shrunk, C=0.01)",
            {"name": "classifier", "params": {**emb, "use_category": True, "C": 0.01}},
        ),
        ("ensemble (mf + knn + category)", {"name": "ensemble", "params": {**emb}}),
        (
            "irt-blend (factors only)",
            {"name": "irt-blend", "params": {**emb, "weight_linear": 0.0, "weight_category": 0.0}},
        ),
        ("irt-blend", {"name": "irt-blend", "params": {**emb}}),
    ]


def bootstrap(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[float, float]:
    """Percentile 95% interval of the mean over samples (resampled with replacement)."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def choose_lam(router: Router, validation: OutcomeTable, target: float) -> tuple[float, float]:
    """The cheapest operating point whose validation accuracy is >= target (the best point if none is).

    Returns ``(lam, validation mean cost there)``; the cost lets routers be compared on validation alone.
    """
    policy = router.policy(validation)
    grid = policy.grid(400)
    cost, qual, _ = policy.curve(grid)
    ok = np.flatnonzero(qual >= target - 1e-12)
    if len(ok) == 0:
        k = int(np.argmax(qual))
        return float(grid[k]), float("inf")
    k = int(ok[np.argmin(cost[ok])])
    return float(grid[k]), float(cost[k])


def bench_mmlu_pro(encoder: str, seed: int) -> dict[str, tuple[float, float]]:
    """Print the table for one split seed; return label -> (savings, upper bound of the difference CI)."""
    from evals import sources

    table = sources.load("mmlu-pro")
    train, val, test = table.split(random_state=seed)
    rng = np.random.default_rng(seed)
    best_j = int(np.argmax(train.quality.mean(axis=0)))
    best = table.models[best_j]
    target = float(val.quality[:, best_j].mean())
    base_q, base_c = test.quality[:, best_j], test.cost[:, best_j]
    est = " (estimated)" if table.cost_estimated else ""
    print(
        f"\nMMLU-Pro seed {seed}: {table.n_models} models; train/val/test = "
        f"{train.n_samples}/{val.n_samples}/{test.n_samples}; encoder={encoder}; "
        f"cost{est} in $ per 1k requests; n={test.n_samples} test questions"
    )
    print(f"best single model (train): {best}; validation target accuracy {target:.4f}")
    head = (
        f"{'router':34s} {'$/1k':>7s} {'acc':>6s} {'acc 95% CI':>15s} {'savings':>7s} "
        f"{'diff 95% CI':>17s} {'lam (val)':>9s} {'fit s':>6s}"
    )
    print(head + "\n" + "-" * len(head))
    lo, hi = bootstrap(base_q, rng)
    print(
        f"{'single: ' + best:34s} {base_c.mean() * 1e3:7.3f} {base_q.mean():6.4f} "
        f"[{lo:.4f},{hi:.4f}] {0:7.1%}"
    )
    oracle = make_router("oracle").fit(train).policy(test)
    _, oc, oq = oracle.outcomes(1e6)
    lo, hi = bootstrap(oq, rng)
    print(
        f"{'oracle (reference, not routable)':34s} {oc.mean() * 1e3:7.3f} {oq.mean():6.4f} "
        f"[{lo:.4f},{hi:.4f}] {1 - oc.mean() / base_c.mean():7.1%}"
    )
    out: dict[str, tuple[float, float]] = {}
    val_sav: dict[str, float] = {}
    for label, spec in routers_compared(encoder):
        t0 = time.perf_counter()
        try:
            router = make_router(spec).fit(train)
        except Exception as exc:  # noqa: BLE001 - one missing router must not hide the others
            print(f"{label:34s} failed: {type(exc).__name__}: {exc}")
            continue
        fit_s = time.perf_counter() - t0
        lam, val_cost = choose_lam(router, val, target)
        _, cost, qual = router.policy(test).outcomes(lam)
        lo, hi = bootstrap(qual, rng)
        dlo, dhi = bootstrap(qual - base_q, rng)
        sav = 1 - cost.mean() / base_c.mean()
        out[label] = (sav, dhi)
        if label != "category":
            val_sav[label] = 1 - val_cost / float(val.cost[:, best_j].mean())
        print(
            f"{label:34s} {cost.mean() * 1e3:7.3f} {qual.mean():6.4f} [{lo:.4f},{hi:.4f}] {sav:7.1%} "
            f"[{dlo:+.4f},{dhi:+.4f}] {lam:9.4f} {fit_s:6.1f}"
        )
    if val_sav:
        pick = max(val_sav, key=val_sav.get)
        print(
            f"selected on VALIDATION (highest validation savings at parity, {val_sav[pick]:.1%}): {pick} -> "
            f"test savings {out[pick][0]:.1%}, difference CI upper bound {out[pick][1]:+.4f}"
        )
        out["selected on validation"] = out[pick]
    return out


def bench_routellm(encoder: str, seed: int = 0) -> None:
    """APGR on RouteLLM's GPT-4 vs Mixtral MMLU outcomes (test split)."""
    from evals import sources

    table = sources.load("routellm-mmlu")
    train, _, test = table.split(random_state=seed)
    q = train.quality.mean(axis=0)
    strong, weak = int(np.argmax(q)), int(np.argmin(q))
    q_s, q_w = test.quality[:, strong].mean(), test.quality[:, weak].mean()
    print(
        f"\nRouteLLM MMLU: strong={table.models[strong]} ({q_s:.4f}), weak={table.models[weak]} ({q_w:.4f}); "
        f"train/test = {train.n_samples}/{test.n_samples}; encoder={encoder}"
    )
    emb = {"encoder": encoder}
    specs = [
        ("random-mix", {"name": "random-mix", "params": {}}),
        ("category (subject)", {"name": "category", "params": {}}),
        (PLAIN_LR, {"name": "classifier", "params": {**emb}}),
        ("classifier (shrunk, C=0.02)", {"name": "classifier", "params": {**emb, "C": 0.02}}),
        ("classifier (shrunk, C=0.01)", {"name": "classifier", "params": {**emb, "C": 0.01}}),
        ("knn (+ category)", {"name": "knn", "params": {**emb, "use_category": True}}),
        (
            "irt-blend (one cost per model)",
            {"name": "irt-blend", "params": {**emb, "per_category_cost": False}},
        ),
    ]
    values: dict[str, float] = {}
    print(f"{'router':34s} {'APGR':>6s} {'vs plain LR':>11s} {'fit s':>6s}")
    for label, spec in specs:
        t0 = time.perf_counter()
        router = make_router(spec).fit(train)
        fit_s = time.perf_counter() - t0
        policy = router.policy(test)
        grid = policy.grid(1000)
        _, qual, share = policy.curve(np.concatenate([[0.0], grid, [grid[-1] * 1e6 + 1.0]]))
        values[label] = apgr(share[:, strong], qual, q_w, q_s)
        ref = values.get(PLAIN_LR)
        ratio = f"{values[label] / ref:10.3f}x" if ref else f"{'':>11s}"
        print(f"{label:34s} {values[label]:6.3f} {ratio} {fit_s:6.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--encoder", default="minilm", help="sentence encoder of the embedding routers")
    parser.add_argument("--only", choices=["mmlu-pro", "routellm"], help="run one benchmark")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated split seeds for MMLU-Pro (the bar is seed 0)"
    )
    args = parser.parse_args(argv)
    if args.only in (None, "mmlu-pro"):
        seeds = [int(s) for s in args.seeds.split(",")]
        runs = [bench_mmlu_pro(args.encoder, s) for s in seeds]
        if len(runs) > 1:
            print(
                f"\nsummary over seeds {seeds}: savings at the validation-chosen point (test), mean; "
                "seeds whose difference CI stays below zero"
            )
            for label in runs[0]:
                sav = [r[label][0] for r in runs if label in r]
                bad = [s for s, r in zip(seeds, runs, strict=True) if label in r and r[label][1] < 0]
                print(
                    f"  {label:34s} "
                    + " ".join(f"{v:6.1%}" for v in sav)
                    + f" | mean {np.mean(sav):6.1%} | {bad}"
                )
    if args.only in (None, "routellm"):
        bench_routellm(args.encoder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
