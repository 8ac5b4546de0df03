"""``POST /v1/feedback`` with the answer's ``request_id``: validated (a bad one is refused and nothing is counted),
written to the decision log as a ``feedback`` record when a log is attached, and turned by ``to-outcomes`` into
an outcome of the model that answered, on the prompt the log stored. Real proxy of an adaptive export, the replay
server as upstream (loopback)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from evals.production.log_reader import read_log
from evals.production.records import prompt_hash
from evals.production.to_outcomes import FEEDBACK_GRADER, to_outcomes
from routers.export import export_router
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.strategies.adaptive import AdaptiveRouter

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, point_upstreams  # noqa: E402
from proxy_helpers import ENV, LAM, chat, client, metrics_of  # noqa: E402


@contextmanager
def adaptive_proxy(table, replay, tmp_path: Path, log: str = ""):
    router = AdaptiveRouter(explore=0.0, prior_strength=10.0, forgetting=0.97, random_state=7).fit(table)
    folder = export_router(router, tmp_path / "adaptive", lam=LAM, prices=PRICES)
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    if log:
        (folder / "upstreams.toml").write_text((folder / "upstreams.toml").read_text() + log)
    app = build_proxy_app(folder, environ=ENV)
    with ProxyServer(app) as srv:
        yield srv, app.state.proxy


def log_section(log_dir: Path) -> str:
    return f"\n[log]\ndir = {json.dumps(str(log_dir))}\nstore_text = true\ntelemetry_every_s = 0\n"


def test_feedback_naming_its_answer_is_logged_and_becomes_a_production_outcome(table, replay, tmp_path):
    log_dir = tmp_path / "logs"
    prompts, cats = list(table.prompts[:8]), [str(c) for c in table.categories[:8]]
    with adaptive_proxy(table, replay, tmp_path, log_section(log_dir)) as (srv, st), client(srv.base_url) as c:
        sent = []
        for i, (p, cat) in enumerate(zip(prompts, cats, strict=True)):
            r = chat(c, p)
            assert r.status_code == 200
            rid, model = r.headers["x-routelab-request-id"], r.headers["x-routelab-model"]
            score = float(i % 2)
            ok = c.post("/feedback", json={"category": cat, "model": model, "score": score, "request_id": rid})
            assert ok.status_code == 200 and ok.json() == {"ok": True}, ok.text
            sent.append((rid, model, score, cat, p))
        anonymous = c.post("/feedback", json={"category": cats[0], "model": sent[0][1], "score": 1.0})
        assert anonymous.status_code == 200  # a request id stays optional
        assert st.decision_log.flush()
        text = metrics_of(c, srv.base_url)
    assert 'routelab_decision_log_written_total{kind="feedback"} 9' in text
    read = read_log(log_dir)
    assert not read.errors
    assert [(f.request_id, f.model, f.score, f.category) for f in read.feedback] == [
        *((rid, m, s, cat) for rid, m, s, cat, _ in sent), (None, sent[0][1], 1.0, cats[0])]
    built = to_outcomes(read, origin=str(log_dir))
    assert built.grader == FEEDBACK_GRADER and built.left_out["feedback without request id"] == 1
    frame = built.table.frame
    kept = [s for s in sent if s[1] in built.models]
    assert built.samples_from_feedback == len(kept) == built.table.n_samples > 0
    by_id = {row.request_id: row for row in frame.itertuples()}
    for rid, model, score, cat, prompt in kept:
        row = by_id[rid]
        assert (row.model, row.score, row.prompt, row.sample_id) == (model, score, prompt, prompt_hash(prompt))
        assert row.response and row.cost_usd > 0 and row.grader == FEEDBACK_GRADER
        assert row.category == cat  # no category header on the request: the feedback's category


@pytest.mark.parametrize("bad", [5, "", "has space", "x" * 129, "new\nline", ["list"]])
def test_a_bad_request_id_is_refused_and_nothing_is_counted_or_logged(table, replay, tmp_path, bad):
    log_dir = tmp_path / "logs"
    with adaptive_proxy(table, replay, tmp_path, log_section(log_dir)) as (srv, st), client(srv.base_url) as c:
        before = c.get("/feedback/state").json()
        r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 0.0, "request_id": bad})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["param"] == "request_id" and "x-routelab-request-id" in err["message"]
        assert c.get("/feedback/state").json() == before
        assert st.decision_log.flush()
    assert read_log(log_dir).feedback == []


def test_feedback_with_a_request_id_works_without_a_log(table, replay, tmp_path):
    with adaptive_proxy(table, replay, tmp_path) as (srv, st), client(srv.base_url) as c:
        assert not hasattr(st, "decision_log")
        r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 1.0, "request_id": "abc123"})
        assert r.status_code == 200 and r.json() == {"ok": True}


def test_a_non_adaptive_export_with_a_log_logs_feedback_without_counting_it(table, replay, tmp_path):
    """Feedback that names its request is evidence for a refit whatever the router: with a decision log a
    non-adaptive export takes it (checked like any feedback), logs it and says it was not counted; without a log
    it still answers 404, naming both ways to get feedback taken."""
    from routers import make_router

    folder = export_router(make_router("category").fit(table), tmp_path / "cat", lam=LAM, prices=PRICES)
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    plain = build_proxy_app(folder, environ=ENV)
    with ProxyServer(plain) as srv, client(srv.base_url) as c:
        r = c.post("/feedback", json={"category": "easy", "model": table.models[0], "score": 1.0})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_adaptive"
        assert "decision log ([log]" in r.json()["error"]["message"]
    log_dir = tmp_path / "logs"
    (folder / "upstreams.toml").write_text((folder / "upstreams.toml").read_text() + log_section(log_dir))
    app = build_proxy_app(folder, environ=ENV)
    with ProxyServer(app) as srv, client(srv.base_url) as c:
        answer = chat(c, table.prompts[0])
        rid, model = answer.headers["x-routelab-request-id"], answer.headers["x-routelab-model"]
        ok = c.post("/feedback", json={"category": "easy", "model": model, "score": 0.0, "request_id": rid})
        assert ok.status_code == 200 and ok.json() == {"ok": True, "counted": False}, ok.text
        bad = c.post("/feedback", json={"category": "easy", "model": "no-such-model", "score": 1.0})
        assert bad.status_code == 400 and "unknown model" in bad.json()["error"]["message"]
        assert c.get("/feedback/state").status_code == 404  # nothing adaptive to read or restore
        assert app.state.proxy.decision_log.flush()
    fb = read_log(log_dir).feedback
    assert [(f.request_id, f.model, f.score) for f in fb] == [(rid, model, 0.0)]
