"""Two proxy replicas sharing one real Redis (issue 16 items 2 and 3), against the replay server on loopback.

* an upstream made to fail through replica A is skipped by replica B on its next request once the trip has
  reached it through Redis pub/sub (the test prints how long that took; a replica without ``[state]`` still
  tries the upstream);
* a feedback posted to A changes B's next decision for that category, exactly as the workbench router would
  (again once it has arrived: the test prints the propagation time);
* spend counted on both replicas adds up to one budget, and the request past the limit goes to the cheapest
  model or gets a 429 in OpenAI's error shape, as configured (also per client key, and without Redis);
* Redis killed mid-run: 0 failed requests, ``/healthz`` and ``/metrics`` say degraded, feedback and spend
  taken meanwhile reach Redis after the restart and both replicas agree again.

Redis is Debian's ``redis-server`` started in a temporary folder (``tests/redis_fixture.py``); the tests skip
only where it is not installed.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from routers import Queries
from routers.export import export_router, load_exported
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.strategies.adaptive import AdaptiveRouter

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from export_helpers import PRICES, point_upstreams  # noqa: E402
from proxy_helpers import CLIENT_KEY, ENV, LAM, ScriptedUpstream, chat, client, make_folder, metrics_of  # noqa: E402
from redis_fixture import RedisServer, redis_binary, redis_server  # noqa: E402,F401 - redis_server is a fixture

# ``table`` and ``replay`` are the fixtures of tests/routers/conftest.py.

pytestmark = pytest.mark.slow


def add_sections(folder: Path, text: str, name: str = "upstreams.toml") -> Path:
    """A copy of the folder's upstreams.toml with ``text`` (TOML sections) appended, written as ``name`` beside
    the folder (an export folder holds only its own files)."""
    path = folder.parent / name
    path.write_text((folder / "upstreams.toml").read_text() + "\n" + text)
    return path


@contextmanager
def replicas(folder: Path, upstreams: Path | None = None, n: int = 2, env: dict | None = None) -> Iterator[list]:
    """``n`` proxy replicas of one export folder, each its own process state (as separate hosts would be)."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                ProxyServer(build_proxy_app(folder, environ=env or ENV, upstreams_path=upstreams))
            )
            for _ in range(n)
        ]


def health(srv) -> dict:
    r = httpx.get(srv.base_url.replace("/v1", "/healthz"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def metric(text: str, line_start: str) -> float:
    """The value of the first /metrics line starting with ``line_start``."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting with {line_start!r}")


def wait_for(check, timeout: float = 10.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def state_section(url: str, reconnect_s: float = 1.0) -> str:
    return f'[state]\nurl = "{url}"\ntimeout_ms = 100\nreconnect_s = {reconnect_s}\n'


# ------------------------------------------------------------------------------------------------ breakers
def test_an_upstream_failing_through_a_is_skipped_by_b(
    table, replay, redis_server, tmp_path  # noqa: F811 - pytest fixture
):
    folder = make_folder(table, replay.base_url, tmp_path)
    routed = load_exported(folder).route(list(table.prompts))
    failing = max(set(routed), key=routed.count)
    prompts = [p for p, m in zip(table.prompts, routed, strict=True) if m == failing][:3]
    with ScriptedUpstream(["status_503"]) as bad:
        point_upstreams(folder, {failing: bad.base_url})
        shared = add_sections(folder, state_section(redis_server.url), "shared.toml")
        with replicas(folder, shared) as (a, b), client(a.base_url) as ca, client(b.base_url) as cb:
            assert health(a)["state"] == {"backend": "redis", "status": "ok", "namespace": health(a)["state"][
                "namespace"], "resyncs": 0}
            r = chat(ca, prompts[0])
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {failing}"
            tried_by_a = len(bad.requests)
            assert tried_by_a == 2  # the first attempt and its retry, then A's breaker opened
            # The trip reaches B through Redis pub/sub (milliseconds; the test measures it), then B's next
            # request skips the upstream without trying it.
            t0 = time.perf_counter()
            healthz_b = b.base_url.replace("/v1", "/healthz")
            wait_for(lambda: cb.get(healthz_b).json()["upstreams"][failing]["state"] == "cooling down", timeout=2,
                     what="A's breaker on B")
            print(f"\nbreaker propagation A -> B: {1000 * (time.perf_counter() - t0):.1f} ms (incl. /healthz polls)")
            r = chat(cb, prompts[1])
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == f"fallback from {failing}"
            assert len(bad.requests) == tried_by_a, "replica B tried the upstream that failed through A"
            assert health(b)["status"] == "degraded"  # one upstream cooling down, as on A
            # B's live telemetry has A's two failed attempts, though B never called that upstream.
            seen = wait_for(lambda: health(b)["telemetry"][failing]["attempts"] >= 2 and health(b)["telemetry"],
                            timeout=5, what="A's attempts in B's telemetry")
            assert seen[failing]["answers"] == 0 and seen[failing]["error_rate_ewma"] == 1.0
        # The same two replicas without [state]: B learns nothing from A and tries the failing upstream itself.
        local = add_sections(folder, "", "local.toml")
        with replicas(folder, local) as (a, b), client(a.base_url) as ca, client(b.base_url) as cb:
            before = len(bad.requests)
            chat(ca, prompts[0])
            assert len(bad.requests) == before + 2
            chat(cb, prompts[1])
            assert len(bad.requests) == before + 4
            assert "state" not in health(b)


# ------------------------------------------------------------------------------------------------ feedback
def _adaptive_folder(table, replay, tmp_path) -> tuple[Path, AdaptiveRouter]:
    """An adaptive export on the replay server, and an unexported twin (explore = 0: decisions are the
    posterior's, so one feedback can flip them)."""
    params = dict(smoothing=0.0, prior_strength=10.0, forgetting=0.97, explore=0.0, random_state=7)
    router = AdaptiveRouter(**params).fit(table)
    folder = export_router(router, tmp_path / "adaptive", lam=LAM, prices=PRICES)
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    return folder, copy.deepcopy(router)


def _ask(c: httpx.Client, prompt: str, category: str) -> str:
    r = c.post("/chat/completions", headers={"x-routelab-category": category},
               json={"model": "router", "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text
    return r.headers["x-routelab-choice"]


def _evidence(c: httpx.Client) -> dict:
    r = c.get("/feedback/state")
    assert r.status_code == 200, r.text
    return r.json()


def _same_evidence(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(
        abs(a - b) <= 1e-9 for c in x for m in x[c] for a, b in zip(x[c][m], y[c][m], strict=True)
    )


def test_a_feedback_posted_to_a_changes_the_next_decision_of_b(
    table, replay, redis_server, tmp_path  # noqa: F811 - pytest fixture
):
    folder, twin = _adaptive_folder(table, replay, tmp_path)
    easy = [p for p, c in zip(table.prompts, table.categories, strict=True) if c == "easy"]
    hard = [p for p, c in zip(table.prompts, table.categories, strict=True) if c == "hard"]

    def expected(prompt: str, cat: str) -> str:
        return twin.route(Queries.of([prompt], [cat]), LAM)[0]

    shared = add_sections(folder, state_section(redis_server.url), "shared.toml")
    with replicas(folder, shared) as (a, b), client(a.base_url) as ca, client(b.base_url) as cb:
        hard_before = [_ask(cb, p, "hard") for p in hard[:3]]
        assert _ask(cb, easy[0], "easy") == "cheap"
        choices = []
        delays = []
        for k in range(6):
            r = ca.post("/feedback", json={"category": "easy", "model": "cheap", "score": 0.0})
            assert r.status_code == 200 and r.json() == {"ok": True}, r.text
            twin.update("easy", "cheap", 0.0)
            # A's feedback reaches B through Redis pub/sub; B's next decision after it arrived uses it.
            t0 = time.perf_counter()
            wait_for(lambda: _same_evidence(_evidence(ca), _evidence(cb)), timeout=2, what="A's feedback on B")
            delays.append(time.perf_counter() - t0)
            got = _ask(cb, easy[k % len(easy)], "easy")
            assert got == expected(easy[k % len(easy)], "easy"), (k, got)
            choices.append(got)
        assert choices[0] != "cheap", "one feedback to A did not move B's decision"
        print(f"\nfeedback propagation A -> B: max {1000 * max(delays):.1f} ms over {len(delays)} feedbacks "
              "(incl. the GET /v1/feedback/state polls)")
        assert _same_evidence(_evidence(ca), _evidence(cb))
        assert [_ask(cb, p, "hard") for p in hard[:3]] == hard_before  # other categories untouched
        # Feedback to B reaches A the same way.
        for _ in range(30):
            assert cb.post("/feedback", json={"category": "easy", "model": "cheap", "score": 1.0}).status_code == 200
            twin.update("easy", "cheap", 1.0)
        wait_for(lambda: _same_evidence(_evidence(ca), _evidence(cb)), timeout=2, what="B's feedback on A")
        assert _ask(ca, easy[1], "easy") == expected(easy[1], "easy") == "cheap"
        assert _same_evidence(_evidence(ca), _evidence(cb))
        bad = ca.post("/feedback", json={"category": "easy", "model": "gpt-9", "score": 0.0})
        assert bad.status_code == 400 and "unknown model" in bad.json()["error"]["message"]
        # PUT /v1/feedback/state on A replaces the counts on B too (an operator restoring saved counts).
        saved = _evidence(ca)
        saved["easy"]["cheap"] = [0.0, 50.0]
        assert ca.put("/feedback/state", json=saved).status_code == 200
        wait_for(lambda: _same_evidence(_evidence(cb), saved), timeout=2, what="A's PUT on B")
        assert _ask(cb, easy[0], "easy") != "cheap"
        refused = cb.put("/feedback/state", json={"easy": {"gpt-9": [1, 0]}})
        assert refused.status_code == 400 and _same_evidence(_evidence(ca), saved)  # nothing changed anywhere


# ------------------------------------------------------------------------------------------------ budgets
def _spend_until_over(clients: list[httpx.Client], prompts: list[str], limit: float) -> float:
    """Requests, alternating replicas, until the spend reaches ``limit``; every one routed normally."""
    spent, k = 0.0, 0
    while spent < limit:
        assert k < 200, "the limit was never reached"
        r = chat(clients[k % len(clients)], prompts[k % len(prompts)])
        assert r.status_code == 200 and r.headers["x-routelab-reason"] == "routed", r.text
        spent += float(r.headers["x-routelab-cost-usd"])
        k += 1
    return spent


@pytest.mark.parametrize("on_exceeded", ["cheapest", "reject"])
def test_spend_on_both_replicas_adds_up_to_one_budget(
    table, replay, redis_server, tmp_path, on_exceeded  # noqa: F811 - pytest fixture
):
    folder = make_folder(table, replay.base_url, tmp_path)
    exported = load_exported(folder)
    # Prompts the router sends to a model other than the cheapest, so "cheapest" visibly changes the choice.
    pricey = [p for p, m in zip(table.prompts, exported.route(list(table.prompts)), strict=True) if m != "cheap"]
    limit = 0.002
    shared = add_sections(
        folder, state_section(redis_server.url) + f'[budget]\ndaily_usd = {limit}\non_exceeded = "{on_exceeded}"\n',
        "shared.toml",
    )
    with replicas(folder, shared) as (a, b), client(a.base_url) as ca, client(b.base_url) as cb:
        spent = _spend_until_over([ca, cb], pricey, limit)
        for c in (ca, cb):
            r = chat(c, pricey[0])
            if on_exceeded == "cheapest":
                assert r.status_code == 200, r.text
                assert r.headers["x-routelab-choice"] == "cheap" == r.headers["x-routelab-model"]
                spent += float(r.headers["x-routelab-cost-usd"])
            else:
                assert r.status_code == 429, r.text
                err = r.json()["error"]
                assert err["type"] == "insufficient_quota" and err["code"] == "budget_exceeded"
                assert err["message"].startswith("the daily spend budget of all clients ($0.002) is used up ($0.00")
                assert "on_exceeded" in err["message"] and int(r.headers["retry-after"]) > 0
        text = metrics_of(ca, a.base_url)
        assert metric(text, 'routelab_budget_limit_usd{scope="all",period="day"}') == limit
        for srv, c in ((a, ca), (b, cb)):  # each replica's view of the shared spend (refreshed every second)
            wait_for(lambda srv=srv, c=c: metric(metrics_of(c, srv.base_url), 'routelab_budget_spent_usd{scope="all"'
                                                 ',period="day"}') == pytest.approx(spent, rel=1e-9),
                     timeout=5, what="the budget's spend in /metrics")
        assert metric(text, f'routelab_budget_exceeded_total{{action="{on_exceeded}"}}') == 1
        assert metric(text, "routelab_state_roundtrip_seconds_count") > 0
    import redis

    r = redis.Redis.from_url(redis_server.url)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert float(r.get(f"routelab:budget:default:all:day:{day}")) == pytest.approx(spent, rel=1e-9)
    assert 0 < r.ttl(f"routelab:budget:default:all:day:{day}") <= 3 * 86400
    r.close()


def test_per_key_budget_and_local_counters_without_redis(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    other = "second-client-key-7890"
    env = {**ENV, "ROUTELAB_PROXY_KEYS": f"{CLIENT_KEY},{other}"}
    path = add_sections(folder, '[budget]\nper_key_daily_usd = 0.001\non_exceeded = "reject"\n', "budget.toml")
    with replicas(folder, path, n=1, env=env) as (a,), client(a.base_url) as c1, client(a.base_url, other) as c2:
        _spend_until_over([c1], list(table.prompts), 0.001)
        r = chat(c1, table.prompts[0])
        assert r.status_code == 429 and "client key" in r.json()["error"]["message"]
        assert chat(c2, table.prompts[0]).status_code == 200  # the other key has its own budget
        assert "state" not in health(a)


# ------------------------------------------------------------------------------------------------ Redis away
@pytest.mark.parametrize("persist", [True, False], ids=["redis-with-aof", "redis-restarted-empty"])
def test_redis_killed_mid_run_fails_no_request_and_resyncs(table, replay, tmp_path, persist):
    """With or without persistence, Redis ends up with every dollar and every feedback: what it lost in the
    crash, the replicas write back from what they last saw there (first replica wins), then add their deltas."""
    binary = redis_binary()
    if binary is None or importlib.util.find_spec("redis") is None:
        pytest.skip("needs redis-server (apt-get install redis-server) and the 'redis' package (.[server] extra)")
    folder, twin = _adaptive_folder(table, replay, tmp_path)
    prompts = list(zip(table.prompts, table.categories, strict=True))
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer(binary, persist=persist))
        shared = add_sections(
            folder, state_section(server.url, reconnect_s=0.2) + "[budget]\ndaily_usd = 1000.0\n", "shared.toml"
        )
        a, b = stack.enter_context(replicas(folder, shared))
        ca, cb = stack.enter_context(client(a.base_url)), stack.enter_context(client(b.base_url))
        statuses: list[int] = []
        costs: list[float] = []
        stop = threading.Event()

        def load() -> None:  # requests alternating replicas, all the time
            with client(a.base_url) as la, client(b.base_url) as lb:
                k = 0
                while not stop.is_set():
                    p, cat = prompts[k % len(prompts)]
                    r = (la, lb)[k % 2].post("/chat/completions", headers={"x-routelab-category": cat},
                                             json={"model": "router", "messages": [{"role": "user", "content": p}]})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        costs.append(float(r.headers["x-routelab-cost-usd"]))
                    k += 1

        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_for(lambda: len(statuses) >= 20, what="20 requests before the kill")
            server.kill()
            n_at_kill = len(statuses)
            for srv in (a, b):
                wait_for(lambda srv=srv: health(srv)["state"]["status"] == "degraded", what="degraded /healthz")
                h = health(srv)
                assert h["status"] == "degraded" and "Redis unreachable" in h["state"]["detail"]
                text = metrics_of(ca, srv.base_url)
                assert metric(text, "routelab_state_degraded") == 1 and metric(text, "routelab_state_redis_up") == 0
            # Feedback while Redis is away: counted on A now, and for everyone after the restart.
            for _ in range(3):
                r = ca.post("/feedback", json={"category": "easy", "model": "cheap", "score": 0.0})
                assert r.status_code == 200, r.text
                twin.update("easy", "cheap", 0.0)
            assert not _same_evidence(_evidence(ca), _evidence(cb))
            wait_for(lambda: len(statuses) >= n_at_kill + 20, what="20 requests while Redis is away")
            n_at_restart = len(statuses)
            server.start()
            for srv in (a, b):
                wait_for(lambda srv=srv: health(srv)["state"]["status"] == "ok", what="/healthz ok after restart")
            wait_for(lambda: len(statuses) >= n_at_kill + 40, what="requests after the restart")
        finally:
            stop.set()
            thread.join(timeout=30)
        assert statuses.count(200) == len(statuses), f"failed requests: {[s for s in statuses if s != 200]}"
        print(f"\n{len(statuses)} requests, {n_at_restart - n_at_kill} while Redis was away, "
              f"{len(statuses) - statuses.count(200)} failed")
        for srv in (a, b):
            text = metrics_of(ca, srv.base_url)
            assert metric(text, "routelab_state_resyncs_total") >= 1 and metric(text, "routelab_state_degraded") == 0
        # Both replicas hold the evidence of every feedback (taken while Redis was away included).
        want = twin.get_state() if hasattr(twin, "get_state") else None
        wait_for(lambda: _same_evidence(_evidence(ca), _evidence(cb)), what="both replicas' evidence to agree")
        if isinstance(want, dict) and "easy" in want:
            assert _same_evidence({"easy": _evidence(ca)["easy"]}, {"easy": want["easy"]})
        # Every dollar spent, before, during and after the outage, is in the one shared budget.
        import redis

        r = redis.Redis.from_url(server.url)
        key = f"routelab:budget:default:all:day:{time.strftime('%Y-%m-%d', time.gmtime())}"
        total = sum(costs)
        try:
            wait_for(lambda: abs(float(r.get(key) or 0) - total) <= 1e-9 * max(1.0, total), what="the shared spend")
        except AssertionError:
            raise AssertionError(f"shared spend {r.get(key)!r} in Redis, but the answers cost {total!r}") from None
        r.close()
