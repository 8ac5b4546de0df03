"""Shadow grading through the proxy (the replay server as upstreams and judge, no network): sampling, the pairs and
grades in the decision log, drops when the queue or the daily cap is full, online feedback to an adaptive export,
and back-off without a human (bench/bench_backoff.py's scenario)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from evals.exceptions import ConfigError
from evals.production.log_reader import read_log
from evals.serving import ReplayServer
from routers.export import export_router
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.settings import shadow as shadow_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_backoff import (  # noqa: E402
    DRIFTED,
    LAM,
    PRICES,
    adaptive_router,
    backoff_table,
    run_backoff,
    upstreams_toml,
)


@pytest.fixture(scope="module")
def table():
    return backoff_table(n_per_cat=6)


@pytest.fixture(scope="module")
def replay(table):
    with ReplayServer(table) as srv:
        yield srv


def _proxy(table, replay, tmp_path: Path, rate: float = 1.0, **shadow):
    """(app, server) of an adaptive export with online shadow grading (``shadow``: more ``[shadow]`` keys)."""
    folder = export_router(adaptive_router().fit(table), tmp_path / "export", lam=LAM, prices=PRICES)
    cfg = tmp_path / "upstreams.toml"
    cfg.write_text(upstreams_toml(replay.base_url, rate, tmp_path / "log", **shadow))
    app = build_proxy_app(folder, no_auth=True, upstreams_path=cfg)
    return app, ProxyServer(app)


def _ask(c: httpx.Client, prompt: str, category: str, **extra) -> httpx.Response:
    r = c.post("/chat/completions", headers={"x-routelab-category": category},
               json={"model": "router", "messages": [{"role": "system", "content": "be brief"},
                                                     {"role": "user", "content": prompt}], **extra})
    assert r.status_code == 200, r.text
    return r


def _settle(st, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not st.shadow.idle():
        assert time.monotonic() < deadline, "shadow work did not finish"
        time.sleep(0.005)
    assert st.decision_log.flush(10)


def _prompts(table, category: str) -> list[str]:
    return [p for p, c in zip(table.prompts, table.categories, strict=True) if c == category]


def test_sampled_requests_get_reference_answers_and_online_grades_in_the_log(table, replay, tmp_path):
    app, server = _proxy(table, replay, tmp_path)
    st = app.state.proxy
    assert st.shadow.reference == "big"  # the default: the export's most expensive model
    with server as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
        for p in _prompts(table, "math")[:3] + _prompts(table, "code")[:2] + _prompts(table, "proof")[:2]:
            _ask(c, p, p.split()[0])
        streamed = _ask(c, _prompts(table, "chat")[0], "chat", stream=True)  # gathered whole as relayed: sampled
        streamed_text = "".join(
            json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
            for line in streamed.text.splitlines() if line.startswith("data: {")
        )
        _settle(st)
        health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
        metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
    log = read_log(tmp_path / "log")
    decisions = {r.request_id: r for r in log.records}
    # math -> cheap and code -> mid are sampled (rate 1), the streamed chat request too (cheap, its text gathered
    # whole from the events relayed); proof is answered by the reference itself: not sampled.
    assert [p.answered_by for p in log.shadow_pairs] == ["cheap"] * 3 + ["mid"] * 2 + ["cheap"]
    assert log.shadow_pairs[-1].answer_text == streamed_text != ""
    for pair in log.shadow_pairs:
        assert decisions[pair.request_id].shadow is True
        assert pair.reference == "big" and pair.reference_status == 200
        sid = pair.prompt_text.replace(" question number ", "-")
        assert pair.reference_text == f"big on {sid}: the answer is (A)"
        assert pair.reference_cost_usd == pytest.approx((40 * 5.0 + 12 * 15.0) / 1e6)
        assert pair.answer_cost_usd == decisions[pair.request_id].cost_usd
    assert sum(r.shadow for r in log.records) == 6 and len(log.records) == 8
    # Both answers are right: ties; each fed back to the adaptive export as a success of the model that answered.
    assert [(g.verdict, g.answer_score, g.grader, g.online) for g in log.grades] == [
        ("tie", 0.5, "judge:replay-judge", True)] * 6
    assert {g.request_id for g in log.grades} == {p.request_id for p in log.shadow_pairs}
    assert health["shadow"]["sampled"] == 6 and health["shadow"]["grades"]["tie"] == 6
    assert health["shadow"]["spent_today_usd"] == pytest.approx(6 * (40 * 5.0 + 12 * 15.0) / 1e6)
    assert "routelab_shadow_sampled_total 6" in metrics
    assert 'routelab_shadow_feedback_total{model="cheap",score="1"} 4' in metrics
    assert 'routelab_shadow_grades_total{verdict="tie"} 6' in metrics
    # The reference was asked the request's own messages (system turn included), under its upstream name.
    assert replay.stats()["judged"] >= 10


def test_a_drifted_answer_loses_and_the_export_learns_it(table, replay, tmp_path):
    app, server = _proxy(table, replay, tmp_path)
    st = app.state.proxy
    before = st.exported.state.get_evidence()["math"]["cheap"]
    replay.start_drift("cheap", "math")
    try:
        with server as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
            r = _ask(c, _prompts(table, "math")[0], "math")
            assert r.headers["x-routelab-model"] == "cheap"
            _settle(st)
    finally:
        replay.stop_drift()
    grades = read_log(tmp_path / "log").grades
    assert [(g.verdict, g.answer_score, g.answered_by) for g in grades] == [("loss", 0.0, "cheap")]
    after = st.exported.state.get_evidence()["math"]["cheap"]
    assert after[1] == pytest.approx(before[1] * 0.97 + 1.0)  # one failure counted (after the forgetting)


def test_a_request_with_its_expected_answer_is_graded_by_exact_match(table, replay, tmp_path):
    app, server = _proxy(table, replay, tmp_path)
    with server as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
        judged = replay.stats()["judged"]
        r = c.post("/chat/completions", headers={"x-routelab-category": "code", "x-routelab-expected": "B"},
                   json={"model": "router", "messages": [{"role": "user", "content": _prompts(table, "code")[1]}]})
        assert r.status_code == 200 and r.headers["x-routelab-model"] == "mid"
        _settle(app.state.proxy)
        assert replay.stats()["judged"] == judged  # no judge call
    log = read_log(tmp_path / "log")
    (pair,) = log.shadow_pairs
    (grade,) = log.grades
    assert pair.expected == "B"
    # Both answers say (A), the expected answer is B: both wrong, so the answer is as good as the reference.
    assert (grade.grader, grade.verdict, grade.answer_score, grade.reference_score) == ("exact", "tie", 0.0, 0.0)
    assert grade.detail.startswith("mcq_letter: A|A vs B")


def test_a_stream_without_usage_is_estimated_from_its_text_against_the_daily_cap(table, replay, tmp_path):
    # A stream without stream_options.include_usage carries no token counts; its reference call is estimated from
    # the characters / 4 of the messages and the answer (it used to count as $0 and pass any cap).
    app, server = _proxy(table, replay, tmp_path, daily_spend_usd=1e-7)
    with server as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
        for p in _prompts(table, "math")[:3]:
            r = _ask(c, p, "math", stream=True)
            assert r.text.rstrip().endswith("data: [DONE]") and '"usage"' not in r.text
        _settle(app.state.proxy)
        health = app.state.proxy.shadow.health()
    assert health["dropped"]["over_daily_cap"] == 3
    assert not read_log(tmp_path / "log").shadow_pairs


def test_full_queue_and_daily_cap_drop_and_count_but_never_fail_a_request(table, replay, tmp_path):
    # A cap below one reference call: every sample is dropped before any spend.
    app, server = _proxy(table, replay, tmp_path / "cap", daily_spend_usd=0.0001)
    with server as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
        for p in _prompts(table, "math")[:4]:
            _ask(c, p, "math")
        _settle(app.state.proxy)
        metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
    assert 'routelab_shadow_dropped_total{reason="over_daily_cap"} 4' in metrics
    assert "routelab_shadow_sampled_total 0" in metrics
    log = read_log(tmp_path / "cap" / "log")
    assert len(log.records) == 4 and not log.shadow_pairs and not any(r.shadow for r in log.records)
    # A queue of one with one slow worker: a burst fills it; the rest are dropped (queue_full), all answered.
    slow = ReplayServer(table, latency_ms=300)
    with slow:
        app, server = _proxy(table, slow, tmp_path / "queue", workers=1, queue_size=1)
        with server as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
            import concurrent.futures as cf

            with cf.ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda p: _ask(c, p, "math"), _prompts(table, "math")[:6]))
            health = app.state.proxy.shadow.health()
            _settle(app.state.proxy)
    assert health["dropped"]["queue_full"] >= 1
    assert health["sampled"] + health["dropped"]["queue_full"] == 6


def test_shadow_settings_are_checked():
    ups = ["cheap", "big", "replay-judge"]
    parse = shadow_settings.parse
    assert not parse({}, "u.toml [shadow]", ups).enabled
    s = parse({"rate": 0.2, "grade_online": True, "judge": "replay-judge", "reference": "big"}, "w", ups)
    assert (s.rate, s.judge, s.reference, s.daily_spend_usd, s.queue_size) == (0.2, "replay-judge", "big", 5.0, 1000)
    for table, words in [
        ({"rate": 1.5}, "rate must be a number from 0 to 1"),
        ({"rate": 0.1, "grade_online": True}, "needs judge"),
        ({"rate": 0.1, "judge": "gpt-9"}, "judge 'gpt-9' is not one of the upstreams"),
        ({"rate": 0.1, "reference": "gpt-9"}, "reference 'gpt-9' is not one of the upstreams"),
        ({"rate": 0.1, "queue_size": 0}, "queue_size"),
        ({"rate": 0.1, "daily_spend_usd": -1}, "daily_spend_usd"),
        ({"rate": 0.1, "grade_online": "yes", "judge": "replay-judge"}, "grade_online must be true or false"),
        ({"rate": 0.1, "sample": 3}, "unknown key(s) ['sample']"),
        ({"rate": 0.1, "exact_grader": "judge_single"}, "exact_grader must be an exact-match grader"),
    ]:
        with pytest.raises(ConfigError, match=None) as err:
            parse(table, "u.toml [shadow]", ups)
        assert "u.toml [shadow]" in str(err.value) and words in str(err.value), (table, str(err.value))


@pytest.mark.slow
def test_back_off_without_a_human():
    """Must-show: math moves off cheap within a few requests of the fault, comes back after it; others stay."""
    run = run_backoff(rate=1.0, rounds=100, drift_at=20, drift_until=60)
    assert run.routed[DRIFTED][: run.drift_index] == ["cheap"] * run.drift_index
    n = run.backed_off_after
    assert n is not None and n <= 6, run.routed[DRIFTED]
    retried, later = run.retries_during_fault
    assert retried <= 0.15 * later  # on a stronger model for the rest of the fault (a few forgetting re-tries)
    # Back on cheap for good within a re-try cycle: with forgetting 0.97 a backed-off cheap model is re-tried
    # after at most ~25 feedbacks of its category (its failures fading below the back-off threshold).
    m = run.recovered_after
    assert m is not None and m <= 30, run.routed[DRIFTED][run.stop_index :]
    assert run.others_moved() == {}
    assert run.routed["chat"] == ["cheap"] * 100 and run.routed["code"] == ["mid"] * 100
    assert run.routed["proof"] == ["big"] * 100
    assert run.shadow["grades"]["loss"] >= n - 1 and sum(run.shadow["dropped"].values()) == 0
