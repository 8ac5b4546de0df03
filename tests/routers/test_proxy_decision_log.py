"""The proxy's decision log ([log]): one readable record per request, rotation, no keys, texts opt-in, and a log
directory that stops taking writes mid-run never fails a request (the drops are counted).

Real proxy, real replay server (or a scripted upstream) on loopback; the log is read back with
``evals.production.log_reader.read_log``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from evals.exceptions import ConfigError
from evals.production.log_reader import list_segments, read_log
from evals.production.offpolicy import LoggedDecisions
from evals.production.records import DecisionRecord, prompt_hash
from routers.export import load_exported
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.proxy.decision_log import RETRY_S, DecisionLog
from routers.export.settings.log import LogSettings

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import (  # noqa: E402
    CLIENT_KEY,
    ENV,
    UPSTREAM_KEY,
    ScriptedUpstream,
    chat,
    client,
    make_folder,
    metrics_of,
)


def add_sections(folder: Path, text: str) -> None:
    """Append sections to a folder's upstreams.toml (what an owner does)."""
    path = folder / "upstreams.toml"
    path.write_text(path.read_text() + "\n" + text.strip() + "\n")


def log_section(log_dir: Path, **keys) -> str:
    """A ``[log]`` section writing to ``log_dir`` with ``keys``."""
    values = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "[log]\n" + "\n".join([f"dir = {json.dumps(str(log_dir))}", *values])


@contextmanager
def serving(folder: Path):
    app = build_proxy_app(folder, environ=ENV)
    with ProxyServer(app) as srv:
        yield srv, app.state.proxy


def metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {label} not in /metrics")


def test_every_request_becomes_one_readable_record_matching_its_answer(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, log_section(log_dir) + "\n[exploration]\nepsilon = 0")
    exported = load_exported(folder)
    prompts = table.prompts[::3]
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        answers = []
        for i, p in enumerate(prompts):
            r = chat(c, p, **({"stream": True} if i % 4 == 0 else {}))
            assert r.status_code == 200, r.text
            answers.append(r)
        assert st.decision_log.flush()
        text = metrics_of(c, srv.base_url)
    result = read_log(log_dir)
    assert not result.errors, result.summary()
    assert len(result.records) == len(prompts)
    by_id = {rec.request_id: rec for rec in result.records}
    for p, r in zip(prompts, answers, strict=True):
        rec = by_id[r.headers["x-routelab-request-id"]]
        decision = exported.decide(p)[0]
        assert rec.prompt_hash == prompt_hash(p) and rec.route == "router" and rec.status == 200
        assert rec.chosen == decision.model == r.headers["x-routelab-choice"]
        assert rec.answered_by == r.headers["x-routelab-model"] and rec.reason == "routed"
        assert rec.propensity == 1.0 and rec.epsilon == 0.0 and not rec.explored and rec.arm == "none"
        assert [c.model for c in rec.candidates] == list(exported.models)
        chosen = rec.candidates[rec.chosen_index]
        assert chosen.predicted_quality == pytest.approx(decision.predicted_quality, rel=1e-12)
        assert chosen.predicted_cost == pytest.approx(decision.predicted_cost_usd, rel=1e-12)
        if "x-routelab-cost-usd" in r.headers:  # non-streamed answers carry usage, and the cost in a header
            assert rec.input_tokens and rec.output_tokens
            assert rec.cost_usd == pytest.approx(float(r.headers["x-routelab-cost-usd"]), abs=1e-8)
        assert rec.latency_s > 0 and rec.prompt_text is None and rec.answer_text is None
    # The off-policy reader recomputes every propensity from the logged candidates and accepts them all.
    logged, skipped = LoggedDecisions.from_records(result.records)
    assert len(logged) == len(prompts) and not skipped
    assert metric(text, "routelab_decision_log_written_total", 'kind="decision"') == len(prompts)
    assert metric(text, "routelab_decision_log_dropped_total", 'reason="queue_full"') == 0


def test_shutdown_writes_what_is_queued_and_other_features_write_through_the_same_log(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, log_section(log_dir))
    extra = DecisionRecord(request_id="from-another-feature", time=time.time(), route="router",
                           prompt_hash=prompt_hash("x"), status=200, latency_s=0.0)
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        ids = [chat(c, p).headers["x-routelab-request-id"] for p in table.prompts[:20]]
        assert st.decision_log.write(extra)
    # No flush: stopping the server wrote everything that was queued.
    assert [r.request_id for r in read_log(log_dir).records] == [*ids, "from-another-feature"]


def test_segments_rotate_by_size_and_by_age(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    by_size, by_age = tmp_path / "by_size", tmp_path / "by_age"
    with serving(folder) as (srv, _):
        pass  # the folder serves without a log
    add_sections(folder, log_section(by_size, max_segment_bytes=2048))
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        for p in table.prompts[:30]:
            assert chat(c, p).status_code == 200
        assert st.decision_log.flush()
    sizes = [s.stat().st_size for s in list_segments(by_size)]
    assert len(sizes) >= 5 and max(sizes) <= 2048, sizes
    assert len(read_log(by_size).records) == 30 and not read_log(by_size).errors

    text = (folder / "upstreams.toml").read_text().replace(str(by_size), str(by_age))
    (folder / "upstreams.toml").write_text(text.replace("max_segment_bytes = 2048", "max_segment_seconds = 0.15"))
    burst_of: dict[str, int] = {}
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        for burst in range(3):
            for p in table.prompts[burst * 5 : burst * 5 + 5]:
                r = chat(c, p)
                assert r.status_code == 200
                burst_of[r.headers["x-routelab-request-id"]] = burst
            assert st.decision_log.flush()
            time.sleep(0.3)
    # A segment older than 0.15 s is closed: the 0.3 s pauses always start a new one (a slow burst may itself span
    # two), so no segment holds lines of two bursts.
    bursts_per_segment = []
    for seg in list_segments(by_age):
        lines = [json.loads(line) for line in seg.read_text().splitlines()]
        ids = [d["request_id"] for d in lines if d.get("kind", "decision") == "decision"]
        bursts_per_segment.append({burst_of[i] for i in ids})
    assert all(len(b) <= 1 for b in bursts_per_segment), bursts_per_segment
    assert sum(len(b) == 1 for b in bursts_per_segment) >= 3
    assert len(read_log(by_age).records) == 15


def test_no_key_reaches_the_log_even_when_an_upstream_echoes_it(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, log_section(log_dir, store_text=True))
    with ScriptedUpstream(["echo_key"]) as upstream:
        point_upstreams(folder, {m: upstream.base_url for m in table.models})
        with serving(folder) as (srv, st), client(srv.base_url) as c:
            r = chat(c, f"my keys are {CLIENT_KEY} and {UPSTREAM_KEY}; " + table.prompts[0])
            assert r.status_code == 200
            assert st.decision_log.flush()
        assert any(UPSTREAM_KEY in req["authorization"] for req in upstream.requests)  # the key was really sent
    raw = b"".join(p.read_bytes() for p in list_segments(log_dir))
    assert raw and CLIENT_KEY.encode() not in raw and UPSTREAM_KEY.encode() not in raw
    rec = read_log(log_dir).records[0]
    assert "***" in rec.prompt_text and "***" in rec.answer_text  # the texts are there, the keys are not


def test_texts_are_off_by_default_and_capped_when_on(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    off, on = tmp_path / "off", tmp_path / "on"
    add_sections(folder, log_section(off))
    long_prompt = table.prompts[-1]  # the replay server answers recorded prompts only
    assert len(long_prompt) > 30
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        assert chat(c, long_prompt).status_code == 200
        assert st.decision_log.flush()
    rec = read_log(off).records[0]
    assert rec.prompt_text is None and rec.answer_text is None and not rec.text_truncated
    assert long_prompt.encode() not in b"".join(p.read_bytes() for p in list_segments(off))

    path = folder / "upstreams.toml"
    path.write_text(path.read_text().replace(str(off), str(on)).replace("[log]\n", "[log]\nstore_text = true\n"
                                                                        "text_cap = 12\n"))
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        r = chat(c, long_prompt)
        assert r.status_code == 200
        assert st.decision_log.flush()
    rec = read_log(on).records[0]
    assert rec.prompt_text == long_prompt[:12] and rec.text_truncated
    assert rec.answer_text == r.json()["choices"][0]["message"]["content"][:12]


def _can_block_writes(directory: Path) -> bool:
    probe = directory / "probe"
    try:
        probe.write_text("x")
    except OSError:
        return True
    probe.unlink()
    return False


@contextmanager
def read_only(directory: Path):
    """Make ``directory`` and its files refuse writes, open files included, for real: as root (whom permissions
    do not stop) with the immutable attribute, else with permissions (then open segments keep taking writes until
    the writer rotates, which a small ``max_segment_bytes`` makes quick)."""
    files = [directory, *directory.iterdir()]
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a directory read-only for root")
        done = subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
        undo = ["chattr", "-i", *map(str, files)]
    else:
        for f in files:
            f.chmod(0o555 if f.is_dir() else 0o444)
        undo = None
    try:
        assert _can_block_writes(directory), "the directory still takes writes"
        yield
    finally:
        if undo is not None:
            subprocess.run(undo, check=True)
        else:
            for f in files:
                f.chmod(0o755 if f.is_dir() else 0o644)


def test_a_log_directory_made_read_only_mid_run_fails_no_request_and_counts_the_drops(
    replay, table, tmp_path
):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, log_section(log_dir, max_segment_bytes=2048))
    prompts = table.prompts
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        for p in prompts[:10]:
            assert chat(c, p).status_code == 200
        assert st.decision_log.flush()
        written_before = st.decision_log.counts()["written"]["decision"]
        assert written_before == 10
        with read_only(log_dir):
            statuses = [chat(c, p).status_code for p in prompts[10:50]]
            assert st.decision_log.flush()
            health = c.get(srv.base_url.replace("/v1", "/healthz")).json()
            dropped = metric(metrics_of(c, srv.base_url), "routelab_decision_log_dropped_total",
                             'reason="write_error"')
        assert statuses == [200] * 40
        assert dropped > 0 and health["decision_log"]["dropped"]["write_error"] == dropped
        assert health["decision_log"]["state"] == "failing" and "logs" in health["decision_log"]["last_error"]
        assert health["status"] == "ok"  # the log's trouble is not the upstreams'
        # Writable again: after the retry pause the writer opens a new segment and goes on.
        time.sleep(RETRY_S + 0.2)
        for p in prompts[50:55]:
            assert chat(c, p).status_code == 200
        assert st.decision_log.flush()
        counts = st.decision_log.counts()
    assert counts["written"]["decision"] + counts["dropped"]["write_error"] == 55
    result = read_log(log_dir)
    assert len(result.records) == counts["written"]["decision"] >= 15
    assert {r.request_id for r in result.records[-5:]}.isdisjoint({r.request_id for r in result.records[:10]})


def test_a_log_directory_replaced_by_a_file_fails_no_request(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, log_section(log_dir, max_segment_bytes=1024))
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        assert chat(c, table.prompts[0]).status_code == 200
        assert st.decision_log.flush()
        shutil.rmtree(log_dir)
        log_dir.write_text("not a directory")  # e.g. a mistaken deploy step
        statuses = [chat(c, p).status_code for p in table.prompts[1:21]]
        assert st.decision_log.flush()
        assert statuses == [200] * 20
        assert st.decision_log.counts()["dropped"]["write_error"] == 20


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    counted: dict[tuple, float] = {}

    def count(*key, by=1.0):
        counted[key] = counted.get(key, 0.0) + by

    writer = DecisionLog(LogSettings(dir=str(tmp_path), queue_size=2), tmp_path, count)  # no writer thread started
    t0 = time.perf_counter()
    accepted = [writer.write(type("R", (), {"to_json": lambda self: "{}"})()) for _ in range(5)]
    assert time.perf_counter() - t0 < 0.05
    assert accepted == [True, True, False, False, False]
    assert writer.counts()["dropped"]["queue_full"] == 3 == counted[("decision_log_dropped", "queue_full")]


def test_log_config_errors_name_the_section_and_the_key(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    original = (folder / "upstreams.toml").read_text()
    cases = [
        ("[log]\ndirr = \"x\"", "[log]: unknown key(s) ['dirr']"),
        ("[log]\nstore_text = true", "[log]: dir is required"),
        (f'[log]\ndir = "{tmp_path}"\nqueue_size = 0', "[log]: queue_size must be an integer"),
        (f'[log]\ndir = "{tmp_path}"\nstore_text = "yes"', "[log]: store_text must be true or false"),
        (f'[log]\ndir = "{tmp_path}"\ntext_cap = -1', "[log]: text_cap must be an integer"),
        (f'[log]\ndir = "{folder / "logs"}"', "[log] dir"),
    ]
    for section, message in cases:
        (folder / "upstreams.toml").write_text(original + "\n" + section + "\n")
        with pytest.raises(ConfigError) as err:
            build_proxy_app(folder, environ=ENV)
        assert message in str(err.value), (section, str(err.value))


def test_two_workers_writing_one_directory_never_share_a_segment(tmp_path):
    """``routelab serve --workers N``: each worker has its own writer on the same directory."""
    import asyncio

    writers = [DecisionLog(LogSettings(dir=str(tmp_path), max_segment_bytes=4096), tmp_path, lambda *k, by=1.0: None)
               for _ in range(2)]
    for w in writers:
        asyncio.run(w.startup())
    for i in range(300):
        for k, w in enumerate(writers):
            assert w.write(DecisionRecord(request_id=f"w{k}-{i}", time=time.time(), route="router",
                                          prompt_hash=prompt_hash(str(i)), status=200, latency_s=0.01))
    for w in writers:
        asyncio.run(w.shutdown())
    result = read_log(tmp_path)
    assert not result.errors and len(result.records) == 600
    assert len({r.request_id for r in result.records}) == 600
    assert sum(w.segments_opened for w in writers) == len(list_segments(tmp_path))


def test_the_writers_json_line_is_exactly_the_records_own(tmp_path):
    """The writer serialises decisions field by field with orjson (fast); it must stay the same object, in the same
    key order, as ``to_json`` (the byte forms differ only in how a float is spelled, e.g. ``1e-05`` / ``1e-5``)."""
    from routers.export.proxy.context import Prediction, RequestContext
    from routers.export.proxy.decision_log import decision_json, record_of

    models = [f"model-{i}" for i in range(14)]
    for store_text, routed, arm in [(False, True, "none"), (True, True, "router"), (True, False, "none"),
                                    (False, True, "control")]:
        ctx = RequestContext(route="router" if routed else "model-1", category="math" if routed else None,
                             prompt="Ünïcode prompt " * 30 if routed else None, routed=routed, arm=arm,
                             lam=0.05 if routed else None, propensity=0.35 if routed else None, epsilon=0.05,
                             explored=routed, status=200, latency_s=0.25, usage=(12, 7), cost_usd=0.0012,
                             answered_by="model-3", reason="fallback from model-2", answer_text="answer " * 700)
        ctx.choice = "model-2" if routed else None
        if routed:
            ctx.predictions = tuple(Prediction(m, i / 13, 0.001 * i, i != 5) for i, m in enumerate(models))
        rec = record_of(ctx, True, store_text=store_text, text_cap=100)
        line = decision_json(rec).decode("utf-8")
        assert json.loads(line) == json.loads(rec.to_json())
        assert list(json.loads(line)) == list(json.loads(rec.to_json()))
        assert DecisionRecord.from_json(line) == rec


def test_the_fast_line_is_the_checked_records_line_or_steps_aside():
    """The writer builds a plain request's line straight from its facts (no record objects); for any request it must
    give exactly the checked path's bytes, or None, and None whenever the checked path refuses the record."""
    import math
    import random

    from evals.production.records import RecordError
    from routers.export.proxy.context import Prediction, RequestContext
    from routers.export.proxy.decision_log import _plain_fast_line, decision_json, record_of

    rng = random.Random(0)
    odd = [math.nan, math.inf, -1.0, 1.5, 0, 1, True, None, "x"]
    models = [f"model-{i}" for i in range(6)]

    def pick(plain, *others):
        return rng.choice(list(others) + odd) if rng.random() < 0.04 else plain

    fast_taken = refused = 0
    for _ in range(3000):
        routed = rng.random() < 0.8
        ctx = RequestContext(route=pick("router", "", None), category=pick(rng.choice([None, "math"]), 3),
                             prompt=pick("what is 2 + 2?", None), routed=routed, arm=pick("none", "router", "bad"),
                             epsilon=pick(0.05, 0.0, 1.0), explored=pick(False, True), status=pick(200, 502, 42, 700),
                             latency_s=pick(0.25, None, 0.0), reason=pick("routed", ""),
                             answered_by=pick("model-1", ""),
                             usage=pick((12, 7), None, (-1, 3), (1.0, 2)), cost_usd=pick(0.0012, None, 0.0))
        if ctx.latency_s is None:  # else each path reads the clock (ctx.elapsed()) at its own moment
            ctx.latency_s = 0.5
        ctx.received = pick(ctx.received, 0.0)
        ctx.request_id = pick(ctx.request_id, "")
        if routed:
            ctx.choice = pick("model-2", "nope", None)
            ctx.lam, ctx.propensity = pick(0.05, None, 0.0), pick(0.35, 1.0, 0.0)
            n = rng.choice([0, 6])
            ctx.predictions = tuple(Prediction(pick(m, "", "model-0"), pick(rng.random()), pick(0.001 * i),
                                               pick(i != 3)) for i, m in enumerate(models[:n]))
        fast = _plain_fast_line(ctx, shadow=rng.random() < 0.5)
        try:
            checked = decision_json(record_of(ctx, bool(fast and b'"shadow":true' in fast), store_text=False,
                                              text_cap=100))
        except (RecordError, ValueError, TypeError, AttributeError, LookupError):  # the writer's "invalid"
            assert fast is None
            refused += 1
            continue
        if fast is not None:
            assert fast == checked
            fast_taken += 1
    assert fast_taken > 500 and refused > 300, (fast_taken, refused)
