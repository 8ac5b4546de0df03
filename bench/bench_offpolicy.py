"""Benchmark: are the off-policy estimates right? (issue 15's acceptance check; the in-process simulation).

What the issue asks: replay MMLU-Pro test prompts through ``routelab serve`` with an exported router at one
operating point and exploration epsilon 0.05, estimate from the log what a *different* operating point and a
*different* router would have cost and scored, and compare with their true values from replaying those policies
directly. ``bench/bench_offpolicy_proxy.py`` does that through the real proxy; this script simulates the logging
in-process with the same policy code the proxy uses (:func:`evals.production.propensity.greedy_choice` +
``explore``, the propensities of :func:`~evals.production.propensity.propensity_matrix`), so it can afford many
seeds. The served answer's cost and correctness are the recorded ones. Per seed:

* 5,000 requests drawn with replacement from the test split's prompts;
* logging policy = the ``category`` router (fitted on train) at an operating point chosen on validation
  (validation cost about 30% of the best single model's), epsilon 0.05 over all 14 models;
* targets = the same router at a nearby point (validation cost about 40%) and a far one (about 60%), and the
  ``classifier`` router (minilm-static) at its own point (about 45%);
* IPS, SNIPS and DR (reward model: the logged candidates' predicted quality and cost) with 95% intervals of both
  kinds (:mod:`evals.production.offpolicy`): ``design`` (the default: known-propensity variance) and
  ``bootstrap`` (percentile, 1,000 resamples over logged requests; kept to show why it is not the default);
* truth = the target replayed directly over every test prompt (the distribution the requests are drawn from).

Printed: per target, metric, interval kind and estimator, the truth, the mean estimate over seeds, the mean
absolute error, the mean interval width and the coverage of the 95% intervals over the seeds.

Run: ``nice python bench/bench_offpolicy.py [--seeds 20] [--requests 5000] [--data-dir D]``
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals import sources  # noqa: E402
from evals.formatting import format_interval, format_pct  # noqa: E402
from evals.production.offpolicy import OffPolicyEstimate, estimate  # noqa: E402
from evals.production.propensity import explore, greedy_choice, propensity_matrix  # noqa: E402
from evals.stats import resample_counts  # noqa: E402
from routers import Queries, make_router  # noqa: E402

EPSILON = 0.05
ESTIMATORS = ("ips", "snips", "dr")
METRICS = ("cost", "quality")
METHODS = ("design", "bootstrap")
#: Cost shares (of the best single model's validation cost) that pick the operating points.
LOGGING_SHARE, NEAR_SHARE, FAR_SHARE, CLASSIFIER_SHARE = 0.30, 0.40, 0.60, 0.45


def lam_at_cost_share(router, table, share: float) -> float:
    """The operating point whose mean cost on ``table`` is nearest ``share`` x the best single model's cost."""
    policy = router.policy(table)
    lams = policy.grid(200)
    cost, _, _ = policy.curve(lams)
    best = int(np.argmax(table.quality.mean(axis=0)))
    target = share * table.cost[:, best].mean()
    return float(lams[int(np.argmin(np.abs(cost - target)))])


def scores(router, table) -> tuple[np.ndarray, np.ndarray]:
    """(predicted quality, predicted cost) of a fitted router over a table's prompts, with categories."""
    q = Queries.from_table(table)
    return router.predict_quality(q), router.predict_cost(q)


@dataclass
class Scenario:
    """The test prompts, the logging policy and the targets, with the targets' true cost and accuracy."""

    split: object
    """The 60/20/20 split of MMLU-Pro (seed 0, stratified)."""
    routers: dict[str, object]
    """Fitted routers by name (``category``, ``classifier``)."""
    lams: dict[str, float]
    """Operating points: ``logging``, ``near``, ``far``, ``classifier``."""
    quality_hat: np.ndarray
    """The logging router's predicted quality on the test prompts, (n_test, m)."""
    cost_hat: np.ndarray
    """Its predicted cost, (n_test, m)."""
    targets: dict[str, np.ndarray]
    """Each target's model index per test prompt, (n_test,)."""
    truth: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per target, its true mean ``cost`` and ``quality`` over the test prompts."""

    @property
    def test(self):
        """The test split's outcome table."""
        return self.split.test  # type: ignore[attr-defined]


def build_scenario(data_dir: str | None = None) -> Scenario:
    """Fit the two routers on train, pick the operating points on validation, compute the truths on test."""
    table = sources.load("mmlu-pro", data_dir=data_dir)
    split = table.split((0.6, 0.2, 0.2), random_state=0, stratify=True)
    category = make_router({"name": "category"}).fit(split.train)
    classifier = make_router({"name": "classifier", "params": {"encoder": "minilm-static"}}).fit(split.train)
    lams = {
        "logging": lam_at_cost_share(category, split.validation, LOGGING_SHARE),
        "near": lam_at_cost_share(category, split.validation, NEAR_SHARE),
        "far": lam_at_cost_share(category, split.validation, FAR_SHARE),
        "classifier": lam_at_cost_share(classifier, split.validation, CLASSIFIER_SHARE),
    }
    qh_cat, ch_cat = scores(category, split.test)
    qh_clf, ch_clf = scores(classifier, split.test)
    targets = {
        f"category @ lam={lams['near']:.3g}": greedy_choice(qh_cat, ch_cat, lams["near"]),
        f"category @ lam={lams['far']:.3g}": greedy_choice(qh_cat, ch_cat, lams["far"]),
        f"classifier(minilm-static) @ lam={lams['classifier']:.3g}": greedy_choice(qh_clf, ch_clf,
                                                                                    lams["classifier"]),
    }
    sc = Scenario(split, {"category": category, "classifier": classifier}, lams, qh_cat, ch_cat, targets)
    rows = np.arange(len(qh_cat))
    Q, C = split.test.quality, split.test.cost
    sc.truth = {name: {"cost": float(C[rows, t].mean()), "quality": float(Q[rows, t].mean())}
                for name, t in targets.items()}
    return sc


@dataclass
class LoggedRun:
    """One logged run: which test prompt each request was, what the policy chose, and what it cost and scored."""

    prompt: np.ndarray
    """Test-prompt index per request, (n,)."""
    choice: np.ndarray
    """The logged (served) model index, (n,)."""
    propensity: np.ndarray
    """Its propensity under the logging policy, (n,)."""
    logging_probabilities: np.ndarray
    """The logging policy's probability of every model, (n, m)."""
    cost: np.ndarray
    """Observed cost per request, (n,)."""
    quality: np.ndarray
    """Observed correctness per request, (n,)."""
    quality_hat: np.ndarray
    """Logged predicted quality, (n, m)."""
    cost_hat: np.ndarray
    """Logged predicted cost, (n, m)."""


def simulate_log(sc: Scenario, seed: int, n_requests: int) -> LoggedRun:
    """Draw ``n_requests`` test prompts and serve them by the epsilon-greedy logging policy, as the proxy does."""
    test = sc.test
    n_test, m = test.quality.shape
    mu = propensity_matrix(sc.quality_hat, sc.cost_hat, sc.lams["logging"], EPSILON)
    greedy = greedy_choice(sc.quality_hat, sc.cost_hat, sc.lams["logging"])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_test, n_requests)
    chosen, _ = explore(greedy[idx], EPSILON, rng.random(n_requests), rng.random(n_requests), n_models=m)
    return LoggedRun(idx, chosen, mu[idx, chosen], mu[idx], test.cost[idx, chosen], test.quality[idx, chosen],
                     sc.quality_hat[idx], sc.cost_hat[idx])


def estimate_run(
    sc: Scenario, run: LoggedRun, method: str, *, seed: int, n_resamples: int
) -> dict[tuple[str, str], OffPolicyEstimate]:
    """Every target's cost and quality estimates from one logged run, with ``method`` intervals."""
    W = resample_counts(len(run.choice), n_resamples, seed) if method == "bootstrap" else None
    out = {}
    for name, t in sc.targets.items():
        for metric in METRICS:
            observed = run.cost if metric == "cost" else run.quality
            predicted = run.cost_hat if metric == "cost" else run.quality_hat
            out[(name, metric)] = estimate(run.choice, run.propensity, observed, t[run.prompt], predicted,
                                           logging_probabilities=run.logging_probabilities, interval=method,
                                           resamples=W, reward_range=(0.0, 1.0 if metric == "quality" else None))
    return out


def show(metric: str, value: float, low: float | None = None, high: float | None = None) -> str:
    """A cost as $ per 1k requests, a quality as a percentage, with its interval when given."""
    if metric == "quality":
        return format_interval(value, low, high, pct=True)
    k = 1000.0
    return "$" + format_interval(value * k, None if low is None else low * k, None if high is None else high * k)


@dataclass
class Tally:
    """Estimates collected over seeds: ``rows[(target, metric, method, estimator)]`` = list of (value, lo, hi)."""

    rows: dict[tuple[str, str, str, str], list[tuple[float, float, float]]] = field(default_factory=dict)
    ess: dict[str, list[float]] = field(default_factory=dict)

    def add(self, method: str, estimates: dict[tuple[str, str], OffPolicyEstimate]) -> None:
        """Record one run's estimates."""
        for (name, metric), est in estimates.items():
            for e in ESTIMATORS:
                iv = getattr(est, e)
                lo = np.nan if iv.low is None else iv.low
                hi = np.nan if iv.high is None else iv.high
                self.rows.setdefault((name, metric, method, e), []).append((iv.value, lo, hi))
            if metric == "quality" and method == self.rows_method():  # once per run: the weights' ESS
                self.ess.setdefault(name, []).append(est.effective_n)

    def rows_method(self) -> str:
        """The first interval kind recorded (the one whose table rows come first)."""
        return next(iter(self.rows))[2]

    def coverage(self, key: tuple[str, str, str, str], truth: float) -> float:
        """Share of runs whose interval holds the truth (an unbounded side never does)."""
        arr = np.asarray(self.rows[key], dtype=float)
        return float(np.mean((arr[:, 1] <= truth) & (truth <= arr[:, 2])))

    def print_table(self, truth: dict[str, dict[str, float]], methods: tuple[str, ...], n_requests: int) -> float:
        """Print the coverage table; returns the worst DR coverage of the first method."""
        header = (f"{'target':<44} {'metric':<8} {'interval':<9} {'est.':<6} {'truth':>9} {'mean est.':>10} "
                  f"{'mean |err|':>10} {'mean width':>10} {'coverage':>9}")
        print(header)
        print("-" * len(header))
        worst = 1.0
        for name in truth:
            for metric in METRICS:
                scale = 1000.0 if metric == "cost" else 100.0  # $ per 1k requests, or accuracy points
                tv = truth[name][metric]
                for method in methods:
                    for e in ESTIMATORS:
                        key = (name, metric, method, e)
                        arr = np.asarray(self.rows[key], dtype=float)
                        cov = self.coverage(key, tv)
                        if e == "dr" and method == methods[0]:
                            worst = min(worst, cov)
                        print(f"{name:<44} {metric:<8} {method:<9} {e.upper():<6} {tv * scale:>9.3f} "
                              f"{np.mean(arr[:, 0]) * scale:>10.3f} {np.mean(np.abs(arr[:, 0] - tv)) * scale:>10.3f} "
                              f"{np.nanmean(arr[:, 2] - arr[:, 1]) * scale:>10.3f} {cov:>9.0%}")
            if name in self.ess:
                print(f"{'':<44} (Kish effective sample size of the weights: mean {np.mean(self.ess[name]):,.0f} "
                      f"of {n_requests:,})")
        return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="interval kinds to compute (bootstrap is the slow one)")
    args = ap.parse_args()
    methods = tuple(args.methods)
    t0 = time.perf_counter()
    print("IN-PROCESS SIMULATION of the proxy's logging: the epsilon-greedy serving policy is computed with the")
    print("proxy's own policy code (evals.production.propensity); answers' cost and correctness are MMLU-Pro's")
    print("recorded ones. bench/bench_offpolicy_proxy.py runs the same check through routelab serve.\n")

    sc = build_scenario(args.data_dir)
    test = sc.test
    n_test, m = test.quality.shape
    rows = np.arange(n_test)
    logging_greedy = greedy_choice(sc.quality_hat, sc.cost_hat, sc.lams["logging"])
    print(f"test prompts: {n_test:,}; {m} models; requests per seed: {args.requests:,}; seeds: {args.seeds}; "
          f"95% intervals: design (known-propensity variance) and percentile bootstrap ({args.resamples:,} "
          f"resamples)")
    print(f"logging policy: category @ lam={sc.lams['logging']:.3g}, epsilon {EPSILON}: true cost/1k "
          f"${1000 * test.cost[rows, logging_greedy].mean():.3f} (greedy part), accuracy "
          f"{format_pct(test.quality[rows, logging_greedy].mean())}")
    for name, t in sc.targets.items():
        print(f"target {name}: true cost/1k ${1000 * sc.truth[name]['cost']:.3f}, accuracy "
              f"{format_pct(sc.truth[name]['quality'])}; agrees with the logging router on "
              f"{format_pct((t == logging_greedy).mean())}")
    print(f"(setup {time.perf_counter() - t0:.0f} s)\n")

    tally = Tally()
    first_seed_lines = []
    for seed in range(args.seeds):
        run = simulate_log(sc, seed, args.requests)
        for method in methods:
            ests = estimate_run(sc, run, method, seed=seed, n_resamples=args.resamples)
            tally.add(method, ests)
            if seed == 0 and method == methods[0]:
                for (name, metric), est in ests.items():
                    dr, tv = est.dr, sc.truth[name][metric]
                    inside = dr.low is not None and dr.high is not None and dr.low <= tv <= dr.high
                    first_seed_lines.append(f"  {name:<44} {metric:<8} DR {show(metric, dr.value, dr.low, dr.high)}"
                                            f"   truth {show(metric, tv)}   {'inside' if inside else 'OUTSIDE'}")
    print(f"seed 0 (one logged run), DR estimate with its 95% {methods[0]} interval against the truth:")
    print("\n".join(first_seed_lines))
    print()
    worst = tally.print_table(sc.truth, methods, args.requests)
    print(f"\nDR {methods[0]}-interval coverage over {args.seeds} seeds: worst {worst:.0%} over targets and metrics "
          f"(the issue's bar: at least 90%)")
    print("cost in $ per 1k requests, quality in accuracy points; coverage = share of seeds whose 95% interval "
          "holds the truth")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
