"""The replay server: a real OpenAI-compatible HTTP server on loopback answering from an OutcomeTable."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.serving import FAULT_KINDS, ReplayServer, build_replay_app


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
    for kind in FAULT_KINDS:
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
