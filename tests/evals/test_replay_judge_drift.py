"""The replay server's judge (verdicts from recorded correctness) and drift switch (staged quality drift)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.graders._base import GradeInput
from evals.graders.judge import JudgePairwise
from evals.outcomes import OutcomeTable
from evals.serving import DRIFT_PREFIX, ReplayServer
from evals.serving.drift import parse_drift_flag
from evals.serving.replay_judge import parse_pairwise_request


def _table() -> OutcomeTable:
    """cheap right on "easy" only, big right everywhere; two categories, four prompts each."""
    rows = []
    for cat in ("easy", "hard"):
        for i in range(4):
            for model in ("cheap", "big"):
                right = model == "big" or cat == "easy"
                rows.append(dict(sample_id=f"{cat}-{i}", category=cat, prompt=f"{cat} q{i}", model=model,
                                 response=f"{model} answers {cat} q{i}", score=float(right), cost_usd=0.0))
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def server():
    with ReplayServer(_table()) as srv:
        yield srv


_HTTP = httpx.Client(timeout=10)


def _answer(url: str, model: str, prompt: str) -> str:
    r = _HTTP.post(f"{url}/chat/completions",
                   json={"model": model, "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def _judge_call(url: str, model: str = "replay-judge"):
    async def judge(messages):
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"{url}/chat/completions", json={"model": model, "messages": messages})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

    return judge


def _grade(url: str, prompt: str, answer: str, reference: str) -> float | None:
    item = GradeInput(prompt=prompt, response=answer, baseline=reference)
    return asyncio.run(JudgePairwise(baseline="big").agrade(item, _judge_call(url))).score


def test_judge_verdicts_follow_recorded_correctness_in_both_orders(server):
    url = server.base_url
    # hard: cheap wrong, big right -> the candidate loses in both orders (0); swapped roles -> wins (1).
    assert _grade(url, "hard q0", "cheap answers hard q0", "big answers hard q0") == 0.0
    assert _grade(url, "hard q0", "big answers hard q0", "cheap answers hard q0") == 1.0
    # easy: both right -> a tie in both orders.
    assert _grade(url, "easy q1", "cheap answers easy q1", "big answers easy q1") == 0.5
    # An answer that is not a recorded one: the judge gives no verdict; the grader records it as unparsable.
    assert _grade(url, "easy q1", "something else entirely", "big answers easy q1") is None
    assert server.stats()["judged"] == 8  # two calls (both orders) per grade


def test_judge_reply_format_and_refusals(server):
    g = JudgePairwise(baseline="big")
    msgs = g.messages(GradeInput(prompt="hard q2", response="big answers hard q2", baseline="cheap answers hard q2"))
    pair = parse_pairwise_request(msgs[1]["content"])
    assert pair is not None and pair.question == "hard q2" and pair.answer_b == "cheap answers hard q2"
    r = _HTTP.post(f"{server.base_url}/chat/completions", json={"model": "replay-judge", "messages": msgs})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].endswith("[[A]]")
    assert r.json()["usage"]["completion_tokens"] > 0
    bad = _HTTP.post(f"{server.base_url}/chat/completions",
                     json={"model": "replay-judge", "messages": [{"role": "user", "content": "rate this"}]})
    assert bad.status_code == 400 and "pairwise judge" in bad.json()["error"]["message"]


def test_drift_makes_one_models_answers_wrong_for_one_category_then_stops(server):
    url = server.base_url
    before = _answer(url, "cheap", "easy q0")
    assert before == "cheap answers easy q0"
    r = _HTTP.post(url.replace("/v1", "/_drift"), json={"model": "cheap", "category": "easy"})
    assert r.status_code == 200 and r.json()["drifts"][0]["model"] == "cheap"
    wrong = _answer(url, "cheap", "easy q0")
    assert wrong.startswith(DRIFT_PREFIX)  # every other answer to an easy prompt is right: a labelled wrong one
    # The judge knows the drifted answer is wrong: it loses against the reference.
    assert _grade(url, "easy q0", wrong, "big answers easy q0") == 0.0
    # Other models and other categories are untouched.
    assert _answer(url, "big", "easy q0") == "big answers easy q0"
    assert _answer(url, "cheap", "hard q1") == "cheap answers hard q1"
    assert server.stats()["drifted"] >= 1
    stop = _HTTP.request("DELETE", url.replace("/v1", "/_drift"), json={"model": "cheap"})
    assert stop.status_code == 200 and stop.json()["drifts"][0]["stop"] is not None
    assert _answer(url, "cheap", "easy q0") == before


def test_drift_serves_another_models_wrong_recorded_answer_when_there_is_one(server):
    server.start_drift("big", "hard")
    try:
        assert _answer(server.base_url, "big", "hard q3") == "cheap answers hard q3"
    finally:
        assert server.stop_drift() == 1
    assert _answer(server.base_url, "big", "hard q3") == "big answers hard q3"


def test_drift_from_a_given_moment_and_errors(server):
    url = server.base_url
    server.start_drift("cheap", "easy", at=time.time() + 0.4, until=time.time() + 0.8)
    assert _answer(url, "cheap", "easy q2") == "cheap answers easy q2"
    time.sleep(0.5)
    assert _answer(url, "cheap", "easy q2").startswith(DRIFT_PREFIX)
    time.sleep(0.4)
    assert _answer(url, "cheap", "easy q2") == "cheap answers easy q2"
    admin = url.replace("/v1", "/_drift")
    for body, words in [({"model": "gpt-9", "category": "easy"}, "unknown model"),
                        ({"model": "cheap", "category": "poetry"}, "unknown category"),
                        ({"model": "cheap"}, "'category'"),
                        ({"model": "cheap", "category": "easy", "at": 10, "until": 5}, "must come after")]:
        r = _HTTP.post(admin, json=body)
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    assert _HTTP.get(admin).json()["drifts"]


def test_drift_flag_form():
    assert parse_drift_flag("cheap:easy", 100.0) == ("cheap", "easy", 100.0, None)
    assert parse_drift_flag("org/model:x:easy@5-7", 100.0) == ("org/model:x", "easy", 105.0, 107.0)
    for bad in ("cheap", ":easy", "cheap:easy@soon"):
        with pytest.raises(ConfigError, match="--drift"):
            parse_drift_flag(bad, 0.0)


def test_cli_drift_and_judge_flags(tmp_path):
    path = tmp_path / "t.parquet"
    _table().to_parquet(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "evals.cli", "replay-serve", str(path), "--port", "0", "--drift", "cheap:easy@0",
         "--judge-model", "my-judge"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "drift: cheap:easy@0" in line, line
        url = line.split("base_url ")[1].split()[0].rstrip(";")
        assert _answer(url, "cheap", "easy q0").startswith(DRIFT_PREFIX)
        msgs = JudgePairwise().messages(
            GradeInput(prompt="hard q0", response="big answers hard q0", baseline="cheap answers hard q0"))
        r = _HTTP.post(f"{url}/chat/completions", json={"model": "my-judge", "messages": msgs})
        assert r.json()["choices"][0]["message"]["content"].endswith("[[A]]")
        # The default name is not a judge on this server (nor a model): 404 model_not_found.
        r = _HTTP.post(f"{url}/chat/completions", json={"model": "replay-judge", "messages": msgs})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
