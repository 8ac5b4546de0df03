"""Propensities of the serving policy and off-policy estimates (issue 15, items 3 and 5): hand-computed cases,
the runtime's decision rule, unbiasedness on synthetic logs, and interval coverage when the weights are heavy."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from evals.production.log_reader import read_log, segment_name
from evals.production.offpolicy import LoggedDecisions, estimate, estimate_policy, target_probabilities
from evals.production.propensity import explore, greedy_choice, propensity_matrix, propensity_of
from evals.production.records import Candidate, DecisionRecord, prompt_hash
from routers.runtime import decide  # tests may read the runtime: the core re-implements its rule

# ---------------------------------------------------------------------------------------------- propensity


def test_greedy_choice_is_the_runtimes_rule_ties_included():
    rng = np.random.default_rng(0)
    for lam in (0.0, 0.5, 1.0, 3.0):
        # Coarse values so many utilities tie exactly, and costs tie too.
        q = rng.integers(0, 4, size=(500, 5)) / 4
        c = rng.integers(0, 3, size=(500, 5)) / 4
        assert (greedy_choice(q, c, lam) == decide(q, c, lam)).all()
        cost_row = rng.integers(0, 3, size=5) / 4
        assert (greedy_choice(q, cost_row, lam) == decide(q, cost_row, lam)).all()


def test_ties_go_to_the_cheapest_then_the_better_then_the_first():
    q = np.array([[0.5, 0.5, 0.7], [0.5, 0.5, 0.5]])
    c = np.array([[0.2, 0.1, 0.3], [0.1, 0.1, 0.1]])
    # Row 0 at lam=1: utilities 0.3, 0.4, 0.4 -> tie between 1 and 2; 1 is cheaper.
    # Row 1: all tied, equally cheap and equally good -> the first.
    assert greedy_choice(q, c, 1.0).tolist() == [1, 0]


def test_ineligible_models_are_never_chosen():
    q = np.array([[0.9, 0.5, 0.1]])
    c = np.zeros(3)
    assert greedy_choice(q, c, 1.0).tolist() == [0]
    assert greedy_choice(q, c, 1.0, eligible=[False, True, True]).tolist() == [1]
    with pytest.raises(ValueError, match="request 0 has no eligible model"):
        greedy_choice(q, c, 1.0, eligible=[False, False, False])


def test_propensity_matrix_by_hand():
    q = np.array([[0.9, 0.5, 0.1, 0.3], [0.1, 0.2, 0.3, 0.4]])
    c = np.zeros(4)
    probs = propensity_matrix(q, c, 1.0, 0.2, eligible=[[True, True, True, True], [True, False, True, True]])
    # Row 0: greedy 0, 4 eligible: 0.8 + 0.05, others 0.05. Row 1: greedy 3, 3 eligible: 0.8 + 0.2/3.
    np.testing.assert_allclose(probs[0], [0.85, 0.05, 0.05, 0.05])
    np.testing.assert_allclose(probs[1], [0.2 / 3, 0.0, 0.2 / 3, 0.8 + 0.2 / 3])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(propensity_of([0, 2], q, c, 1.0, 0.2), [0.85, 0.05])
    assert (propensity_matrix(q, c, 1.0, 0.0) == np.array([[1, 0, 0, 0], [0, 0, 0, 1]])).all()
    with pytest.raises(ValueError, match="epsilon"):
        propensity_matrix(q, c, 1.0, 1.5)
    with pytest.raises(ValueError, match="model indices"):
        propensity_of([0, 9], q, c, 1.0, 0.2)
    with pytest.raises(ValueError, match="operating point"):
        greedy_choice(q, c, -1.0)


def test_explore_draws_models_at_their_propensities():
    rng = np.random.default_rng(1)
    n = 200_000
    eligible = np.array([True, False, True, True])
    greedy = np.full(n, 2)
    chosen, explored = explore(greedy, 0.3, rng.random(n), rng.random(n), eligible=eligible)
    freq = np.bincount(chosen, minlength=4) / n
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.8, 0.1], atol=0.005)
    assert abs(explored.mean() - 0.3) < 0.005
    # No exploration: the greedy choice, always.
    chosen, explored = explore(greedy[:10], 0.0, np.zeros(10), np.zeros(10), n_models=4)
    assert (chosen == 2).all() and not explored.any()


# ---------------------------------------------------------------------------------------------- estimators
# A tiny log by hand: 4 requests, 3 models.
CHOICE = np.array([0, 1, 0, 2])
PROP = np.array([0.5, 0.25, 0.5, 0.25])
REWARD = np.array([1.0, 0.0, 1.0, 1.0])
TARGET = np.array([0, 0, 2, 2])
RHAT = np.array([[0.8, 0.5, 0.2], [0.6, 0.4, 0.3], [0.9, 0.1, 0.5], [0.2, 0.3, 0.7]])


def test_ips_snips_dr_by_hand():
    est = estimate(CHOICE, PROP, REWARD, TARGET, RHAT, n_resamples=200)
    # weights: [1/0.5, 0, 0, 1/0.25] = [2, 0, 0, 4]; w * r = [2, 0, 0, 4]
    assert est.ips.value == pytest.approx(6 / 4)
    assert est.snips.value == pytest.approx(6 / 6)
    # DR terms: 0.8 + 2 (1 - 0.8) = 1.2; 0.6; 0.5; 0.7 + 4 (1 - 0.7) = 1.9 -> mean 1.05
    assert est.dr.value == pytest.approx((1.2 + 0.6 + 0.5 + 1.9) / 4)
    assert est.effective_n == pytest.approx(36 / 20) and est.max_weight == 4.0
    assert est.n == 4 and est.n_dropped == 0 and est.unsupported is None


def test_a_probability_target_mixes_the_deterministic_ones():
    pi = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.5]])
    est = estimate(CHOICE, PROP, REWARD, pi, RHAT, n_resamples=50)
    w = np.array([0.5 / 0.5, 0.0, 0.0, 0.5 / 0.25])
    assert est.ips.value == pytest.approx((w * REWARD).mean())
    assert est.snips.value == pytest.approx((w * REWARD).sum() / w.sum())
    direct = np.array([0.5 * 0.8 + 0.5 * 0.2, 0.6, 0.5, 0.5 * 0.3 + 0.5 * 0.7])
    assert est.dr.value == pytest.approx((direct + w * (REWARD - RHAT[np.arange(4), CHOICE])).mean())


def test_bootstrap_draws_are_the_resampled_estimates():
    # Two resamples given by hand: the full log, and requests 0 and 2 twice each (where the target puts no weight
    # on request 2's logged model: SNIPS is undefined there and counts as the worst case).
    W = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 2.0, 0.0]])
    est = estimate(CHOICE, PROP, REWARD, TARGET, RHAT, resamples=W, level=0.5)
    # IPS draws: 6/4 = 1.5 and (2*2)/4 = 1.0 -> the 25%/75% order statistics are 1.0 and 1.5
    assert (est.ips.low, est.ips.high) == (1.0, 1.5)
    # SNIPS draws: 1.0 and 4/4 = 1.0
    assert (est.snips.low, est.snips.high) == (1.0, 1.0)
    # DR draws: 1.05 and (2*1.2 + 2*0.5)/4 = 0.85
    assert est.dr.low == pytest.approx(0.85) and est.dr.high == pytest.approx(1.05)
    W0 = np.array([[0.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    est = estimate(CHOICE, PROP, REWARD, TARGET, resamples=W0, level=0.5)
    assert est.snips.low is None and est.snips.high == 1.0 and est.dr is None


def test_unknown_rewards_are_left_out_and_counted():
    reward = REWARD.copy()
    reward[1] = np.nan
    est = estimate(CHOICE, PROP, reward, TARGET, RHAT, n_resamples=50)
    keep = [0, 2, 3]
    ref = estimate(CHOICE[keep], PROP[keep], REWARD[keep], TARGET[keep], RHAT[keep], n_resamples=50)
    assert est.n == 3 and est.n_dropped == 1
    assert est.ips.value == ref.ips.value and est.dr.value == ref.dr.value


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"propensity must be in \(0, 1\]"):
        estimate(CHOICE, [0.5, 0.0, 0.5, 0.25], REWARD, TARGET)
    with pytest.raises(ValueError, match="one entry per request"):
        estimate(CHOICE, PROP[:3], REWARD, TARGET)
    with pytest.raises(ValueError, match="no logged request has a known reward"):
        estimate(CHOICE, PROP, np.full(4, np.nan), TARGET)
    with pytest.raises(ValueError, match="sum to 1"):
        target_probabilities(np.full((4, 3), 0.5), 4, 3)
    with pytest.raises(ValueError, match="integers"):
        target_probabilities(np.array([0.0, 1.0, 2.0, 0.0]), 4, 3)
    with pytest.raises(ValueError, match="outside"):
        target_probabilities(np.array([0, 1, 3, 0]), 4, 3)
    with pytest.raises(ValueError, match="predicted rewards have shape"):
        estimate(CHOICE, PROP, REWARD, target_probabilities(TARGET, 4, 3), RHAT[:, :2])


def test_design_interval_by_hand_counts_the_variance_of_models_the_log_never_shows():
    # Model 2 is never logged, but the target picks it on requests 2 and 3: their terms are all zero in this log,
    # yet under the logging policy each would be 1/0.25 = 4 times the reward with probability 0.25.
    choice, prop = np.array([0, 1, 0, 1]), np.array([0.5, 0.25, 0.5, 0.25])
    mu = np.tile([0.5, 0.25, 0.25], (4, 1))
    est = estimate(choice, prop, REWARD, TARGET, logging_probabilities=mu)
    assert est.interval_method == "design"
    # IPS terms w r = [2, 0, 0, 0] -> 0.5; their plug-in variance is 0.75. Design: E[r^2] per logged model is
    # 1 (model 0), 0.5 (model 1) and, unseen, the largest: 1 (model 2); E[term^2] = mean(2*1, 2*1, 4*1, 4*1) = 3,
    # so the variance is 3 - 0.5^2 = 2.75 (larger than the plug-in: it wins).
    half = NormalDist().inv_cdf(0.975) * np.sqrt(2.75 / 4)
    assert est.ips.value == pytest.approx(0.5)
    assert (est.ips.low, est.ips.high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    # Bootstrap intervals of the same log see only the one nonzero term.
    boot = estimate(choice, prop, REWARD, TARGET, logging_probabilities=mu, interval="bootstrap", n_resamples=500)
    assert boot.interval_method == "bootstrap"
    assert boot.ips.high - boot.ips.low < est.ips.high - est.ips.low


def test_design_intervals_need_the_logging_probabilities():
    with pytest.raises(ValueError, match="design intervals need logging_probabilities"):
        estimate(CHOICE, PROP, REWARD, TARGET, interval="design")
    with pytest.raises(ValueError, match="interval must be one of"):
        estimate(CHOICE, PROP, REWARD, TARGET, interval="wald")
    with pytest.raises(ValueError, match="logging probabilities have shape"):
        estimate(CHOICE, PROP, REWARD, TARGET, logging_probabilities=np.ones((3, 3)) / 3)
    assert estimate(CHOICE, PROP, REWARD, TARGET, n_resamples=10).interval_method == "bootstrap"


def test_interval_ends_are_clipped_to_the_possible_range_of_the_reward():
    mu = np.tile([0.5, 0.25, 0.25], (4, 1))
    wide = estimate(CHOICE, PROP, REWARD, TARGET, RHAT, logging_probabilities=mu)
    assert wide.ips.low < 0 and wide.ips.high > 1  # four requests, weights of 4: the interval is very wide
    est = estimate(CHOICE, PROP, REWARD, TARGET, RHAT, logging_probabilities=mu, reward_range=(0.0, 1.0))
    for name in ("ips", "snips", "dr"):
        iv, raw = getattr(est, name), getattr(wide, name)
        assert iv.value == raw.value  # the estimates themselves are untouched
        assert (iv.low, iv.high) == (max(raw.low, 0.0), min(raw.high, 1.0))
    assert est.ips.value > est.ips.high  # IPS is 1.5 for a reward in [0, 1]: the interval shows it is off


def _heavy_log(seed: int, n: int = 2000, m: int = 10, epsilon: float = 0.05):
    """Like the proxy's: epsilon 0.05 over 10 models (weights of 200), a target that disagrees on ~17%."""
    pop = np.random.default_rng(99)
    true_q = pop.uniform(0.2, 0.9, size=(n, m))
    qhat = np.clip(true_q + pop.normal(0, 0.1, size=(n, m)), 0, 1)
    cost = np.linspace(0.05, 1.0, m)
    mu = propensity_matrix(qhat, cost, 1.0, epsilon)
    target = greedy_choice(qhat, cost, 1.6)
    rng = np.random.default_rng(seed)
    choice, _ = explore(greedy_choice(qhat, cost, 1.0), epsilon, rng.random(n), rng.random(n), n_models=m)
    reward = (rng.random(n) < true_q[np.arange(n), choice]).astype(float)
    return choice, mu[np.arange(n), choice], reward, target, qhat, mu, true_q[np.arange(n), target].mean()


def test_design_intervals_cover_where_the_bootstrap_does_not():
    # With heavy weights, only a couple of logged requests per run carry the target's disagreeing part: the
    # bootstrap sees too little spread and under-covers; the known-propensity variance does not.
    seeds = 100
    covered = {(kind, e): 0 for kind in ("design", "bootstrap") for e in ("ips", "snips", "dr")}
    for seed in range(seeds):
        choice, prop, reward, target, qhat, mu, truth = _heavy_log(seed)
        for kind in ("design", "bootstrap"):
            est = estimate(choice, prop, reward, target, qhat, logging_probabilities=mu, interval=kind,
                           n_resamples=100, seed=seed)
            for e in ("ips", "snips", "dr"):
                iv = getattr(est, e)
                covered[(kind, e)] += iv.low is not None and iv.high is not None and iv.low <= truth <= iv.high
    rate = {k: v / seeds for k, v in covered.items()}
    for e in ("ips", "snips", "dr"):
        assert rate[("design", e)] >= 0.93, rate
    assert rate[("bootstrap", "dr")] <= 0.88 and rate[("bootstrap", "ips")] <= 0.8, rate


def _synthetic_log(seed: int, n: int = 400, epsilon: float = 0.2):
    """A fixed population of 400 requests x 3 models; each seed logs one epsilon-greedy pass over it."""
    pop = np.random.default_rng(12345)
    true_q = pop.uniform(0.1, 0.9, size=(n, 3))
    qhat = np.clip(true_q + pop.normal(0, 0.15, size=(n, 3)), 0, 1)  # an imperfect reward model
    cost = np.array([0.1, 0.3, 0.6])
    mu = propensity_matrix(qhat, cost, 1.0, epsilon)
    rng = np.random.default_rng(seed)
    greedy = greedy_choice(qhat, cost, 1.0)
    choice, _ = explore(greedy, epsilon, rng.random(n), rng.random(n), n_models=3)
    reward = (rng.random(n) < true_q[np.arange(n), choice]).astype(float)
    target = greedy_choice(qhat, cost, 3.0)  # a different operating point
    truth = true_q[np.arange(n), target].mean()
    return choice, mu[np.arange(n), choice], reward, target, qhat, mu, truth


def test_estimates_are_unbiased_over_many_logs():
    ips, snips, dr, covered = [], [], [], 0
    seeds = 300
    for seed in range(seeds):
        choice, prop, reward, target, qhat, mu, truth = _synthetic_log(seed)
        est = estimate(choice, prop, reward, target, qhat, logging_probabilities=mu, n_resamples=200, seed=seed)
        ips.append(est.ips.value)
        snips.append(est.snips.value)
        dr.append(est.dr.value)
        covered += est.dr.low <= truth <= est.dr.high
        assert est.unsupported == 0.0  # epsilon > 0: the target never picks an unseen model
    for name, values in (("IPS", ips), ("DR", dr)):
        v = np.asarray(values)
        se = v.std(ddof=1) / np.sqrt(seeds)
        assert abs(v.mean() - truth) < 4 * se, f"{name}: mean {v.mean():.4f} vs truth {truth:.4f} (se {se:.4f})"
    # SNIPS is consistent, not unbiased: close at n = 400.
    assert abs(np.mean(snips) - truth) < 0.01
    # DR is the least variable of the unbiased two, and its 95% interval covers the truth about 95% of the time.
    assert np.std(dr) < np.std(ips)
    assert 0.88 <= covered / seeds <= 0.99


def test_without_exploration_the_unsupported_share_is_reported():
    choice, _, reward, target, qhat, _, _ = _synthetic_log(0, epsilon=0.0)
    mu = propensity_matrix(qhat, np.array([0.1, 0.3, 0.6]), 1.0, 0.0)
    est = estimate(choice, np.ones(len(choice)), reward, target, qhat, logging_probabilities=mu, n_resamples=20)
    assert est.unsupported == pytest.approx((target != choice).mean())
    assert est.unsupported > 0.1


# ---------------------------------------------------------------------------------------------- from a log
def _records(choice, prop, reward, qhat, *, lam=1.0, epsilon=0.2):
    models = ("cheap", "mid", "strong")
    cost = (0.1, 0.3, 0.6)
    recs = []
    for i, a in enumerate(choice):
        recs.append(DecisionRecord(
            request_id=f"r{i}", time=1_764_650_000.0 + i, route="router", prompt_hash=prompt_hash(str(i)),
            status=200, latency_s=0.1, chosen=models[a],
            candidates=tuple(Candidate(models[j], float(qhat[i, j]), cost[j]) for j in range(3)),
            propensity=float(prop[i]), lam=lam, epsilon=epsilon, answered_by=models[a], reason="routed",
            cost_usd=cost[a] + 0.01 * (reward[i] > 0), arm="router",
        ))
    return recs


def test_estimates_from_a_decision_log_on_disk(tmp_path):
    choice, prop, reward, target, qhat, mu, _ = _synthetic_log(7)
    recs = _records(choice, prop, reward, qhat)
    extra = [
        DecisionRecord(request_id="pt", time=1_764_650_000.0, route="gpt-4o", prompt_hash=prompt_hash("x"),
                       status=200, latency_s=0.1, answered_by="gpt-4o", reason="passthrough"),
        # A record whose propensity does not match its own candidates, lam and epsilon: not trusted.
        DecisionRecord(**{**recs[0].__dict__, "request_id": "liar", "propensity": 0.5}),
        DecisionRecord(**{**recs[1].__dict__, "request_id": "ctl", "arm": "control"}),
    ]
    path = tmp_path / segment_name(1_764_650_000.0, 0)
    path.write_text("".join(r.to_json() + "\n" for r in recs[:200] + extra + recs[200:]), encoding="utf-8")
    read = read_log(tmp_path)
    assert read.n_skipped == 0
    grades = {f"r{i}": float(reward[i]) for i in range(len(reward)) if i % 2 == 0}  # half the requests graded
    logged, skipped = LoggedDecisions.from_records(read.records, quality=grades)
    assert skipped == {"not_routed": 1, "propensity_mismatch": 1, "control_arm": 1}
    assert len(logged) == len(choice) and logged.models == ("cheap", "mid", "strong")
    np.testing.assert_allclose(logged.logging_probabilities, mu)
    out = estimate_policy(logged, target, n_resamples=100)
    assert out["quality"].n == len(grades) and out["quality"].n_dropped == len(choice) - len(grades)
    keep = np.arange(len(choice)) % 2 == 0
    direct = estimate(choice[keep], prop[keep], reward[keep], target[keep], qhat[keep], n_resamples=100)
    assert out["quality"].dr.value == pytest.approx(direct.dr.value)
    cost = np.array([0.1, 0.3, 0.6])[choice] + 0.01 * (reward > 0)
    assert out["cost"].ips.value == pytest.approx(
        estimate(choice, prop, cost, target, n_resamples=10).ips.value
    )
    with pytest.raises(ValueError, match="no routed record"):
        LoggedDecisions.from_records(extra[:1])
