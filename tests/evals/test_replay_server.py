"""The replay server: a real OpenAI-compatible HTTP server on loopback answering from an OutcomeTable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.serving import CANNED_PREFIX, DEFAULT_FAULTS, FAULT_KINDS, ReplayServer, build_replay_app


@pytest.fixture(scope="module")
def table() -> OutcomeTable:
    rows = []
    for i in range(20):
        for model, tok in [("big", 40.0), ("small", float("nan"))]:
            rows.append(
                dict(
                    sample_id=f"s{i}",
                    model=model,
                    prompt=f"question {i}?",
                    response=f"{model} says {i}. " * 30,
                    score=1.0,
                    cost_usd=0.0,
                    input_tokens=tok,
                    output_tokens=tok,
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


_HTTP = httpx.Client(timeout=5)  # one pooled client: a new client per request costs more than the request


def chat(url, model="big", prompt="question 1?", **kw):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    return _HTTP.post(f"{url}/chat/completions", json={"model": model, "messages": messages, **kw})


def test_answers_with_recorded_text_and_usage(table):
    with ReplayServer(table) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        r = chat(srv.base_url)
        assert r.status_code == 200
        data = r.json()
        assert data["object"] == "chat.completion" and data["model"] == "big"
        assert data["choices"][0]["message"] == {"role": "assistant", "content": "big says 1. " * 30}
        assert data["usage"] == {"prompt_tokens": 40, "completion_tokens": 40, "total_tokens": 80}
        small = chat(srv.base_url, "small").json()  # no recorded tokens: characters / 4
        n = len("small says 1. " * 30)
        assert small["usage"]["completion_tokens"] == -(-n // 4) and small["usage"]["prompt_tokens"] == 3
        models = httpx.get(f"{srv.base_url}/models").json()
        assert [m["id"] for m in models["data"]] == ["big", "small"]
        # content given as a list of parts is read too
        parts = [
            {
                "role": "user",
                "content": [{"type": "text", "text": "question "}, {"type": "text", "text": "2?"}],
            }
        ]
        assert (
            httpx.post(
                f"{srv.base_url}/chat/completions", json={"model": "big", "messages": parts}
            ).status_code
            == 200
        )


def test_openai_style_errors(table):
    with ReplayServer(table) as srv:
        r = chat(srv.base_url, model="gpt-9")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "big, small" in r.json()["error"]["message"]
        r = chat(srv.base_url, prompt="never asked")
        assert r.status_code == 404 and r.json()["error"]["code"] == "prompt_not_found"
        assert "no recorded answer of model 'big'" in r.json()["error"]["message"]
        r = httpx.post(f"{srv.base_url}/chat/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(f"http://127.0.0.1:{srv.port}/nope").status_code == 404
        assert srv.stats()["errors"] == 3 and srv.stats()["requests"] == 0


def test_streaming_sse(table):
    with ReplayServer(table) as srv:
        body = {
            "model": "big",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "question 3?"}],
        }
        with httpx.stream("POST", f"{srv.base_url}/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "big says 3. " * 30 and len(chunks) > 3
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_latency_is_added(table):
    with ReplayServer(table, latency_ms=150) as srv:
        t0 = time.perf_counter()
        assert chat(srv.base_url).status_code == 200
        assert time.perf_counter() - t0 >= 0.15


def test_each_fault_kind(table):
    seen = {}
    for kind in DEFAULT_FAULTS:
        with ReplayServer(table, fault_rate=1.0, faults=[kind], retry_after_s=2, hang_s=3) as srv:
            try:
                r = httpx.post(
                    f"{srv.base_url}/chat/completions",
                    timeout=0.5,
                    json={"model": "big", "messages": [{"role": "user", "content": "question 0?"}]},
                )
                seen[kind] = (r.status_code, r.headers.get("retry-after"), r.content[:20])
            except httpx.HTTPError as exc:
                seen[kind] = type(exc).__name__
            assert srv.stats()["faults"] == {kind: 1} and srv.stats()["ok"] == 0
    assert seen["429"][:2] == (429, "2")
    assert seen["500"][0] == 500
    assert seen["timeout"] == "ReadTimeout"
    assert seen["malformed"][0] == 200 and seen["malformed"][2].startswith(b'{"id"')
    assert seen["drop"] == "RemoteProtocolError"


def test_fault_sequence_is_seeded_and_rate_is_respected(table):
    def outcomes(seed):
        with ReplayServer(table, fault_rate=0.3, faults=["500"], seed=seed) as srv:
            codes = [
                chat(srv.base_url, m, f"question {i}?").status_code
                for i in range(20)
                for m in ("big", "small")
            ]
            return codes, srv.stats()

    a, stats = outcomes(1)
    assert a == outcomes(1)[0] and a != outcomes(2)[0]
    assert 4 <= a.count(500) <= 20 and stats["faults"]["500"] == a.count(500) and stats["ok"] == a.count(200)


def test_request_counts_per_model_and_sample(table):
    with ReplayServer(table) as srv:
        for _ in range(3):
            chat(srv.base_url, "big", "question 5?")
        chat(srv.base_url, "small", "question 5?")
        assert (
            srv.requests("big", "s5") == 3
            and srv.requests("small", "s5") == 1
            and srv.requests("big", "s6") == 0
        )
        stats = httpx.get(f"http://127.0.0.1:{srv.port}/_stats").json()
        assert {(k["model"], k["sample_id"]): k["ok"] for k in stats["by_key"]} == {
            ("big", "s5"): 3,
            ("small", "s5"): 1,
        }
        srv.reset_stats()
        assert srv.stats()["requests"] == 0


def test_api_key_required_when_configured(table):
    with ReplayServer(table, api_key="sk-right") as srv:
        assert chat(srv.base_url).status_code == 401
        r = httpx.post(
            f"{srv.base_url}/chat/completions",
            headers={"Authorization": "Bearer sk-right"},
            json={"model": "big", "messages": [{"role": "user", "content": "question 1?"}]},
        )
        assert r.status_code == 200


def test_asgi_app_works_in_process(table):
    app = build_replay_app(table)
    import asyncio

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replay") as c:
            return await c.post(
                "/v1/chat/completions",
                json={"model": "small", "messages": [{"role": "user", "content": "question 4?"}]},
            )

    assert asyncio.run(go()).json()["choices"][0]["message"]["content"].startswith("small says 4.")


def test_bad_settings_are_rejected(table):
    with pytest.raises(ConfigError, match="fault_rate"):
        build_replay_app(table, fault_rate=1.5)
    with pytest.raises(ConfigError, match="unknown fault kind"):
        build_replay_app(table, faults=["meteor"])


def test_cli_replay_serve(tmp_path, table):
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "evals.cli", "replay-serve", str(path), "--port", "0", "--latency-ms", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "base_url http://127.0.0.1:" in line, line
        url = line.split("base_url ")[1].split()[0]
        assert chat(url).json()["choices"][0]["message"]["content"].startswith("big says 1.")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------------
# Every failure mode of a misbehaving upstream, streamed and not (what the proxy's hardening is tested against).


def _raw_exchange(url: str, body: dict, timeout: float = 5.0) -> tuple[int | None, dict, bytes, str | None]:
    """Status, headers, the body bytes that arrived, and the error that ended the read (None: a clean end)."""
    received = b""
    try:
        with _HTTP.stream("POST", f"{url}/chat/completions", json=body, timeout=timeout) as r:
            status, headers = r.status_code, dict(r.headers)
            try:
                for part in r.iter_raw():
                    received += part
            except httpx.HTTPError as exc:
                return status, headers, received, type(exc).__name__
    except httpx.HTTPError as exc:
        return None, {}, received, type(exc).__name__
    return status, headers, received, None


def _request(stream: bool, prompt: str = "question 7?") -> dict:
    return {"model": "big", "stream": stream, "messages": [{"role": "user", "content": prompt}]}


def _sse_data(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


def test_default_faults_are_the_original_five_and_all_kinds_are_known():
    assert DEFAULT_FAULTS == ("429", "500", "timeout", "malformed", "drop")
    assert set(DEFAULT_FAULTS) < set(FAULT_KINDS) and len(FAULT_KINDS) == len(set(FAULT_KINDS)) == 13


@pytest.fixture(scope="module")
def fault_servers(table):
    """One server per fault kind, every request faulted (module-scoped: 13 servers start once)."""
    servers = {k: ReplayServer(table, fault_rate=1.0, faults=[k], hang_s=1.0).start() for k in FAULT_KINDS}
    yield servers
    for srv in servers.values():
        srv.stop()


def test_non_json_and_choiceless_200s(fault_servers):
    for stream in (False, True):
        status, headers, raw, err = _raw_exchange(fault_servers["not_json"].base_url, _request(stream))
        assert (status, err) == (200, None) and headers["content-type"] == "text/html"
        assert raw.startswith(b"<html>")
        with pytest.raises(ValueError):
            json.loads(raw)
        status, headers, raw, err = _raw_exchange(fault_servers["no_choices"].base_url, _request(stream))
        data = json.loads(raw)
        assert (status, err) == (200, None) and data["object"] == "chat.completion" and "choices" not in data
        assert data["usage"]["completion_tokens"] == 40


def test_truncated_json_200(fault_servers):
    status, _, raw, err = _raw_exchange(fault_servers["malformed"].base_url, _request(False))
    assert (status, err) == (200, None) and raw.startswith(b'{"id"')
    with pytest.raises(ValueError):
        json.loads(raw)


def test_drop_before_the_first_byte(fault_servers):
    for stream, ctype in ((True, "text/event-stream"), (False, "application/json")):
        status, headers, raw, err = _raw_exchange(fault_servers["drop_before_body"].base_url, _request(stream))
        assert status == 200 and headers["content-type"] == ctype
        assert raw == b"" and err == "RemoteProtocolError"  # the connection closed before any body byte


def test_stream_dropped_mid_way_has_events_but_no_done(fault_servers):
    status, _, raw, err = _raw_exchange(fault_servers["drop_mid_stream"].base_url, _request(True))
    events = _sse_data(raw)
    assert status == 200 and err == "RemoteProtocolError"  # incomplete chunked body: the connection was cut
    assert len(events) >= 2 and "[DONE]" not in events
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events)
    assert text and ("big says 7. " * 30).startswith(text) and text != "big says 7. " * 30
    # Not streamed: half of a completion, then the connection closes.
    status, _, raw, err = _raw_exchange(fault_servers["drop_mid_stream"].base_url, _request(False))
    assert status == 200 and err == "RemoteProtocolError" and raw.startswith(b'{"id": "chatcmpl-replay-s7"')


def test_stream_ending_cleanly_without_done(fault_servers):
    status, _, raw, err = _raw_exchange(fault_servers["end_without_done"].base_url, _request(True))
    events = _sse_data(raw)
    assert (status, err) == (200, None) and len(events) >= 2 and "[DONE]" not in events
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events)  # never finished
    status, _, raw, err = _raw_exchange(fault_servers["end_without_done"].base_url, _request(False))
    assert (status, err, raw) == (200, None, b"")


def test_invalid_usage_negative_and_overflowing(fault_servers):
    status, _, raw, err = _raw_exchange(fault_servers["usage_negative"].base_url, _request(False))
    data = json.loads(raw)
    assert (status, err) == (200, None) and data["choices"][0]["message"]["content"] == "big says 7. " * 30
    assert data["usage"] == {"prompt_tokens": -100000, "completion_tokens": -100000, "total_tokens": -200000}
    status, _, raw, err = _raw_exchange(fault_servers["usage_huge"].base_url, _request(False))
    assert b'"prompt_tokens": 1e400' in raw  # valid JSON text whose number overflows a float
    assert json.loads(raw)["usage"]["completion_tokens"] == float("inf")
    # Streamed: a complete stream whose usage chunk is sent although the request did not ask for it.
    for kind, expected in (("usage_negative", -100000), ("usage_huge", float("inf"))):
        status, _, raw, err = _raw_exchange(fault_servers[kind].base_url, _request(True))
        events = _sse_data(raw)
        assert (status, err, events[-1]) == (200, None, "[DONE]")
        assert json.loads(events[-2])["usage"]["prompt_tokens"] == expected


def test_slow_body_is_complete_but_takes_hang_s(fault_servers):
    for stream in (False, True):
        t0 = time.perf_counter()
        status, _, raw, err = _raw_exchange(fault_servers["slow_body"].base_url, _request(stream))
        took = time.perf_counter() - t0
        assert (status, err) == (200, None) and 0.8 <= took < 3.0, took
        if stream:
            assert _sse_data(raw)[-1] == "[DONE]"
        else:
            assert json.loads(raw)["choices"][0]["message"]["content"] == "big says 7. " * 30
    # A client whose read timeout is shorter than the gaps gives up mid-body.
    status, _, raw, err = _raw_exchange(fault_servers["slow_body"].base_url, _request(False), timeout=0.02)
    assert err == "ReadTimeout"


def test_every_kind_is_counted_and_the_sequence_is_deterministic(table):
    def run() -> tuple[list, dict]:
        seen = []
        with ReplayServer(table, fault_rate=0.5, faults=FAULT_KINDS, seed=3, hang_s=0.05) as srv:
            for i in range(20):
                for n in range(3):  # the n-th request for the same (model, prompt) draws again
                    status, _, raw, err = _raw_exchange(srv.base_url, _request(n == 1, f"question {i}?"))
                    seen.append((status, err, len(raw) if status != 200 or err else None))
            return seen, srv.stats()

    first, stats = run()
    again, _ = run()
    assert first == again  # same seed, same (model, prompt, n): same faults, same outcomes
    assert sum(stats["faults"].values()) + stats["ok"] == stats["requests"] == 60
    assert 15 <= sum(stats["faults"].values()) <= 45 and len(stats["faults"]) >= 6


def test_cli_fault_kinds_all_and_unknown_kind(tmp_path, table):
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    bad = subprocess.run(
        [sys.executable, "-m", "evals.cli", "replay-serve", str(path), "--port", "0", "--fault-kinds", "meteor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "unknown fault kind" in bad.stderr and "drop_mid_stream" in bad.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "evals.cli", "replay-serve", str(path), "--port", "0", "--fault-rate", "1",
         "--fault-kinds", "all", "--hang-s", "0.05", "--unknown-prompts", "canned"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert "unknown prompts get a canned answer" in line and "injected faults on 1 of requests" in line, line
        url = line.split("base_url ")[1].split(";")[0].split()[0]
        kinds = {_raw_exchange(url, _request(False, f"question {i}?"))[:1] for i in range(20)}
        assert len(kinds) >= 2  # several kinds drawn: 429s, 500s, 200s...
        assert httpx.get(url.replace("/v1", "/_stats")).json()["ok"] == 0  # every request faulted
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------------
# Canned answers for prompts without a recording (the README's keyless demo asks "What is 2+2?").


def test_canned_mode_answers_any_prompt_with_a_labelled_placeholder(table):
    with ReplayServer(table, unknown_prompts="canned") as srv:
        r = chat(srv.base_url, prompt="What is 2+2?")
        assert r.status_code == 200 and r.headers["x-replay-canned"] == "true"
        data = r.json()
        content = data["choices"][0]["message"]["content"]
        assert content.startswith(CANNED_PREFIX) and "big" in content and data["replay_canned"] is True
        assert data["usage"]["prompt_tokens"] == 3 and data["usage"]["completion_tokens"] == -(-len(content) // 4)
        # A recorded prompt still gets its recorded answer, unlabelled.
        r = chat(srv.base_url, prompt="question 2?")
        assert r.json()["choices"][0]["message"]["content"] == "big says 2. " * 30
        assert "x-replay-canned" not in r.headers and "replay_canned" not in r.json()
        # Streamed: the same labelled text, every chunk carries the label, and the stream ends with [DONE].
        status, headers, raw, err = _raw_exchange(srv.base_url, {**_request(True, "What is 2+2?")})
        events = _sse_data(raw)
        assert (status, err, headers["x-replay-canned"], events[-1]) == (200, None, "true", "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["replay_canned"] is True for c in chunks)
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == content
        # An unknown model is still a 404: only prompts are made up, never models.
        assert chat(srv.base_url, model="gpt-9", prompt="What is 2+2?").status_code == 404
        stats = srv.stats()
        assert stats["canned"] == 2 and stats["ok"] == 3 and stats["errors"] == 1
        assert srv.requests("big", "canned:" + hashlib.sha256(b"What is 2+2?").hexdigest()[:12]) == 2


def test_unknown_prompt_404_says_how_to_get_a_canned_answer(table):
    with ReplayServer(table) as srv:
        r = chat(srv.base_url, prompt="What is 2+2?")
        assert r.status_code == 404 and "--unknown-prompts canned" in r.json()["error"]["message"]
    with pytest.raises(ConfigError, match="unknown_prompts must be one of 404, canned"):
        build_replay_app(table, unknown_prompts="yes")
