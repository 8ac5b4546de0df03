"""The chat client on httpx.MockTransport: cache, retries, backoff, Retry-After, errors, keys."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from evals.collect import ChatClient, ProviderConfig, ResponseCache, request_key
from evals.exceptions import ConfigError, ProviderError, ProviderTimeout

MSGS = [{"role": "user", "content": "What is 2+2?"}]
KEY = "sk-test-NEVER-LOG-ME-1234567890"


def ok_body(text="4", pt=7, ct=3):
    return {
        "id": "x",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct},
    }


def provider(**kw):
    base = dict(
        name="p",
        base_url="http://llm.test/v1",
        api_key_env="TEST_KEY",
        concurrency=4,
        timeout_s=1.0,
        retries=3,
        backoff_s=0.5,
        max_backoff_s=8.0,
    )
    return ProviderConfig(**{**base, **kw})


class Recorder:
    """A scripted server: each request pops the next response factory."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return step(request) if callable(step) else step


def run(coro):
    return asyncio.run(coro)


def make_client(handler, tmp_path, sleeps=None, cache=True, **pkw):
    async def fake_sleep(s):
        if sleeps is not None:
            sleeps.append(s)

    return ChatClient(
        {"p": provider(**pkw)},
        cache=ResponseCache(tmp_path / "c.sqlite") if cache else None,
        transport=httpx.MockTransport(handler),
        env={"TEST_KEY": KEY},
        sleep=fake_sleep,
        seed=0,
    )


def test_answer_usage_latency_and_auth_header(tmp_path):
    rec = Recorder(httpx.Response(200, json=ok_body("four", 11, 2)))

    async def go():
        async with make_client(rec, tmp_path) as c:
            return await c.chat("p", "m", MSGS, {"temperature": 0})

    r = run(go())
    assert (r.text, r.input_tokens, r.output_tokens, r.cached, r.attempts) == ("four", 11, 2, False, 1)
    assert r.latency_s >= 0
    req = rec.requests[0]
    assert (
        req.url == "http://llm.test/v1/chat/completions" and req.headers["authorization"] == f"Bearer {KEY}"
    )
    body = json.loads(req.content)
    assert body["model"] == "m" and body["messages"] == MSGS and body["temperature"] == 0


def test_cache_hit_makes_no_request_and_survives_reopen(tmp_path):
    rec = Recorder(httpx.Response(200, json=ok_body()))

    async def go():
        async with make_client(rec, tmp_path) as c:
            first = await c.chat("p", "m", MSGS, {"temperature": 0})
            second = await c.chat("p", "m", MSGS, {"temperature": 0})
            other = await c.chat("p", "m", MSGS, {"temperature": 0.7})  # other params: another request
            return first, second, other, c.stats[("p", "m")]

    first, second, other, stats = run(go())
    assert not first.cached and second.cached and not other.cached and len(rec.requests) == 2
    assert (stats.calls, stats.cache_hits) == (2, 1)

    async def again():
        async with make_client(rec, tmp_path) as c:
            return await c.chat("p", "m", MSGS, {"temperature": 0})

    assert run(again()).cached and len(rec.requests) == 2  # a new process reads the same file


def test_request_key_normalisation_and_no_key_inside(tmp_path):
    k = request_key("http://LLM.test/v1/", "m", MSGS, {"temperature": 0, "max_tokens": None, "stream": True})
    assert k == request_key("http://llm.test/v1", "m", MSGS, {"temperature": 0})
    assert k != request_key("http://llm.test/v1", "m2", MSGS, {"temperature": 0})
    assert k != request_key("http://other.test/v1", "m", MSGS, {"temperature": 0})
    rec = Recorder(httpx.Response(200, json=ok_body()))

    async def go():
        async with make_client(rec, tmp_path) as c:
            await c.chat("p", "m", MSGS)

    run(go())
    for f in tmp_path.iterdir():
        assert KEY.encode() not in f.read_bytes()


def test_identical_requests_in_flight_share_one_call(tmp_path):
    async def slow(request):
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=ok_body())

    calls = []

    async def handler(request):
        calls.append(request)
        return await slow(request)

    async def go():
        async with make_client(handler, tmp_path) as c:
            return await asyncio.gather(*(c.chat("p", "m", MSGS) for _ in range(5)))

    results = run(go())
    assert len(calls) == 1 and sum(not r.cached for r in results) == 1


def test_retries_honour_retry_after_and_back_off_with_jitter(tmp_path):
    sleeps: list[float] = []
    rec = Recorder(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "slow down"}}),
        httpx.Response(500, json={"error": {"message": "oops"}}),
        httpx.Response(503),
        httpx.Response(200, json=ok_body()),
    )

    async def go():
        async with make_client(rec, tmp_path, sleeps=sleeps) as c:
            return await c.chat("p", "m", MSGS), c.stats[("p", "m")]

    r, stats = run(go())
    assert r.attempts == 4 and len(rec.requests) == 4 and stats.retries == 3
    assert 3.0 <= sleeps[0] <= 3.3  # Retry-After honoured (plus <= 10% jitter)
    assert 0 <= sleeps[1] <= 1.0 and 0 <= sleeps[2] <= 2.0  # full jitter under backoff_s * 2**k
    assert stats.errors == {"429": 1, "500": 1, "503": 1}


def test_jitter_varies_and_is_capped(tmp_path):
    sleeps: list[float] = []
    rec = Recorder(httpx.Response(500))

    async def go():
        async with make_client(rec, tmp_path, sleeps=sleeps, retries=8, max_backoff_s=2.0) as c:
            await c.chat("p", "m", MSGS)

    with pytest.raises(ProviderError, match="gave up after 9 attempt"):
        run(go())
    assert len(sleeps) == 8 and max(sleeps) <= 2.0 and len(set(sleeps)) == 8


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_no_retry_on_client_errors(tmp_path, status):
    rec = Recorder(httpx.Response(status, json={"error": {"message": f"bad thing, key {KEY}"}}))

    async def go():
        async with make_client(rec, tmp_path) as c:
            await c.chat("p", "m", MSGS)

    with pytest.raises(ProviderError, match=f"HTTP {status}") as err:
        run(go())
    assert len(rec.requests) == 1 and KEY not in str(err.value) and "***" in str(err.value)


def test_408_is_retried(tmp_path):
    rec = Recorder(httpx.Response(408), httpx.Response(200, json=ok_body()))

    async def go():
        async with make_client(rec, tmp_path) as c:
            return await c.chat("p", "m", MSGS)

    assert run(go()).attempts == 2


def test_timeouts_connection_errors_and_malformed_bodies_are_retried(tmp_path):
    def timeout(request):
        raise httpx.ReadTimeout("slow", request=request)

    def dropped(request):
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    rec = Recorder(
        timeout,
        dropped,
        httpx.Response(200, content=b'{"choices": [{"mess'),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json=ok_body()),
    )

    async def go():
        async with make_client(rec, tmp_path, retries=5) as c:
            return await c.chat("p", "m", MSGS), c.stats[("p", "m")]

    r, stats = run(go())
    assert r.attempts == 5 and stats.errors == {"timeout": 1, "connection": 1, "malformed": 2}


def test_exhausted_timeouts_raise_provider_timeout(tmp_path):
    def timeout(request):
        raise httpx.ConnectTimeout("slow", request=request)

    async def go():
        async with make_client(Recorder(timeout), tmp_path, retries=2) as c:
            await c.chat("p", "m", MSGS)

    with pytest.raises(ProviderTimeout, match="no answer within 1 s"):
        run(go())


def test_retry_after_beyond_the_cap_gives_up(tmp_path):
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "3600"}))

    async def go():
        async with make_client(rec, tmp_path, max_retry_after_s=60) as c:
            await c.chat("p", "m", MSGS)

    with pytest.raises(ProviderError, match="asked to wait 3600 s"):
        run(go())
    assert len(rec.requests) == 1


def test_concurrency_limit_per_provider(tmp_path):
    active, peak = 0, 0

    async def handler(request):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return httpx.Response(200, json=ok_body(json.loads(request.content)["messages"][0]["content"]))

    async def go():
        async with make_client(handler, tmp_path, concurrency=3) as c:
            return await asyncio.gather(
                *(c.chat("p", "m", [{"role": "user", "content": str(i)}]) for i in range(20))
            )

    results = run(go())
    assert peak == 3 and [r.text for r in results] == [str(i) for i in range(20)]


def test_missing_key_names_the_variable_not_a_value(tmp_path):
    with pytest.raises(ConfigError, match="environment variable TEST_KEY is not set"):
        ChatClient({"p": provider()}, env={})
    assert ChatClient({"p": provider(api_key_env="")}, env={}).providers["p"].api_key_env == ""
