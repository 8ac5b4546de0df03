"""The adaptive router exported: the same decisions as the workbench, and the same learning from feedback.

* In-process (small tables): the runtime's ``feedback`` and the workbench's ``update`` move the decisions
  alike, the evidence round-trips as JSON between them, errors are clear, and feedback is thread-safe.
* PARITY on MMLU-Pro (slow): at three operating points, for the registry's default adaptive router and a
  reactive one, the export decides like the workbench on every test prompt, fresh and after the same few
  hundred feedbacks; replaying the test stream through the export (route one request, feed back its recorded
  score) reproduces the evaluator's replay decision for decision; the MLflow pyfunc agrees too.
* Through the proxy (the replay server as upstream, no network): failing feedback for the cheap model in one
  category backs that category off to a stronger model (``x-routelab-choice``), success feedback brings it
  back; bad feedback is refused with 400 and a reason, no key with 401, a non-adaptive export with 404.
"""

from __future__ import annotations

import copy
import json
import socket
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from evals.exceptions import SchemaError
from evals.serving import build_replay_app
from routers import Queries, make_router, runtime
from routers.export import ExportError, export_router, load_exported
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.strategies.adaptive import AdaptiveRouter

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PARITY_TRAIN, PRICES, mmlu_parity_setup, point_upstreams, small_table  # noqa: E402

CLIENT_KEY = "adaptive-client-key"
ENV = {"ROUTELAB_PROXY_KEYS": CLIENT_KEY, "TEST_UPSTREAM_KEY": "sk-replay"}
LAM = 0.05  # on the small table: cheap is worth it in "easy" while its success stays above ~0.92
N_FEEDBACK = 400  # MMLU-Pro parity: feedbacks applied (the first test prompts, in order)


@pytest.fixture(scope="module")
def table():
    return small_table()


def _reactive(**extra) -> AdaptiveRouter:
    """An adaptive router that moves quickly: per-category prior, weak, short memory, frequent re-tries."""
    params = dict(smoothing=0.0, prior_strength=3.0, forgetting=0.9, explore=0.2, random_state=7)
    return AdaptiveRouter(**(params | extra))


# ------------------------------------------------------------------------------------------- in process
def test_export_is_adaptive_and_decides_like_the_workbench(table, tmp_path):
    router = _reactive().fit(table)
    queries = Queries.from_table(table)
    prompts = list(table.prompts)
    for lam in (0.0, 0.004, LAM, 10.0):
        exported = load_exported(export_router(router, tmp_path / f"a-{lam}", lam=lam, prices=PRICES))
        assert exported.adaptive and exported.manifest["adaptive"] is True
        assert exported.manifest["state"]["kind"] == "adaptive"
        got = exported.route_indices(prompts, categories=list(queries.categories))
        assert got.tolist() == router.route_indices(queries, lam).tolist()
        assert exported.route(prompts) == router.route(prompts, lam)  # no categories: the unknown row
        np.testing.assert_array_equal(
            exported.state.predict_quality(prompts, list(queries.categories)), router.predict_quality(queries)
        )
    readme = (tmp_path / f"a-{LAM}" / "README.md").read_text()
    assert "/v1/feedback" in readme and "x-routelab-category" in readme
    assert "lost on restart" in readme and "get_evidence" in readme


def test_runtime_feedback_learns_exactly_like_update(table):
    router = _reactive().fit(table)
    meta, arrays = router.export_state()
    rt = runtime.load_state(json.loads(json.dumps(meta)), arrays)  # what an export folder stores
    prompts, cats = list(table.prompts), [str(c) for c in table.categories]
    rng = np.random.default_rng(3)
    # Known, empty, absent and unseen categories; every model; scores 0, 1 and in between.
    stream = [
        (c, m, float(s))
        for c, m, s in zip(
            rng.choice(["easy", "medium", "hard", "", None, "never-seen"], 300),
            rng.choice(list(router.models_), 300),
            rng.choice([0.0, 1.0, 0.25, 0.9], 300),
            strict=True,
        )
    ]
    changed = 0
    before = router.route_indices(Queries.of(prompts, cats), LAM)
    for k, (c, m, s) in enumerate(stream):
        router.update(c, m, s)
        rt.feedback(c, m, s)
        if k % 25 == 0:
            mine = router.route_indices(Queries.of(prompts, cats), LAM)
            assert rt.route_indices(prompts, LAM, cats).tolist() == mine.tolist(), f"after {k + 1} feedbacks"
            assert rt.route_indices(prompts, LAM).tolist() == router.route_indices(Queries.of(prompts), LAM).tolist()
            changed += int((mine != before).sum())
    assert changed > 0  # the feedback really moved decisions
    np.testing.assert_array_equal(rt.predict_quality(prompts, cats), router.predict_quality(Queries.of(prompts, cats)))
    assert rt.get_evidence() == router.get_state()  # the same JSON state, "" = the unknown category


def test_evidence_moves_between_workbench_and_export_as_json(table):
    router = _reactive(explore=0.0).fit(table)
    easy = Queries.of(["easy question number 0: please think hard "], ["easy"])
    assert router.route(easy, LAM) == ["cheap"]
    for _ in range(5):
        router.update("easy", "cheap", 0.0)
    assert router.route(easy, LAM) != ["cheap"]
    fresh = AdaptiveRouter(**router.get_params()).fit(table)
    rt = runtime.load_state(*fresh.export_state())
    assert rt.route(list(easy.prompts), LAM, ["easy"]) == ["cheap"]
    rt.set_evidence(json.dumps(router.get_state()))  # a workbench router's state, as JSON text
    assert rt.route(list(easy.prompts), LAM, ["easy"]) == router.route(easy, LAM)
    fresh.set_state(rt.get_evidence())  # and back
    assert fresh.route(easy, LAM) == router.route(easy, LAM)
    rt.reset_evidence()
    assert rt.route(list(easy.prompts), LAM, ["easy"]) == ["cheap"]
    # An export written after feedback carries that evidence.
    rt2 = runtime.load_state(*router.export_state())
    assert rt2.get_evidence() == router.get_state()


def test_feedback_and_state_errors_are_clear_and_change_nothing(table, tmp_path):
    router = _reactive().fit(table)
    rt = runtime.load_state(*router.export_state())
    before = rt.get_evidence()
    for model, score, match in [
        ("nope", 1.0, "unknown model 'nope'; models: cheap, mid, big"),
        (None, 1.0, "unknown model None"),
        ("cheap", 1.5, r"score must be in \[0, 1\], got 1.5"),
        ("cheap", -0.1, r"score must be in \[0, 1\]"),
        ("cheap", float("nan"), r"score must be in \[0, 1\], got nan"),
        ("cheap", "0.5", r"score must be a number in \[0, 1\], got '0.5'"),
        ("cheap", True, r"score must be a number in \[0, 1\], got True"),
        ("cheap", None, "score must be a number"),
    ]:
        with pytest.raises(ValueError, match=match):
            rt.feedback("easy", model, score)
    assert rt.get_evidence() == before
    with pytest.raises(SchemaError, match="score must be a number"):
        router.update("easy", "cheap", "bad")
    for state, match in [
        ("{not json", "not valid JSON"),
        ([1, 2], "must be {category: {model: \\[successes, failures\\]}}, got list"),
        ({"zzz": {}}, "unknown category 'zzz'"),
        ({"easy": {"nope": [1, 0]}}, "unknown model 'nope' in category 'easy'"),
        ({"easy": {"cheap": [1, -1]}}, r"state\['easy'\]\['cheap'\] must be \[successes, failures\] >= 0"),
        ({"easy": {"cheap": [1, 2, 3]}}, "must be"),
        ({"easy": {"cheap": "x"}}, "must be"),
        ({"easy": [1, 2]}, r"state\['easy'\] must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            rt.set_evidence(state)
    assert rt.get_evidence() == before
    # Kinds that do not learn refuse feedback; so does an export of them.
    category = make_router("category").fit(table)
    with pytest.raises(ValueError, match="kind 'category' does not learn from feedback"):
        runtime.load_state(*category.export_state()).feedback("easy", "cheap", 1.0)
    exported = load_exported(export_router(category, tmp_path / "cat", lam=LAM))
    assert not exported.adaptive
    with pytest.raises(ExportError, match="not adaptive"):
        exported.feedback("easy", "cheap", 1.0)
    adaptive = load_exported(export_router(router, tmp_path / "ada", lam=LAM))
    with pytest.raises(ExportError, match=r"\[0, 1\]"):
        adaptive.feedback("easy", "cheap", 2.0)
    adaptive.feedback("easy", "cheap", 0.0)
    assert adaptive.state.get_evidence()["easy"]["cheap"] == [0.0, 1.0]


def test_a_state_whose_arrays_do_not_fit_is_refused(table):
    meta, arrays = _reactive().fit(table).export_state()
    with pytest.raises(ValueError, match="disagree with its 3 categories and 3 models"):
        runtime.load_state(meta, {**arrays, "evidence": arrays["evidence"][:2]})
    with pytest.raises(ValueError, match="forgetting in \\(0, 1\\]"):
        runtime.load_state({**meta, "forgetting": 1.5}, arrays)
    with pytest.raises(ValueError, match="finite counts >= 0"):
        runtime.load_state(meta, {**arrays, "evidence": -np.ones_like(arrays["evidence"])})


def test_feedback_is_thread_safe(table):
    # No forgetting and 0/1 scores: every count is an exact integer, whatever the order of the threads.
    router = AdaptiveRouter(forgetting=1.0).fit(table)
    rt = runtime.load_state(*router.export_state())
    prompts = list(table.prompts)
    errors: list[BaseException] = []

    def feed(t: int) -> None:
        try:
            for i in range(400):
                rt.feedback(["easy", "medium", "hard"][i % 3], "cheap", float((i + t) % 2))
                if i % 50 == 0:
                    rt.route_indices(prompts, LAM)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    ev = rt.get_evidence()
    # Per category 8 threads x 133-134 feedbacks; thread t's parity of (i + t) decides success.
    total = sum(sum(ev[c]["cheap"]) for c in ("easy", "medium", "hard"))
    assert total == 8 * 400
    assert sum(ev[c]["cheap"][0] for c in ("easy", "medium", "hard")) == 8 * 200


# ------------------------------------------------------------------------------------------- MMLU-Pro parity
_SETUPS: dict = {}


def _mmlu_adaptive(config: str):
    """(test table, fitted adaptive router, three operating points, {lam: the evaluator's replay decisions})."""
    if config in _SETUPS:
        return _SETUPS[config]
    test, routers = mmlu_parity_setup()
    if config == "default":  # the registry's default, exactly as the other parity tests fit it
        router, lams, measured = routers["adaptive"]
    else:
        from evals import sources

        split = sources.load("mmlu-pro").split(random_state=0)
        train = split.train.select(sample_ids=list(split.train.sample_ids[:PARITY_TRAIN]))
        router = _reactive().fit(train)
        policy = router.policy(test)
        grid = np.asarray(policy.grid(60))
        lams = sorted({float(np.quantile(grid, q)) for q in (0.25, 0.5, 0.75)})
        measured = {lam: policy.outcomes(lam)[0] for lam in lams}
    _SETUPS[config] = (test, router, lams, measured)
    return _SETUPS[config]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["default", "reactive"])
def test_export_matches_the_workbench_fresh_and_after_the_same_feedback(config, shared_data, tmp_path):
    test, fitted, lams, _ = _mmlu_adaptive(config)
    prompts, cats = list(test.prompts), [str(c) for c in test.categories]
    queries = Queries.of(prompts, cats)
    assert len(prompts) > 2000 and len(lams) == 3
    moved = 0
    for lam in lams:
        router = copy.deepcopy(fitted)  # the session's fitted router stays untouched
        exported = load_exported(export_router(router, tmp_path / f"{lam:.3e}", lam=lam, table_card=test.card))
        fresh = router.route_indices(queries, lam)
        got = exported.route_indices(prompts, categories=cats)
        assert np.flatnonzero(got != fresh).size == 0, f"{config} at lam={lam:g}: fresh decisions differ"
        assert exported.route(prompts) == router.route(Queries.of(prompts), lam)  # no categories
        # The same feedback to both, in order: the recorded score of the model routed to, with the category.
        for i in range(N_FEEDBACK):
            j = int(exported.route_indices([prompts[i]], categories=[cats[i]])[0])
            assert j == int(router.route_indices(Queries.of([prompts[i]], [cats[i]]), lam)[0])
            model, score = router.models_[j], float(test.quality[i, j])
            router.update(cats[i], model, score)
            exported.feedback(cats[i], model, score)
        after = router.route_indices(queries, lam)
        got = exported.route_indices(prompts, categories=cats)
        mismatch = np.flatnonzero(got != after)
        assert mismatch.size == 0, f"{config} at lam={lam:g}: {mismatch.size} of {len(prompts)} differ after feedback"
        assert exported.state.get_evidence() == router.get_state()
        moved += int((after != fresh).sum())
    assert moved > 0, "the feedback changed no decision: the check after feedback would prove nothing"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["default", "reactive"])
def test_replaying_the_test_stream_through_the_export_reproduces_the_evaluation(config, shared_data, tmp_path):
    test, router, lams, measured = _mmlu_adaptive(config)
    prompts, cats = list(test.prompts), [str(c) for c in test.categories]
    for lam in lams:
        exported = load_exported(export_router(router, tmp_path / f"{lam:.3e}", lam=lam))
        choice = np.empty(len(prompts), dtype=int)
        for i, (p, c) in enumerate(zip(prompts, cats, strict=True)):  # what a deployment sees, in arrival order
            choice[i] = exported.route_indices([p], categories=[c])[0]
            exported.feedback(c, exported.models[choice[i]], float(test.quality[i, choice[i]]))
        mismatch = np.flatnonzero(choice != measured[lam])
        assert mismatch.size == 0, f"{config} at lam={lam:g}: {mismatch.size} of {len(prompts)} decisions differ"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["default", "reactive"])
def test_pyfunc_decides_like_the_workbench(config, shared_data, tmp_path, mlflow_uri):
    import mlflow

    from routers.export import log_exported

    test, router, lams, _ = _mmlu_adaptive(config)
    with mlflow.start_run():
        info = log_exported(export_router(router, tmp_path / config, lam=lams[1]))
    model = mlflow.pyfunc.load_model(info.model_uri)
    frame = pd.DataFrame({"prompt": list(test.prompts), "category": [str(c) for c in test.categories]})
    index = {m: i for i, m in enumerate(router.models_)}
    queries = Queries.of(list(test.prompts), list(frame["category"]))
    for lam in lams:
        out = model.predict(frame, params=None if lam == lams[1] else {"lam": lam})
        got = np.array([index[m] for m in out["model"]])
        mismatch = np.flatnonzero(got != router.route_indices(queries, lam))
        assert mismatch.size == 0, f"{config} at lam={lam:g}: {mismatch.size} of {len(frame)} decisions differ"
        np.testing.assert_allclose(
            out["predicted_quality"], router.predict_quality(queries)[np.arange(len(frame)), got], rtol=1e-12
        )


# ------------------------------------------------------------------------------------------- proxy
def _client(base_url: str, key: str | None = CLIENT_KEY) -> httpx.Client:
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, transport=transport, timeout=30)


def _ask(c: httpx.Client, prompt: str, category: str | None) -> httpx.Response:
    headers = {"x-routelab-category": category} if category else {}
    r = c.post(
        "/chat/completions",
        headers=headers,
        json={"model": "router", "messages": [{"role": "user", "content": prompt}]},
    )
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def replay(table):
    with ProxyServer(build_replay_app(table)) as srv:
        yield srv


@pytest.fixture()
def adaptive_proxy(table, replay, tmp_path):
    """(proxy server, an unexported twin of the exported router): explore = 0, so every decision is the posterior's."""
    router = _reactive(explore=0.0, prior_strength=10.0, forgetting=0.97).fit(table)
    folder = export_router(router, tmp_path / "adaptive", lam=LAM, prices=PRICES)
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as srv:
        yield srv, copy.deepcopy(router)


def test_proxy_backs_off_on_failing_feedback_and_recovers(adaptive_proxy, table):
    proxy, twin = adaptive_proxy
    cost = dict(zip(twin.models_, twin.cost_per_model_, strict=True))
    easy = [p for p, c in zip(table.prompts, table.categories, strict=True) if c == "easy"]
    hard = [p for p, c in zip(table.prompts, table.categories, strict=True) if c == "hard"]

    def expected(prompt: str, cat: str) -> str:
        return twin.route(Queries.of([prompt], [cat]), LAM)[0]

    def send(c: httpx.Client, score: float) -> None:
        r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": score})
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text
        twin.update("easy", "cheap", score)

    with _client(proxy.base_url) as c:
        hard_before = [_ask(c, p, "hard").headers["x-routelab-choice"] for p in hard[:5]]
        r = _ask(c, easy[0], "easy")
        assert r.headers["x-routelab-choice"] == "cheap" == r.headers["x-routelab-model"]
        assert r.json()["model"] == "cheap"  # the replay upstream answered as the cheap model
        # The cheap model starts failing in "easy": within a few feedbacks "easy" goes to a stronger model,
        # and stays there while the failures go on.
        choices = []
        for k in range(8):
            send(c, 0.0)
            got = _ask(c, easy[k % len(easy)], "easy").headers["x-routelab-choice"]
            assert got == expected(easy[k % len(easy)], "easy")
            choices.append(got)
        backed_off = next((k + 1 for k, m in enumerate(choices) if m != "cheap"), None)
        assert backed_off is not None and backed_off <= 3, choices
        assert "cheap" not in choices[backed_off - 1 :], choices
        stronger = _ask(c, easy[1], "easy")
        assert stronger.headers["x-routelab-choice"] in ("mid", "big")
        assert cost[stronger.headers["x-routelab-choice"]] > cost["cheap"]
        assert stronger.headers["x-routelab-reason"] == "routed" and stronger.json()["model"] != "cheap"
        # Without the header (the unknown category) and in other categories nothing changed.
        assert [_ask(c, p, "hard").headers["x-routelab-choice"] for p in hard[:5]] == hard_before
        assert _ask(c, easy[2], None).headers["x-routelab-choice"] == expected(easy[2], "")
        # The cheap model does well again (re-tries succeed): "easy" recovers to it.
        recovered = None
        for k in range(200):
            send(c, 1.0)
            got = _ask(c, easy[k % len(easy)], "easy").headers["x-routelab-choice"]
            assert got == expected(easy[k % len(easy)], "easy")
            if got == "cheap":
                recovered = k + 1
                break
        assert recovered is not None, "never recovered to the cheap model"
        assert recovered > 1  # eight failures are not undone by one success: the evidence fades gradually
        assert all(_ask(c, p, "easy").headers["x-routelab-choice"] == "cheap" for p in easy[:5])


def test_proxy_feedback_refuses_bad_bodies_and_missing_keys(adaptive_proxy, table):
    proxy, twin = adaptive_proxy
    easy = next(p for p, c in zip(table.prompts, table.categories, strict=True) if c == "easy")
    with _client(proxy.base_url, key=None) as anon, _client(proxy.base_url, key="wrong") as wrong:
        for c in (anon, wrong):
            r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 0.0})
            assert r.status_code == 401 and "bearer key" in r.json()["error"]["message"]
    with _client(proxy.base_url) as c:
        # Each message names the problem (the words that must appear in it).
        for body, words in [
            (b"{not json", ("JSON object",)),
            (b"[1, 2]", ("JSON object",)),
            (json.dumps({"category": "easy", "score": 0.0}).encode(), ('"model": str',)),
            (json.dumps({"category": "easy", "model": "cheap"}).encode(), ('"score": number',)),
            (json.dumps({"category": "easy", "model": "cheap", "score": "bad"}).encode(), ("score", "number")),
            (json.dumps({"category": "easy", "model": "gpt-9", "score": 0.0}).encode(), ("model", "cheap, mid, big")),
            (json.dumps({"category": "easy", "model": "cheap", "score": 1.5}).encode(), ("score", "[0, 1]")),
            (json.dumps({"category": "easy", "model": "cheap", "score": -1}).encode(), ("score", "[0, 1]")),
        ]:
            r = c.post("/feedback", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (body, r.text)
            message = r.json()["error"]["message"]
            assert all(w in message for w in words), (body, message)
        # Nothing was counted: however many refused failures, "easy" still goes to the cheap model.
        for _ in range(5):
            c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 7})
        assert _ask(c, easy, "easy").headers["x-routelab-choice"] == "cheap"


def test_non_adaptive_exports_answer_404_to_feedback(table, replay, tmp_path):
    folder = export_router(make_router("category").fit(table), tmp_path / "cat", lam=LAM, prices=PRICES)
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as srv, _client(srv.base_url) as c:
        r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 1.0})
        assert r.status_code == 404 and "not adaptive" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "not_adaptive"


def test_proxy_state_endpoint_saves_and_restores_the_counts(adaptive_proxy, table):
    proxy, _ = adaptive_proxy
    easy = next(p for p, c in zip(table.prompts, table.categories, strict=True) if c == "easy")
    with _client(proxy.base_url) as c:
        before = c.get("/feedback/state")
        assert before.status_code == 200
        for _ in range(8):  # the cheap model fails on "easy": the proxy backs off
            assert c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 0.0}).json() == {"ok": True}
        assert _ask(c, easy, "easy").headers["x-routelab-choice"] != "cheap"
        saved = c.get("/feedback/state").json()
        assert saved["easy"]["cheap"][1] > before.json()["easy"]["cheap"][1]  # failures were counted
        # A restarted worker restores the counts it saved ...
        assert c.put("/feedback/state", json=before.json()).json() == {"ok": True}
        assert _ask(c, easy, "easy").headers["x-routelab-choice"] == "cheap"
        assert c.put("/feedback/state", json=saved).json() == {"ok": True}
        assert _ask(c, easy, "easy").headers["x-routelab-choice"] != "cheap"
        # ... and state that does not fit this router is refused, naming what is wrong, changing nothing.
        r = c.put("/feedback/state", json={"easy": {"gpt-9": [1, 0]}})
        assert r.status_code == 400 and "gpt-9" in r.json()["error"]["message"]
        assert c.get("/feedback/state").json() == saved
        metrics = c.get(proxy.base_url.replace("/v1", "/metrics")).text
        assert 'routelab_feedback_total{model="cheap"} 8' in metrics
    with _client(proxy.base_url, key=None) as anon:
        assert anon.get("/feedback/state").status_code == 401
