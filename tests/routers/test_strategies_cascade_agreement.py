"""The cascade on answers without option letters: normalised agreement (code), and the prompt stacked in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from routers.strategies.cascade import CascadeRouter
from routers.strategies.cascade_stacked import StackedCascadeRouter

COST = {"cheap": 0.001, "mid": 0.002, "big": 0.02}
# The answers have no hedging and mid's two have the same length, so only their *content* tells them apart.
CHEAP = (
    "Here it is:\n```python\ndef solve(items, k):\n    # keep the big ones\n    return [v for v in items if v > k]\n```"
)
SAME = (
    'Sure.\n```python\ndef keep_above(xs, limit):\n    "Values above limit."\n'
    "    return [x for x in xs if x > limit]\n```"
)
OTHER = SAME.replace("x > limit", "x < limit")


def _code_table(n: int, prefix: str, seed: int) -> OutcomeTable:
    """cheap is never right; mid is right exactly when its code is cheap's up to names; big is always right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sid = f"{prefix}{i:03d}"
        mid_right = bool(rng.random() < 0.5)
        answers = {"cheap": (CHEAP, 0.0), "mid": (SAME if mid_right else OTHER, float(mid_right)), "big": (CHEAP, 1.0)}
        for model, (text, score) in answers.items():
            rows.append(
                dict(
                    sample_id=sid,
                    category="code",
                    prompt=f"task {sid}",
                    model=model,
                    score=score,
                    cost_usd=COST[model],
                    response=text,
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


def _stopping_point(policy, wanted_stop: np.ndarray) -> float | None:
    """An operating point that stops each sample exactly at ``wanted_stop``, or None when there is none."""
    return next((float(lam) for lam in policy.grid(200) if np.array_equal(policy.stops(float(lam)), wanted_stop)), None)


def test_normalised_agreement_reads_code_answers_that_exact_agreement_cannot() -> None:
    train, test = _code_table(160, "t", 0), _code_table(80, "s", 1)
    mid_right = test.quality[:, list(test.models).index("mid")] == 1.0
    wanted = np.where(mid_right, 1, 2)  # trust mid when it agrees with cheap, otherwise ask big
    chain = ["cheap", "mid", "big"]
    normalised = CascadeRouter(models=chain).fit(train)
    exact = CascadeRouter(models=chain, agreement="exact").fit(train)
    assert normalised.agreement == "normalised"  # the default
    lam = _stopping_point(normalised.policy(test), wanted)
    assert lam is not None
    assert _stopping_point(exact.policy(test), wanted) is None
    # Live, with the same answers, the cascade stops where the replay does.
    for i in (int(np.argmax(mid_right)), int(np.argmin(mid_right))):
        texts = dict(zip(test.models, test.wide_text("response")[i], strict=True))
        trace = normalised.route_with_answers(test.prompts[i], lambda m, t=texts: t[m], lam, category="code")
        assert trace.model == ("mid" if mid_right[i] else "big")


def test_unknown_agreement_mode_is_refused() -> None:
    with pytest.raises(Exception, match="agreement"):
        CascadeRouter(agreement="fuzzy").fit(_code_table(20, "t", 0))


def _prompt_table(n: int, prefix: str, seed: int) -> OutcomeTable:
    """cheap is right exactly on "easy" prompts; its answers look the same either way; big is always right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sid = f"{prefix}{i:03d}"
        easy = bool(rng.random() < 0.5)
        prompt = f"{'easy: add two small numbers' if easy else 'hard proof about prime gaps'} {sid}"  # same length
        for model, score in (("cheap", float(easy)), ("big", 1.0)):
            rows.append(
                dict(
                    sample_id=sid,
                    category="maths",
                    prompt=prompt,
                    model=model,
                    score=score,
                    cost_usd=COST[model],
                    response="The answer is (A).",
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


def test_stacked_cascade_reads_the_prompt_where_the_answers_say_nothing() -> None:
    train, test = _prompt_table(120, "t", 0), _prompt_table(60, "s", 1)
    easy = test.quality[:, list(test.models).index("cheap")] == 1.0
    wanted = np.where(easy, 0, 1)
    params = dict(models=["cheap", "big"], encoder="hash-bow-256", folds=3)
    stacked = StackedCascadeRouter(**params).fit(train)
    plain = CascadeRouter(models=["cheap", "big"]).fit(train)
    lam = _stopping_point(stacked.policy(test), wanted)
    assert lam is not None
    assert _stopping_point(plain.policy(test), wanted) is None
    assert not hasattr(stacked, "_train_prompt_quality")  # the out-of-fold predictions are dropped after fit
    # Live routing reads the same prompt router as the replay.
    i = int(np.argmin(easy))
    trace = stacked.route_with_answers(test.prompts[i], lambda m: "The answer is (A).", lam, category="maths")
    assert trace.model == "big" and [m for m, _ in trace.calls] == ["cheap", "big"]


def test_stacked_cascade_needs_enough_samples_for_its_folds() -> None:
    with pytest.raises(ConfigError, match="too few for 5 folds"):
        StackedCascadeRouter(encoder="hash-bow-256").fit(_prompt_table(8, "t", 0))


def test_on_letter_answers_normalised_and_exact_agreement_decide_alike() -> None:
    """Multiple-choice answers keep the cascade's letter rule, so the default changes nothing on them."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(150):
        truth = "ABCD"[i % 4]
        for model, p_right in (("cheap", 0.5), ("mid", 0.7), ("big", 0.9)):
            right = bool(rng.random() < p_right)
            letter = truth if right else "ABCD"[(i + 1 + int(rng.integers(3))) % 4]
            text = f"Thinking about option {letter}{'.' * int(rng.integers(5))} The answer is ({letter})."
            rows.append(
                dict(
                    sample_id=f"q{i:03d}",
                    category="mcq",
                    prompt=f"question {i}",
                    model=model,
                    score=float(right),
                    cost_usd=COST[model],
                    response=text,
                )
            )
    table = OutcomeTable(pd.DataFrame(rows))
    chain = ["cheap", "mid", "big"]
    normalised = CascadeRouter(models=chain).fit(table).policy(table)
    exact = CascadeRouter(models=chain, agreement="exact").fit(table).policy(table)
    np.testing.assert_array_equal(normalised.thresholds, exact.thresholds)
