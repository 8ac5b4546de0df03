"""Do routers get past a plain baseline at "99% of the best single model", on real-dollar and templated data?

    nice -n 10 python bench/router_plateau.py                         # both datasets, seed 0
    nice -n 10 python bench/router_plateau.py --only mbpp --seeds 0,1,2
    nice -n 10 python bench/router_plateau.py --only mmlu-templated --max-samples 6000 --signal
    nice -n 10 python bench/router_plateau.py --only mmlu-templated --seeds 1,2 --routers cascade,oracle

Datasets:

- ``mbpp``: the ``routerbench-mbpp`` source (RouterBench's MBPP split, 11 models, **measured** dollar costs per
  query; one category).
- ``mmlu-templated``: the ``mmlu-pro`` source (14 models; recorded answers and correctness, costs ESTIMATED by
  the source's documented convention) with every prompt wrapped as production prompts are: a long fixed
  system prompt, a fixed 5-shot block (five MMLU dev questions with their answers, from the public
  ``mmlu/mmlu_dev.jsonl``) and the question, then a fixed answer cue. Only the text changes; answers, scores
  and costs are the recorded ones.

The point rule, the same for every row: split by sample 50/20/30 (``OutcomeTable.split(random_state=seed)``);
fit on train; the reference is the best single model on validation; on validation, the cheapest operating
point whose quality is at least 99% of the reference's validation quality (``evals.workbench.calibration``
with a ``quality_floor`` target of ``0.99 * q_ref``); that point replayed unchanged on test. Printed per router
(test): the saving against the reference with its paired 95% bootstrap interval (``evals.stats``), the
quality ratio to the reference, whether 99% held on test; then the same with a risk-controlled choice (the
cheapest validation point whose one-sided 95% paired-bootstrap lower bound of ``quality - 0.99 * q_ref`` is
>= 0; a prototype of issue 17's item 1, here only); and for reference the saving read off the test frontier
at 99% and the AIQ over the common test cost range (``evals.metrics.aiq_common``; the single models' hull is
a row too).

The plain baseline (``baseline: plain LR``): per model a logistic regression (C = 1) on the question-only
``minilm-static`` embedding plus the one-hot category, no category dropout, the same split and point rule.
"Question-only" is the original MMLU-Pro prompt (question and options) on the templated variant, the prompt
itself on MBPP. Every router here uses ``encoder = "minilm-static"``; on the templated variant the embedding
routers run with ``text = "full"`` and ``text = "auto"`` (``routers.text_selection``).

The cascades read the recorded answers (both sources record every model's response): ``cascade`` compares a
stage's answer with the cheaper stages' by normalised final answers of any format (MBPP's answers are code:
``evals.graders.extract.final_answer``), ``cascade agreement=exact`` only by option letters and stated numbers
(the earlier behaviour), and ``cascade-stacked`` also reads the out-of-fold predicted quality of a prompt
classifier (``routers.strategies.cascade_stacked``). The oracle (it reads every recorded score) is the upper
bound. ``--signal`` adds :mod:`router_signal`'s analysis: per model, how well the prompt alone and the cheaper
models' answers separate its right answers from its wrong ones (out-of-fold AUCs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN, format_interval, format_pct  # noqa: E402
from evals.metrics import aiq_common, savings_at  # noqa: E402
from evals.outcomes import OutcomeTable  # noqa: E402
from evals.paths import data_dir  # noqa: E402
from evals.sources import load  # noqa: E402
from evals.stats import point_intervals, resample_counts  # noqa: E402
from evals.workbench.calibration import Target, calibrate  # noqa: E402
from routers import make_router  # noqa: E402
from routers.base import Policy, ScorePolicy  # noqa: E402
from routers.embeddings import embed  # noqa: E402
from routers.strategies._common import fit_logistic  # noqa: E402

ENCODER = "minilm-static"
RATIO = 0.99
N_BOOT = 1000
BASELINE = "baseline: plain LR (question + category)"

SYSTEM_PROMPT = (
    "You are an expert assistant deployed by an education company. Your job is to answer multiple-choice "
    "questions from students and professionals across many fields: law, medicine, engineering, physics, "
    "chemistry, biology, economics, business, history, philosophy, psychology, computer science and "
    "mathematics.\n"
    "Follow these rules in every answer.\n"
    "Read the whole question and every option before answering.\n"
    "Reason step by step, showing the key facts, formulas or legal rules you rely on.\n"
    "When a calculation is needed, write the numbers and units at every step and check the result.\n"
    "When options are close, explain why the others are wrong.\n"
    "Never invent facts; if the question is ambiguous, choose the most standard reading.\n"
    "Be concise: a few short paragraphs at most.\n"
    "Finish with a line of the form 'The answer is (X)' where X is the letter of the chosen option.\n"
    "Here are examples of questions and good answers.\n"
)
ANSWER_CUE = "\nAnswer: Let's think step by step."


def five_shot_block() -> str:
    """Five MMLU dev questions (public data) with their answers, formatted like the questions that follow."""
    path = data_dir() / "mmlu" / "mmlu_dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:25:5]]
    letters = "ABCDEFGHIJ"
    block = []
    for r in rows:
        opts = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(r["choices"]))
        block.append(
            f"Question: {r['question']}\n\nOptions:\n{opts}\n"
            f"Answer: Let's think step by step. ... The answer is ({r['answer']}).\n\n"
        )
    return "".join(block)


def templated_mmlu(max_samples: int | None, seed: int) -> tuple[OutcomeTable, dict[str, str]]:
    """The MMLU-Pro table with templated prompts, and each sample's original (question-only) prompt."""
    table = load("mmlu-pro")
    if max_samples is not None and max_samples < table.n_samples:
        keep = np.random.default_rng(seed).choice(table.sample_ids, size=max_samples, replace=False)
        table = table.select(sample_ids=keep)
    shots = five_shot_block()
    frame = table.frame.copy()
    frame["prompt"] = [SYSTEM_PROMPT + shots + "Question: " + p + ANSWER_CUE for p in frame["prompt"]]
    question = dict(zip(map(str, table.sample_ids), table.prompts, strict=True))
    return OutcomeTable(frame), question


def routers_for(dataset: str) -> list[tuple[str, dict]]:
    """(label, spec) of the routers compared on a dataset."""
    emb = {"encoder": ENCODER}
    out = [("oracle (upper bound, reads the answers)", {"name": "oracle"}), ("category", {"name": "category"})]
    texts = ("full", "auto") if dataset == "mmlu-templated" else ("full",)
    for text in texts:
        tag = f" text={text}" if len(texts) > 1 else ""
        out += [
            (f"classifier{tag}", {"name": "classifier", "params": {**emb, "text": text}}),
            (f"irt-blend{tag}", {"name": "irt-blend", "params": {**emb, "text": text}}),
            (f"stacked{tag}", {"name": "stacked", "params": {**emb, "text": text}}),
        ]
    # The cascade reads the cheap models' answers: normalised agreement (any format: MBPP's code) is the default;
    # "exact" compares only option letters and stated numbers (what the cascade did before).
    out.append(("cascade", {"name": "cascade"}))
    out.append(("cascade agreement=exact", {"name": "cascade", "params": {"agreement": "exact"}}))
    text = "auto" if dataset == "mmlu-templated" else "full"
    out.append((f"cascade-stacked text={text}", {"name": "cascade-stacked", "params": {**emb, "text": text}}))
    return out


def baseline_policies(split, question: dict[str, str] | None) -> tuple[Policy, Policy]:
    """The plain baseline's validation and test policies (see the module docstring)."""
    train = split.train
    cats = sorted({str(c) for c in train.categories})

    def features(t: OutcomeTable) -> np.ndarray:
        texts = [question[str(s)] for s in t.sample_ids] if question else list(t.prompts)
        x = embed(texts, ENCODER).astype(np.float64)
        onehot = np.array([[float(str(c) == k) for k in cats] for c in t.categories]).reshape(len(texts), -1)
        return np.hstack([x, onehot])

    w, b = fit_logistic(features(train), np.array(train.quality, dtype=float), 1.0)
    cost_hat = train.cost.mean(axis=0)

    def policy(t: OutcomeTable) -> Policy:
        q_hat = 1.0 / (1.0 + np.exp(-(features(t) @ w.T + b)))
        c_hat = np.broadcast_to(cost_hat, q_hat.shape)
        return ScorePolicy(t.models, q_hat, c_hat, t.quality, t.cost)

    return policy(split.validation), policy(split.test)


def measure(label: str, vp: Policy, tp: Policy, split, seed: int) -> dict:
    """The point rule on one router's validation/test policies (see the module docstring)."""
    val, test = split.validation, split.test
    q_val = val.quality.mean(axis=0)
    c_val = val.cost.mean(axis=0)
    ref = int(np.where(q_val >= q_val.max() - 1e-12, c_val, np.inf).argmin())
    target = Target("quality_floor", float(RATIO * q_val[ref]))
    cal = calibrate(None, val, test, target, val_policy=vp, test_policy=tp)  # type: ignore[arg-type]
    choice, cost, score = tp.outcomes(cal.lam)
    ref_cost, ref_score = test.cost[:, ref], test.quality[:, ref]
    W = resample_counts(test.n_samples, N_BOOT, seed=seed)
    iv = point_intervals(cost, score, W, ref_cost=ref_cost, ref_score=ref_score)
    ratio = float(score.mean() / ref_score.mean())
    lams = np.asarray(tp.grid(200), float)
    curve_cost, curve_q, _ = tp.curve(lams)
    frontier = savings_at(curve_cost, curve_q, RATIO * float(ref_score.mean()), ref_cost=float(ref_cost.mean()))
    rc_lam = risk_controlled_lam(vp, val.quality[:, ref], seed)
    rc_choice, rc_cost, rc_score = tp.outcomes(rc_lam)
    rc = point_intervals(rc_cost, rc_score, W, ref_cost=ref_cost, ref_score=ref_score)["savings"]
    return {
        "router": label,
        "reference": test.models[ref],
        "rc_saving": rc,
        "rc_held": float(rc_score.mean() / ref_score.mean()) >= RATIO - 1e-12,
        "saving": iv["savings"],
        "quality_diff": iv["quality_diff"],
        "ratio": ratio,
        "held": ratio >= RATIO - 1e-12,
        "met_on_validation": cal.met,
        "frontier_saving": None if frontier is None else frontier.savings,
        "curve": (curve_cost, curve_q),
        "n_test": test.n_samples,
    }


def risk_controlled_lam(vp: Policy, ref_score_val: np.ndarray, seed: int, *, level: float = 0.95) -> float:
    """The cheapest validation point whose one-sided ``level`` bootstrap bound says it reaches 99% of the ref.

    Per operating point, the paired per-sample difference ``score - 0.99 * ref_score`` on validation; the point
    qualifies when the ``1 - level`` quantile of its bootstrap mean is >= 0. None qualifying: the best point.
    """
    lams = np.asarray(vp.grid(200), float)
    W = resample_counts(len(ref_score_val), N_BOOT, seed=seed + 1)
    best_lam, best_q, chosen = float(lams[-1]), -np.inf, None
    for lam in lams:  # increasing lam: the mean cost never decreases, so the first that qualifies is cheapest
        _, _, score = vp.outcomes(float(lam))
        d = score - RATIO * ref_score_val
        if np.quantile(W @ d / len(d), 1 - level) >= 0:
            chosen = float(lam)
            break
        if score.mean() > best_q:
            best_lam, best_q = float(lam), float(score.mean())
    return best_lam if chosen is None else chosen


def run(dataset: str, seed: int, max_samples: int | None, only: list[str] | None = None) -> list[dict]:
    """Every router and the baseline on one dataset and seed; prints the table and returns the rows."""
    if dataset == "mbpp":
        table, question = load("routerbench-mbpp"), None
    else:
        table, question = templated_mmlu(max_samples, seed)
    split = table.split((0.5, 0.2, 0.3), random_state=seed)
    rows = []
    t0 = time.perf_counter()
    vp, tp = baseline_policies(split, question)
    rows.append(measure(BASELINE, vp, tp, split, seed))
    print(f"  {BASELINE}: {time.perf_counter() - t0:.1f}s", flush=True)
    for label, spec in routers_for(dataset):
        if only and not any(label.startswith(prefix) for prefix in only):
            continue
        t0 = time.perf_counter()
        router = make_router(spec).fit(split.train)
        rows.append(measure(label, router.policy(split.validation), router.policy(split.test), split, seed))
        print(f"  {label}: {time.perf_counter() - t0:.1f}s", flush=True)
    test = split.test
    frontiers = {r["router"]: r["curve"] for r in rows}
    frontiers["single models (hull)"] = (test.cost.mean(axis=0), test.quality.mean(axis=0))
    aiqs = aiq_common(frontiers)
    print_table(dataset, seed, rows, aiqs, table, split)
    return rows


def print_table(dataset: str, seed: int, rows: list[dict], aiqs: dict, table: OutcomeTable, split) -> None:
    """The markdown table of one dataset and seed."""
    ref = rows[0]["reference"]
    oracle_q = split.test.quality.max(axis=1).mean()
    costs = "ESTIMATED" if table.frame["cost_estimated"].any() else "measured"
    print(
        f"\n### {dataset} (seed {seed}; n_test = {rows[0]['n_test']}; {table.n_models} models; reference = {ref}, "
        f"the best single model on validation; costs {costs})"
    )
    print(f"Saving and quality ratio {POINT_VALIDATION_CHOSEN} (target {RATIO:.0%} of the reference's quality);")
    print(f"'frontier saving' is {POINT_TEST_FRONTIER} (optimistic); AIQ over the common test cost range.\n")
    print(
        "| router | saving [95% CI] | quality / ref | quality - ref, pts [95% CI] | held 99% on test "
        "| risk-controlled saving [95% CI] (held 99% on test) | frontier saving | AIQ (common) | n_test |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = rows[0]["saving"].value
    for r in rows:
        s = r["saving"]
        held = "yes" if r["held"] else "no"
        if not r["met_on_validation"]:
            held += " (target not met on validation)"
        delta = "" if r is rows[0] or s.value is None or base is None else f" ({(s.value - base) * 100:+.1f} pts)"
        rc, rc_base = r["rc_saving"], rows[0]["rc_saving"].value
        rc_delta = (
            "" if r is rows[0] or rc.value is None or rc_base is None else f" ({(rc.value - rc_base) * 100:+.1f} pts)"
        )
        print(
            f"| {r['router']} | {format_interval(s.value, s.low, s.high, pct=True)}{delta} | "
            f"{format_pct(r['ratio'])} | {_pts(r['quality_diff'])} | {held} | "
            f"{format_interval(rc.value, rc.low, rc.high, pct=True)}{rc_delta} ({'yes' if r['rc_held'] else 'no'}) | "
            f"{format_pct(r['frontier_saving'])} | "
            f"{aiqs[r['router']]:.4f} | {r['n_test']} |"
        )
    hull = aiqs["single models (hull)"]
    print(f"| single models (hull) | — | — | — | — | — | — | {hull:.4f} | {rows[0]['n_test']} |")
    print(
        f"\n(oracle quality on test: {oracle_q:.3f}; reference quality on test: "
        f"{split.test.quality[:, list(split.test.models).index(ref)].mean():.3f})",
        flush=True,
    )


def _pts(iv) -> str:
    """A quality difference in points with its interval, e.g. ``-0.8 [-3.1, +1.6]``."""
    return f"{iv.value * 100:+.1f} [{iv.low * 100:+.1f}, {iv.high * 100:+.1f}]"


def main(argv: list[str] | None = None) -> int:
    """Run the bench (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["mbpp", "mmlu-templated"], help="one dataset (default: both)")
    ap.add_argument("--seeds", default="0", help="comma-separated split seeds (default 0)")
    ap.add_argument("--max-samples", type=int, default=None, help="subsample the MMLU-Pro samples (CPU)")
    ap.add_argument(
        "--routers",
        default=None,
        help="comma-separated label prefixes of the routers to run (the baseline always runs)",
    )
    ap.add_argument("--signal", action="store_true", help="also print the signal analysis (router_signal.py)")
    args = ap.parse_args(argv)
    datasets = [args.only] if args.only else ["mbpp", "mmlu-templated"]
    seeds = [int(s) for s in args.seeds.split(",")]
    for dataset in datasets:
        per_seed = []
        for seed in seeds:
            print(f"\n## {dataset}, seed {seed}", flush=True)
            only = args.routers.split(",") if args.routers else None
            per_seed.append(run(dataset, seed, args.max_samples, only))
        if len(seeds) > 1:
            print_summary(dataset, seeds, per_seed)
        if args.signal:
            from router_signal import signal_report  # a sibling module of this bench

            if dataset == "mbpp":
                signal_report(dataset, load("routerbench-mbpp"), None, ENCODER)
            else:
                signal_report(dataset, *templated_mmlu(args.max_samples, seeds[0]), ENCODER)
    return 0


def print_summary(dataset: str, seeds: list[int], per_seed: list[list[dict]]) -> None:
    """Across seeds, per router: median saving and its paired difference to the baseline, and how often 99% held.

    Medians, not means: when validation picks a cheap reference (on MBPP it is gpt-3.5 for some seeds), a
    router that buys gpt-4 "saves" -1000%, and one such seed would swamp a mean.
    """
    print(f"\n### {dataset}: summary over seeds {seeds} ({POINT_VALIDATION_CHOSEN})\n")
    refs = sorted({rows[0]["reference"] for rows in per_seed})
    print(f"References chosen on validation: {', '.join(refs)}\n")
    print(
        "| router | median saving | held 99% on test | median (saving - baseline) | seeds above baseline "
        "| risk-controlled: median saving, median - baseline, held |"
    )
    print("|---|---|---|---|---|---|")
    base = np.array([rows[0]["saving"].value or 0.0 for rows in per_seed])
    rc_base = np.array([rows[0]["rc_saving"].value or 0.0 for rows in per_seed])
    for label in [r["router"] for r in per_seed[0]]:
        mine = [next(r for r in rows if r["router"] == label) for rows in per_seed]
        sav = np.array([r["saving"].value or 0.0 for r in mine])
        rc = np.array([r["rc_saving"].value or 0.0 for r in mine])
        n = len(seeds)
        print(
            f"| {label} | {format_pct(float(np.median(sav)))} | {sum(r['held'] for r in mine)}/{n} | "
            f"{np.median(sav - base) * 100:+.1f} pts | {int((sav > base).sum())}/{n} | "
            f"{format_pct(float(np.median(rc)))}, {np.median(rc - rc_base) * 100:+.1f} pts, "
            f"{sum(r['rc_held'] for r in mine)}/{n} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
