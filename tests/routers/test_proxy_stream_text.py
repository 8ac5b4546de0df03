"""Streamed answers keep their text: with ``[log] store_text`` the proxy gathers the ``delta.content`` pieces of a
stream as it relays them and logs the answer like a non-streamed one (capped and flagged); malformed events are
skipped without touching the stream the client gets; and a proxy whose features keep no texts parses nothing."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from evals.production.log_reader import read_log
from routers.export.proxy import ProxyServer, build_proxy_app, stream_text
from routers.export.proxy.stream_text import SHADOW_TEXT_CAP, StreamText, text_cap_wanted

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import ENV, ScriptedUpstream, chat, client, make_folder  # noqa: E402


def event(content) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"


def test_pieces_are_gathered_across_reads_and_everything_else_is_skipped():
    g = StreamText(cap=1000)
    whole = (event("Hel") + b": a comment\n\n" + b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
             + b"data: {not json\n\n" + b'data: {"choices": []}\n\n' + b"data: [1, 2]\n\n" + b"event: x\n"
             + event(None) + b"data: \xff\xfe{\n\n" + event("lo") + b'data:{"choices":[{"delta":{"content":" w"}}]}\n'
             + b"data: [DONE]\n\n" + event("orld"))
    for i in range(0, len(whole), 7):  # reads cut lines (and JSON) anywhere
        g.feed(whole[i : i + 7])
    assert g.text() == "Hello world"  # the last event had no newline: read at the end
    assert StreamText(10).text() is None  # no event carried content
    empty = StreamText(10)
    empty.feed(event(""))
    assert empty.text() == ""
    with pytest.raises(ValueError, match=">= 1"):
        StreamText(0)


def test_gathering_stops_at_the_cap():
    g = StreamText(cap=5)
    g.feed(event("abc") + event("defgh"))
    assert g.full and g.text() == "abcde"
    g.feed(event("more"))
    assert g.text() == "abcde"


def test_only_a_stream_that_ended_with_done_and_was_not_cut_counts_as_a_whole_answer():
    """Shadow grading compares whole answers: a stream cut by the cap or broken before ``[DONE]`` is not one."""
    whole, broken, cut = StreamText(100), StreamText(100), StreamText(3)
    for g in (whole, broken, cut):
        g.feed(event("abc") + event("de"))
    whole.feed(b"data: [DONE]\n\n")
    cut.feed(b"data: [DONE]\n\n")
    assert (whole.done, whole.complete_text()) == (True, "abcde")
    assert (broken.done, broken.complete_text(), broken.text()) == (False, None, "abcde")
    assert (cut.full, cut.complete_text(), cut.text()) == (True, None, "abc")


def log_section(log_dir: Path, **keys) -> str:
    return "\n[log]\n" + "\n".join([f"dir = {json.dumps(str(log_dir))}",
                                     *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]) + "\n"


@contextmanager
def serving(folder: Path):
    app = build_proxy_app(folder, environ=ENV)
    with ProxyServer(app) as srv:
        yield srv, app.state.proxy


def streamed_text(body: str) -> str:
    """What a client reads from an SSE body: the concatenated ``delta.content`` of its events."""
    out = []
    for line in body.splitlines():
        if line.startswith("data: {"):
            choices = json.loads(line[6:]).get("choices") or [{}]
            out.append(choices[0].get("delta", {}).get("content") or "")
    return "".join(out)


def _logged_folder(table, replay, tmp_path: Path, **log) -> tuple[Path, Path]:
    """(export folder, log directory): a proxy folder whose decision log keeps texts (``log``: more [log] keys)."""
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    (folder / "upstreams.toml").write_text((folder / "upstreams.toml").read_text()
                                           + log_section(log_dir, store_text=True, **log))
    return folder, log_dir


def test_a_streamed_answer_is_logged_with_its_text_like_a_non_streamed_one(replay, table, tmp_path):
    folder, log_dir = _logged_folder(table, replay, tmp_path, telemetry_every_s=0)
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        assert text_cap_wanted(st) == 4001  # the log's cap + 1, so a longer answer is flagged as cut
        got = {}
        for i, p in enumerate(table.prompts[:6]):
            r = chat(c, p, stream=i % 2 == 0)
            assert r.status_code == 200
            got[r.headers["x-routelab-request-id"]] = (
                streamed_text(r.text) if i % 2 == 0 else r.json()["choices"][0]["message"]["content"])
        assert st.decision_log.flush()
    records = {rec.request_id: rec for rec in read_log(log_dir).records}
    assert set(records) == set(got)
    for rid, text in got.items():
        assert text and records[rid].answer_text == text and not records[rid].text_truncated


def test_a_long_streamed_answer_is_capped_and_flagged(replay, table, tmp_path):
    folder, log_dir = _logged_folder(table, replay, tmp_path, text_cap=5)
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        r = chat(c, table.prompts[0], stream=True)
        assert st.decision_log.flush()
    full = streamed_text(r.text)
    assert len(full) > 5
    rec = read_log(log_dir).records[0]
    assert rec.answer_text == full[:5] and rec.text_truncated


class JunkStreamUpstream:
    """An upstream whose stream mixes valid events with malformed ones, cut at odd places."""

    BODY = (b": keep-alive\n\n" + event("Hi") + b"data: {\"choices\": [{\"delta\": \n\n" + b"data: {}\n\n"
            + event(" there") + b"data: [DONE]\n\n")

    def __enter__(self):
        async def answer(request):
            async def chunks():
                for i in range(0, len(self.BODY), 11):
                    yield self.BODY[i : i + 11]

            return StreamingResponse(chunks(), media_type="text/event-stream")

        self.server = ProxyServer(Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])])).start()
        return self

    def __exit__(self, *exc):
        self.server.stop()


def test_malformed_events_are_skipped_and_the_client_gets_the_stream_unchanged(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    (folder / "upstreams.toml").write_text((folder / "upstreams.toml").read_text()
                                           + log_section(log_dir, store_text=True))
    with JunkStreamUpstream() as junk:
        point_upstreams(folder, {m: junk.server.base_url for m in table.models})
        with serving(folder) as (srv, st), client(srv.base_url) as c:
            r = chat(c, table.prompts[0], stream=True)
            assert st.decision_log.flush()
    assert r.status_code == 200 and r.content == JunkStreamUpstream.BODY
    assert read_log(log_dir).records[0].answer_text == "Hi there"


def test_a_broken_stream_logs_what_arrived(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    (folder / "upstreams.toml").write_text((folder / "upstreams.toml").read_text()
                                           + log_section(log_dir, store_text=True))
    with ScriptedUpstream(["stream_break"]) as upstream:
        point_upstreams(folder, {m: upstream.base_url for m in table.models})
        with serving(folder) as (srv, st), client(srv.base_url) as c:
            r = chat(c, table.prompts[0], stream=True)
            assert st.decision_log.flush()
    assert "stream_interrupted" in r.text  # the client was told
    rec = read_log(log_dir).records[0]
    assert rec.answer_text == f"{rec.answered_by} streams"


def test_a_proxy_that_keeps_no_texts_parses_no_stream(replay, table, tmp_path, monkeypatch):
    made = []
    real = stream_text.StreamText

    def counting(cap):
        made.append(cap)
        return real(cap)

    monkeypatch.setattr(stream_text, "StreamText", counting)
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    (folder / "upstreams.toml").write_text((folder / "upstreams.toml").read_text() + log_section(log_dir))
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        assert text_cap_wanted(st) == 0
        assert chat(c, table.prompts[0], stream=True).status_code == 200
        assert st.decision_log.flush()
    assert made == [] and read_log(log_dir).records[0].answer_text is None
    # Shadow grading wants texts too (it re-uses answers): up to its own cap.
    st.wants_request_messages = True
    assert text_cap_wanted(st) == SHADOW_TEXT_CAP
