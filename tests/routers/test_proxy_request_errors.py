"""Every error is OpenAI-shaped JSON, never a plain 500 (issue 13, item 4).

Every content-part shape the OpenAI API allows is accepted; malformed parts get a 400 naming the field;
bodies nested deeper than the limit get a 400 before the decoder recurses (chat and feedback); ``stream``
must be a boolean; an unexpected exception becomes a 500 with a request id and logs no request content.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from evals.serving import build_replay_app
from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from proxy_helpers import ENV, chat, client, make_folder, small_table  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return small_table()


@pytest.fixture(scope="module")
def proxy(table, tmp_path_factory):
    with ProxyServer(build_replay_app(table)) as replay:
        folder = make_folder(table, replay.base_url, tmp_path_factory.mktemp("requests"))
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as srv:
            yield srv


def _is_openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and isinstance(err["message"], str) and err["message"]
    return err


def _post(c, body: dict):
    return c.post("/chat/completions", json=body)


def test_every_openai_content_shape_is_accepted_and_routed_on_its_text(proxy, table):
    prompt = table.prompts[0]
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "system", "content": "you answer questions"},
        {"role": "user", "content": [{"type": "text", "text": "earlier"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                                     {"type": "text", "text": prompt}]},
    ]
    with client(proxy.base_url) as c:
        r = _post(c, {"model": "router", "messages": messages})
        assert r.status_code == 200, r.text  # routed on the text of the last user turn: the replay knows it
        assert r.headers["x-routelab-reason"] == "routed"


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "messages[0].content[0].text"),
        ([{"role": "user", "content": [123]}], "messages[0].content[0]"),
        ([{"role": "user", "content": [{}]}], "messages[0].content[0].type"),
        ([{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                          {"type": "text", "text": 5}]}],
         "messages[1].content[1].text"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "not an object"}]}],
         "messages[0].content[0].image_url"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}],
         "messages[0].content[0].input_audio"),
        ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
         "messages[0].content[0].type"),
        ([{"role": "user", "content": 7}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
        (["hello"], "messages[0]"),
        ([{"role": "tool", "content": "r"}], "messages[0].tool_call_id"),
        ([{"role": "assistant", "content": "x", "tool_calls": "f()"}], "messages[0].tool_calls"),
        ([], "messages"),
        ("hi", "messages"),
    ],
)
def test_malformed_messages_get_a_400_naming_the_field(proxy, messages, field):
    with client(proxy.base_url) as c:
        for model in ("router", "big"):  # routed and passed through alike
            err = _is_openai_error(_post(c, {"model": model, "messages": messages}), 400)
            assert err["param"] == field and field in err["message"], err


@pytest.mark.parametrize("value", ["false", "true", 0, 1, [], {}])
def test_stream_must_be_a_boolean(proxy, table, value):
    with client(proxy.base_url) as c:
        err = _is_openai_error(chat(c, table.prompts[0], stream=value), 400)
        assert err["param"] == "stream" and "true or false" in err["message"]
        assert chat(c, table.prompts[0], stream=False).status_code == 200


def test_chat_bodies_nested_deeper_than_the_limit_get_a_400_not_a_crash(proxy):
    deep = b'{"model": "router", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with client(proxy.base_url) as c:
        r = c.post("/chat/completions", content=deep, headers={"content-type": "application/json"})
        assert "deeper than 64" in _is_openai_error(r, 400)["message"]
        # Brackets inside strings are text, not nesting: a prompt full of them is fine.
        r = c.post("/chat/completions", json={"model": "big", "messages": [{"role": "user", "content": "[" * 10_000}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "prompt_not_found"  # the replay's answer


def test_feedback_bodies_nested_deeper_than_the_limit_get_a_400_not_a_crash(table, tmp_path):
    from export_helpers import PRICES  # noqa: I001

    from routers.export import export_router
    from routers.strategies.adaptive import AdaptiveRouter

    folder = export_router(AdaptiveRouter(random_state=0).fit(table), tmp_path / "adaptive", lam=0.05, prices=PRICES)
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as srv, client(srv.base_url) as c:
        for path, method in (("/feedback", "POST"), ("/feedback/state", "PUT")):
            deep = b'{"model": "cheap", "score": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            r = c.request(method, path, content=deep, headers={"content-type": "application/json"})
            assert "deeper than 64" in _is_openai_error(r, 400)["message"]
        r = c.post("/feedback", json={"category": "easy", "model": "cheap", "score": 1.0})
        assert r.status_code == 200  # and well-formed feedback is still taken


def test_the_nesting_check_counts_only_structure():
    from routers.export.proxy.errors import ClientRequestError
    from routers.export.proxy.validation import MAX_JSON_DEPTH, parse_json_body

    ok = json.dumps({"a": [[["deep"]]], "text": "{[" * 5000}).encode()
    assert parse_json_body(ok)["a"] == [[["deep"]]]
    edge = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    with pytest.raises(ClientRequestError, match="JSON object"):  # at the limit: decoded, then not an object
        parse_json_body(edge)
    with pytest.raises(ClientRequestError, match="deeper than"):
        parse_json_body(b"[" + edge + b"]")
    with pytest.raises(ClientRequestError, match="not valid JSON"):
        parse_json_body(b"\xff\xfe{")


def test_unexpected_errors_are_a_shaped_500_with_a_request_id_and_no_content_logged(table, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret_prompt = "my secret prompt 31337"
    with ProxyServer(build_replay_app(table)) as replay:
        app = build_proxy_app(make_folder(table, replay.base_url, tmp_path), environ=ENV)

        def broken_router(prompts, *args):  # a bug in routing whose message quotes the request
            raise RuntimeError(f"cannot route {prompts[0]!r}")

        app.state.proxy.exported.route_indices = broken_router
        with ProxyServer(app) as srv, client(srv.base_url) as c:
            r = chat(c, secret_prompt)
            err = _is_openai_error(r, 500)
            request_id = r.headers["x-request-id"]
            assert err["code"] == "internal_error" and request_id in err["message"]
            assert secret_prompt not in r.text
            assert chat(c, table.prompts[0], model="big").status_code == 200  # the proxy keeps serving
    assert request_id in caplog.text and "RuntimeError" in caplog.text
    assert secret_prompt not in caplog.text


def test_other_refusals_are_openai_shaped_too(proxy, table):
    with client(proxy.base_url) as c:
        _is_openai_error(c.post("/chat/completions", content=b"{not json"), 400)
        _is_openai_error(c.post("/chat/completions", content=b"[1, 2]"), 400)
        _is_openai_error(c.post("/chat/completions", json={"messages": []}), 400)
        _is_openai_error(chat(c, table.prompts[0], model="gpt-9"), 404)
        assert _is_openai_error(c.get("/no/such/path"), 404)["code"] == "not_found"
        assert _is_openai_error(c.get("/chat/completions"), 405)["code"] == "method_not_allowed"
        with client(proxy.base_url, key="wrong") as anon:
            _is_openai_error(chat(anon, table.prompts[0]), 401)
