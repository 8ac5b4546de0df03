"""Text selection where it matters: templated MMLU-Pro, savings with ``text = "full"`` vs ``"auto"`` (issue 17).

    nice -n 10 python bench/bench_text_selection.py                       # seeds 0,1,2, all samples
    nice -n 10 python bench/bench_text_selection.py --seeds 0 --max-samples 3000 --routers classifier

Data: the templated variant of ``bench/router_plateau.py`` (imported, not copied): every MMLU-Pro prompt wrapped
in a long fixed system prompt, a fixed 5-shot block and an answer cue; answers, scores and costs are the
recorded ones (costs ESTIMATED by the source's convention). Split 50/20/30 by sample with the seed.

Point rule, the same for every row and the one of ``router_plateau.measure``: the reference is the best single
model on validation; the operating point is the cheapest on validation whose quality is at least 99% of the
reference's validation quality; that point replayed unchanged on test. Per embedding router (on
``minilm-static``) and text rule: the test saving against the reference with its paired 95% bootstrap
interval, the quality ratio and whether 99% held on test, the saving at the risk-controlled point
(``router_plateau.risk_controlled_lam``); then, per router, the paired difference ``auto - full`` of the saving
(the same bootstrap resamples of the test samples, each rule at its own validation-chosen point). The point
chosen on a noisy validation curve moves a lot between rules and seeds, so two figures that do not depend on
the choice are printed beside it: the saving read off the test frontier at 99% of the reference (optimistic,
labelled) and the AIQ over the common test cost range of all rows (``evals.metrics.aiq_common``).

Export parity: each ``text = "auto"`` router is exported at its chosen point, loaded back (its own
``runtime.py``, the learned rule read from ``router.json``) and its decisions on every test prompt compared with
the workbench's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_plateau import ENCODER, N_BOOT, RATIO, measure, templated_mmlu  # noqa: E402

from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval, format_pct  # noqa: E402
from evals.metrics import aiq_common  # noqa: E402
from evals.stats import Interval, resample_counts  # noqa: E402
from evals.workbench.calibration import Target, calibrate  # noqa: E402
from routers import make_router  # noqa: E402
from routers.export import export_router, load_exported  # noqa: E402

ROUTERS = ("classifier", "knn", "mf", "irt-blend")
TEXTS = ("full", "auto", "last_user")


def chosen_point(vp, tp, split) -> tuple[float, np.ndarray, np.ndarray]:
    """``(lam, test cost per sample, test choice)`` at the validation-chosen point (``router_plateau``'s rule)."""
    val = split.validation
    q_val, c_val = val.quality.mean(axis=0), val.cost.mean(axis=0)
    ref = int(np.where(q_val >= q_val.max() - 1e-12, c_val, np.inf).argmin())
    cal = calibrate(None, val, split.test, Target("quality_floor", float(RATIO * q_val[ref])),  # type: ignore[arg-type]
                    val_policy=vp, test_policy=tp)
    choice, cost, _ = tp.outcomes(cal.lam)
    return float(cal.lam), np.asarray(cost, float), np.asarray(choice)


def export_parity(router, lam: float, test, choice: np.ndarray) -> tuple[int, int]:
    """(decisions of the exported folder equal to the workbench's, test prompts) at ``lam``."""
    with tempfile.TemporaryDirectory() as tmp:
        exported = load_exported(export_router(router, Path(tmp) / "export", lam=lam, table_card=test.card))
        got = exported.route_indices(list(test.prompts), categories=[str(c) for c in test.categories])
    return int((got == choice).sum()), len(choice)


def run(seed: int, max_samples: int | None, routers: list[str], texts: list[str]) -> list[dict]:
    """Every (router, text) on one seed; prints the rows and returns them."""
    table, _ = templated_mmlu(max_samples, seed)
    split = table.split((0.5, 0.2, 0.3), random_state=seed)
    test = split.test
    W = resample_counts(test.n_samples, N_BOOT, seed=seed)
    rows = []
    for name in routers:
        for text in texts:
            t0 = time.perf_counter()
            router = make_router({"name": name, "params": {"encoder": ENCODER, "text": text}}).fit(split.train)
            vp, tp = router.policy(split.validation), router.policy(test)
            row = measure(f"{name} text={text}", vp, tp, split, seed)
            lam, cost, choice = chosen_point(vp, tp, split)
            ref_cost = test.cost[:, list(test.models).index(row["reference"])]
            assert abs((1 - cost.mean() / ref_cost.mean()) - row["saving"].value) < 1e-12  # the same point
            row.update(name=name, text=text, cost=cost, ref_cost=ref_cost)
            if text != "full":
                row["parity"] = export_parity(router, lam, test, choice)
            rows.append(row)
            print(f"  {name} text={text}: {time.perf_counter() - t0:.1f}s", flush=True)
    aiqs = aiq_common({f"{r['name']} {r['text']}": r["curve"] for r in rows})
    for r in rows:
        r["aiq"] = aiqs[f"{r['name']} {r['text']}"]
    print_rows(seed, rows, W, test.n_samples)
    return rows


def saving_difference(a: dict, b: dict, W: np.ndarray) -> Interval:
    """Paired bootstrap interval of ``saving(b) - saving(a)`` (both against the same reference's test cost)."""
    n = len(a["cost"])
    rc = W @ a["ref_cost"] / n
    draws = (W @ a["cost"] / n - W @ b["cost"] / n) / rc  # (1 - cb/rc) - (1 - ca/rc)
    point = float((a["cost"].mean() - b["cost"].mean()) / a["ref_cost"].mean())
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return Interval(point, float(lo), float(hi), n)


def print_rows(seed: int, rows: list[dict], W: np.ndarray, n_test: int) -> None:
    """The markdown table of one seed, then the paired differences per router."""
    print(f"\n### templated MMLU-Pro, seed {seed} (n_test = {n_test}; reference = {rows[0]['reference']}; "
          f"{POINT_VALIDATION_CHOSEN}, target {RATIO:.0%} of the reference; 'frontier saving' is "
          f"{POINT_TEST_FRONTIER})\n")
    print("| router | text | saving [95% CI] | quality / ref | held 99% on test | risk-controlled saving (held) "
          "| frontier saving | AIQ (common) | export parity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["saving"]
        parity = f"{r['parity'][0]}/{r['parity'][1]}" if "parity" in r else "—"
        print(f"| {r['name']} | {r['text']} | {format_interval(s.value, s.low, s.high, pct=True)} | "
              f"{format_pct(r['ratio'])} | {'yes' if r['held'] else 'no'} | {format_pct(r['rc_saving'].value)} "
              f"({'yes' if r['rc_held'] else 'no'}) | {format_pct(r['frontier_saving'])} | {r['aiq']:.4f} | "
              f"{parity} |")
    print("\n| router | saving auto - full [95% CI], paired |")
    print("|---|---|")
    for name in dict.fromkeys(r["name"] for r in rows):
        by = {r["text"]: r for r in rows if r["name"] == name}
        if "full" in by and "auto" in by:
            d = saving_difference(by["full"], by["auto"], W)
            print(f"| {name} | {format_interval(d.value, d.low, d.high, pct=True)} (points of saving) |")
    print(flush=True)


def print_summary(seeds: list[int], per_seed: list[list[dict]]) -> None:
    """Across seeds: mean saving per (router, text), how often 99% held, mean paired difference auto - full."""
    print(f"\n### summary over seeds {seeds} ({POINT_VALIDATION_CHOSEN})\n")
    print("| router | text | mean saving | min..max | mean saving - full | held 99% on test | mean frontier saving "
          "| mean AIQ | export parity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r0 in enumerate(per_seed[0]):
        sav = np.array([rows[i]["saving"].value for rows in per_seed])
        full = np.array([
            next(r["saving"].value for r in rows if r["name"] == r0["name"] and r["text"] == "full")
            if any(r["name"] == r0["name"] and r["text"] == "full" for r in rows) else np.nan
            for rows in per_seed
        ])
        held = sum(rows[i]["held"] for rows in per_seed)
        par = [rows[i].get("parity") for rows in per_seed]
        parity = "—" if par[0] is None else f"{sum(p[0] for p in par)}/{sum(p[1] for p in par)}"
        front = np.array([np.nan if rows[i]["frontier_saving"] is None else rows[i]["frontier_saving"]
                          for rows in per_seed])
        aiq = np.mean([rows[i]["aiq"] for rows in per_seed])
        print(f"| {r0['name']} | {r0['text']} | {format_pct(sav.mean())} | {format_pct(sav.min())}.."
              f"{format_pct(sav.max())} | {(sav - full).mean() * 100:+.1f} pts | {held}/{len(seeds)} | "
              f"{format_pct(np.nanmean(front) if np.isfinite(front).any() else None)} | {aiq:.4f} | {parity} |")


def main(argv: list[str] | None = None) -> int:
    """Run the bench (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds (default 0,1,2)")
    ap.add_argument("--max-samples", type=int, default=None, help="subsample the MMLU-Pro samples (CPU)")
    ap.add_argument("--routers", default=",".join(ROUTERS), help=f"comma-separated (default {','.join(ROUTERS)})")
    ap.add_argument("--texts", default=",".join(TEXTS), help=f"comma-separated rules (default {','.join(TEXTS)})")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = [run(s, args.max_samples, args.routers.split(","), args.texts.split(",")) for s in seeds]
    if len(seeds) > 1:
        print_summary(seeds, per_seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
