"""Live upstream telemetry in the decision log (issue 15, item 7: "in /metrics and the log"): with ``[log]`` the
proxy snapshots each upstream's moving latency and error rate every ``telemetry_every_s`` seconds from a background
task (only upstreams with new attempts; never per attempt) and once more at shutdown; ``routelab logs report``
shows them per upstream. Real proxy, the replay server and a scripted failing upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from evals.exceptions import ConfigError
from evals.production.log_reader import read_log
from evals.production.records import TelemetryRecord
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.proxy.telemetry import Telemetry, TelemetryLogger
from routers.export.settings.log import LogSettings

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import ENV, ScriptedUpstream, chat, client, make_folder  # noqa: E402


class FakeLog:
    def __init__(self) -> None:
        self.records: list = []

    def write(self, record) -> bool:
        self.records.append(record)
        return True


def test_a_snapshot_holds_only_upstreams_with_new_attempts_and_observing_writes_nothing():
    t = Telemetry(["a", "b", "c"], alpha=0.5)
    sink = FakeLog()
    logger = TelemetryLogger(t, sink, every_s=60)
    for _ in range(50):  # attempts only update the averages: nothing reaches the log on the request path
        t.observe("a", 0.1, None)
    t.observe("b", 0.3, "timeout")
    assert sink.records == []
    assert logger.write_snapshot(now=100.0) == 2
    a, b = sink.records
    assert (a.upstream, a.time, a.attempts, a.answers, a.error_rate, a.latency_s) == ("a", 100.0, 50, 50, 0.0, 0.1)
    assert (b.upstream, b.attempts, b.answers, b.error_rate, b.latency_s) == ("b", 1, 0, 1.0, None)
    assert logger.write_snapshot(now=160.0) == 0  # nothing new: an idle upstream does not repeat itself
    t.observe("b", 0.2, None)
    assert logger.write_snapshot(now=220.0, final=True) == 1
    last = sink.records[-1]
    assert last.upstream == "b" and last.final and last.attempts == 2 and last.error_rate == 0.5
    assert TelemetryLogger(t, lambda: None, every_s=1).write_snapshot() == 0  # no log attached: nothing
    with pytest.raises(ValueError, match="> 0"):
        TelemetryLogger(t, sink, every_s=0)


def test_the_periodic_task_snapshots_on_its_own_and_stops_with_a_final_one():
    async def scenario() -> list[TelemetryRecord]:
        t = Telemetry(["a"])
        sink = FakeLog()
        logger = TelemetryLogger(t, lambda: sink, every_s=0.05)
        await logger.startup()
        t.observe("a", 0.1, None)
        await asyncio.sleep(0.2)
        t.observe("a", 0.2, "http_503")
        await logger.shutdown()
        return sink.records

    records = asyncio.run(scenario())
    assert [r.final for r in records] == [False, True]
    assert [r.attempts for r in records] == [1, 2] and records[1].error_rate > 0


def log_section(log_dir: Path, **keys) -> str:
    values = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n[log]\n" + "\n".join([f"dir = {json.dumps(str(log_dir))}", *values]) + "\n"


@contextmanager
def proxy_with_failing_big(table, replay, tmp_path: Path, **log_keys):
    """(proxy server, its state, log dir): cheap and mid answered by the replay server, big by an upstream that
    always answers 503."""
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    with ScriptedUpstream(["status_503"]) as broken:
        point_upstreams(folder, {"big": broken.base_url}, cooldown_s=0.0)
        path = folder / "upstreams.toml"
        path.write_text(path.read_text() + log_section(log_dir, **log_keys))
        app = build_proxy_app(folder, environ=ENV)
        with ProxyServer(app) as srv:
            yield srv, app.state.proxy, log_dir, folder


def traffic(c, table, start: int, n: int = 4) -> None:
    for p in table.prompts[start : start + n]:
        assert chat(c, p, model="cheap").status_code == 200
        assert chat(c, p, model="big").status_code == 502  # every attempt fails: big's error rate goes up


def test_shutdown_writes_one_final_snapshot_per_used_upstream_matching_healthz(replay, table, tmp_path):
    with proxy_with_failing_big(table, replay, tmp_path, telemetry_every_s=3600) as (srv, st, log_dir, _):
        with client(srv.base_url) as c:
            traffic(c, table, 0)
            live = c.get(srv.base_url.replace("/v1", "/healthz")).json()["telemetry"]
        assert read_log(log_dir).telemetry == []  # nothing before the hour is up
    snaps = {t.upstream: t for t in read_log(log_dir).telemetry}
    assert set(snaps) == {"cheap", "big"}  # mid had no attempt: no snapshot
    for name, t in snaps.items():
        assert t.final
        assert (t.latency_s, t.error_rate, t.attempts, t.answers) == (
            live[name]["latency_ewma_s"], live[name]["error_rate_ewma"], live[name]["attempts"],
            live[name]["answers"])
    assert snaps["big"].error_rate == 1.0 and snaps["big"].latency_s is None and snaps["big"].answers == 0
    assert snaps["cheap"].error_rate == 0.0 and snaps["cheap"].latency_s > 0


def test_snapshots_are_written_periodically_and_the_report_shows_each_upstream(replay, table, tmp_path):
    from evals.workbench.production_report import build_report

    with proxy_with_failing_big(table, replay, tmp_path, telemetry_every_s=0.2) as (srv, st, log_dir, folder):
        with client(srv.base_url) as c:
            for batch in range(2):
                traffic(c, table, 4 * batch)
                before = st.telemetry_logger.snapshots
                deadline = time.monotonic() + 5
                while st.telemetry_logger.snapshots == before and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert st.telemetry_logger.snapshots > before, "no periodic snapshot within 5 s"
            idle = st.telemetry_logger.snapshots
            time.sleep(0.6)  # three periods without traffic
            assert st.telemetry_logger.snapshots == idle
            assert st.decision_log.flush()
        periodic = [t for t in read_log(log_dir).telemetry if not t.final]
    assert {t.upstream for t in periodic} == {"cheap", "big"}
    for name in ("cheap", "big"):
        attempts = [t.attempts for t in periodic if t.upstream == name]
        assert len(attempts) >= 2 and attempts == sorted(set(attempts))  # each one has new attempts
    report = build_report(log_dir, folder, n_resamples=50)
    summary = report.to_dict()["telemetry"]
    assert set(summary) == {"big", "cheap"} and summary["big"]["worst_error_rate"] == 1.0
    assert summary["cheap"]["snapshots"] >= 2 and summary["cheap"]["error_rate"] == 0.0
    assert report.log["telemetry_snapshots"] == sum(s["snapshots"] for s in summary.values())
    assert report.metrics()["upstream_worst_error_rate"] == 1.0
    md = report.to_markdown()
    assert "## Upstream telemetry" in md
    big_row = next(line for line in md.splitlines() if line.startswith("| big |"))
    assert "100" in big_row and "—" in big_row  # error rate 100%, no latency (it never answered)


def test_no_snapshots_when_telemetry_every_s_is_zero(replay, table, tmp_path):
    with proxy_with_failing_big(table, replay, tmp_path, telemetry_every_s=0) as (srv, st, log_dir, _):
        with client(srv.base_url) as c:
            traffic(c, table, 0, n=2)
        assert not hasattr(st, "telemetry_logger")
    result = read_log(log_dir)
    assert result.telemetry == [] and len(result.records) == 4


@pytest.mark.parametrize("value", [-1, 0.01, "60", True, 86401])
def test_a_bad_telemetry_period_names_the_section_and_key(tmp_path, value):
    from routers.export.settings.log import parse

    with pytest.raises(ConfigError, match=r"\[log\]: telemetry_every_s"):
        parse({"dir": str(tmp_path), "telemetry_every_s": value}, "[log]", [])
    assert parse({"dir": str(tmp_path)}, "[log]", []).telemetry_every_s == LogSettings().telemetry_every_s == 60.0
    assert parse({"dir": str(tmp_path), "telemetry_every_s": 0}, "[log]", []).telemetry_every_s == 0.0
