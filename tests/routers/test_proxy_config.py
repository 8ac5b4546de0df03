"""upstreams.toml, secrets, model names and health (issue 13 items 5-6, issue 14 item 3).

* ``upstreams.toml`` is fully validated: one-line errors naming the field; the proxy refuses to start when an
  upstream's key variable is its own client-key variable, or a base URL is plain http to another machine
  unless the upstream says ``allow_insecure = true``.
* Unknown model names: 404 ``model_not_found`` listing what is served, or pass-through to the configured
  ``passthrough_upstream``.
* ``/healthz`` says ``degraded`` / ``down`` with per-upstream detail; ``routelab serve`` prints which
  upstreams can answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evals.cli import main as routelab
from evals.exceptions import ConfigError
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.upstreams import parse_upstreams

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import point_upstreams  # noqa: E402
from proxy_helpers import (  # noqa: E402
    ENV,
    ScriptedUpstream,
    chat,
    client,
    make_folder,
    set_proxy_options,
)

MODELS = ["cheap", "big"]


def _block(defaults: dict[str, str], overrides: str) -> str:
    """TOML lines: ``defaults`` (key -> TOML value) with the ``key = value`` lines of ``overrides`` replacing them."""
    lines = dict(defaults)
    for line in filter(None, overrides.splitlines()):
        key, value = (part.strip() for part in line.split("=", 1))
        lines[key] = value
    return "".join(f"{k} = {v}\n" for k, v in lines.items())


def _toml(proxy: str = "", cheap: str = "", big: str = "") -> str:
    return (
        f"[proxy]\n{proxy}\n"
        + '[upstreams."cheap"]\n'
        + _block({"base_url": '"https://api.example.com/v1"', "api_key_env": '"EXAMPLE_KEY"'}, cheap)
        + '[upstreams."big"]\n'
        + _block({"base_url": '"http://127.0.0.1:8000/v1"'}, big)
    )


@pytest.mark.parametrize(
    ("proxy", "cheap", "words"),
    [
        ("", 'api_key_env = "ROUTELAB_PROXY_KEYS"', ['[upstreams."cheap"]', "api_key_env", "client keys"]),
        ('client_keys_env = "MY_KEYS"', 'api_key_env = "MY_KEYS"', ["api_key_env is MY_KEYS", "client_keys_env"]),
        ("", 'base_url = "http://10.1.2.3/v1"', ["base_url", "plain http", "allow_insecure"]),
        ("", 'base_url = "https://user:pw@api.example.com/v1"', ["base_url", "credentials"]),
        ("", 'base_url = "ftp://x/v1"', ["base_url", "http(s) URL"]),
        ("", 'allow_insecure = "yes"', ["allow_insecure", "true or false"]),
        ("", 'timeout_s = "5"', ["timeout_s", "a number"]),
        ("", "timeout_s = 0", ["timeout_s", "from 0.001"]),
        ("", "retries = 1.5", ["retries", "an integer"]),
        ("", "retries = true", ["retries", "an integer"]),
        ("", "retries = 11", ["retries", "from 0 to 10"]),
        ("", "model = 5", ["model", "a string"]),
        ("", 'api_key = "sk-123"', ["unknown key", "api_key"]),
        ("cooldown_s = -1", "", ["[proxy]", "cooldown_s"]),
        ("request_deadline_s = 0", "", ["[proxy]", "request_deadline_s", "from 0.1"]),
        ('request_deadline_s = "30"', "", ["request_deadline_s", "a number"]),
        ("max_fallback_hops = -1", "", ["max_fallback_hops"]),
        ("max_response_bytes = 12.5", "", ["max_response_bytes", "an integer"]),
        ("max_connections = 0", "", ["max_connections"]),
        ("header_timeout_s = inf", "", ["header_timeout_s"]),
        ('fallback_order = "big"', "", ["fallback_order", "a list"]),
        ('fallback_order = ["big", "big"]', "", ["fallback_order", "twice"]),
        ('fallback_order = ["huge"]', "", ["fallback_order", "huge"]),
        ('route_names = "router"', "", ["route_names", "a list"]),
        ('route_names = ["big"]', "", ["route_names", "also upstream model names"]),
        ('passthrough_upstream = "nope"', "", ["passthrough_upstream", "cheap, big"]),
        ("request_deadline = 30", "", ["[proxy]", "unknown key", "request_deadline"]),
        ("client_keys_env = 5", "", ["client_keys_env"]),
    ],
)
def test_every_upstreams_field_is_checked_with_a_one_line_error_naming_it(proxy, cheap, words):
    with pytest.raises(ConfigError) as info:
        parse_upstreams(_toml(proxy, cheap), MODELS, origin="upstreams.toml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("upstreams.toml")
    for w in words:
        assert w in message, message


def test_valid_upstreams_parse_with_their_values():
    cfg = parse_upstreams(
        _toml('request_deadline_s = 12\nmax_fallback_hops = 1\npassthrough_upstream = "cheap"',
              'allow_insecure = true\nbase_url = "http://10.1.2.3/v1"', 'base_url = "http://localhost:9/v1"'),
        MODELS,
        origin="upstreams.toml",
    )
    assert cfg.request_deadline_s == 12.0 and cfg.max_fallback_hops == 1 and cfg.passthrough_upstream == "cheap"
    assert cfg.upstreams["cheap"].allow_insecure and cfg.upstreams["cheap"].base_url == "http://10.1.2.3/v1"
    for loopback in ("http://[::1]:8000/v1", "http://127.0.0.2/v1", "http://localhost/v1"):
        parse_upstreams(_toml(big=f'base_url = "{loopback}"'), MODELS, origin="x")
    with pytest.raises(ConfigError, match="unknown section"):
        parse_upstreams(_toml() + "[extra]\na = 1\n", MODELS, origin="x")


def test_the_proxy_refuses_to_start_when_an_upstream_would_get_the_client_keys(table, replay, tmp_path, capsys):
    folder = make_folder(table, replay.base_url, tmp_path, key_env="ROUTELAB_PROXY_KEYS")
    with pytest.raises(ConfigError, match="client keys upstream"):
        build_proxy_app(folder, environ=ENV)
    assert routelab(["serve", str(folder)]) == 2  # the CLI: a one-line error, exit 2, nothing served
    err = capsys.readouterr().err
    assert err.startswith("routelab: error:") and "api_key_env" in err and "Traceback" not in err


def test_the_proxy_refuses_plain_http_to_another_machine_unless_allowed(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    path = folder / "upstreams.toml"
    text = path.read_text()
    path.write_text(text.replace(replay.base_url, "http://192.0.2.10:8000/v1", 1))
    with pytest.raises(ConfigError, match="plain http to another machine"):
        build_proxy_app(folder, environ=ENV)
    block_start = path.read_text().index("http://192.0.2.10")
    text = path.read_text()
    line_end = text.index("\n", block_start)
    path.write_text(text[:line_end] + "\nallow_insecure = true" + text[line_end:])
    build_proxy_app(folder, environ=ENV)  # the owner said the network is trusted


def test_unknown_model_names_get_a_404_listing_what_is_served(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
        r = chat(c, table.prompts[0], model="gpt-4o-mini")
        assert r.status_code == 404
        err = r.json()["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model"
        assert all(name in err["message"] for name in ["router", *table.models, "passthrough_upstream"])


def test_unknown_model_names_pass_through_unchanged_to_the_configured_upstream(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    with ScriptedUpstream(["ok"]) as default:
        point_upstreams(folder, {"big": default.base_url})
        set_proxy_options(folder, passthrough_upstream="big")
        with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy, client(proxy.base_url) as c:
            r = chat(c, "anything at all", model="gpt-4o-mini")
            assert r.status_code == 200, r.text
            assert r.headers["x-routelab-reason"] == "passthrough" and r.headers["x-routelab-model"] == "big"
            assert default.requests[-1]["body"]["model"] == "gpt-4o-mini"  # the name is not rewritten
            r = chat(c, "anything", model="big")  # a known name is still renamed to the upstream's name
            assert r.status_code == 200 and default.requests[-1]["body"]["model"] == "big"
            r = chat(c, table.prompts[0])  # and routing is untouched
            assert r.status_code == 200 and r.headers["x-routelab-reason"] == "routed"


def test_healthz_says_degraded_then_down_with_each_upstreams_state(table, tmp_path):
    with ScriptedUpstream(["status_503"]) as down:
        folder = make_folder(table, down.base_url, tmp_path, retries=0, cooldown_s=60)
        env = dict(ENV)
        with ProxyServer(build_proxy_app(folder, environ=env)) as proxy, client(proxy.base_url) as c:
            health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
            assert health["status"] == "ok"
            assert {u["state"] for u in health["upstreams"].values()} == {"up"}
            assert chat(c, table.prompts[0], model="cheap").status_code == 502  # cheap now cools down
            health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
            assert health["status"] == "degraded"
            assert health["upstreams"]["cheap"]["state"] == "cooling down"
            assert 50 < health["upstreams"]["cheap"]["cooldown_left_s"] <= 60
            assert health["upstreams"]["big"]["state"] == "up"
            chat(c, table.prompts[0], model="mid")
            chat(c, table.prompts[0], model="big")
            health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
            assert health["status"] == "down"
        # A missing key: that upstream cannot answer as configured.
        env.pop("TEST_UPSTREAM_KEY")
        with ProxyServer(build_proxy_app(folder, environ=env)) as proxy, client(proxy.base_url) as c:
            health = c.get(proxy.base_url.replace("/v1", "/healthz")).json()
            assert health["status"] == "down"
            assert {u["state"] for u in health["upstreams"].values()} == {"key missing"}


@pytest.mark.slow
@pytest.mark.slow  # a process start (or a 300-connection flood): several seconds
def test_serve_prints_which_upstreams_can_answer(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    path = folder / "upstreams.toml"
    # cheap: no key needed (a loopback replay upstream); mid: its key is set; big: its key is not.
    text = path.read_text()
    start = text.index('[upstreams."cheap"]')
    end = text.index("\n[", start + 1)
    path.write_text(text[:start] + text[start:end].replace('api_key_env = "TEST_UPSTREAM_KEY"\n', "") + text[end:])
    text = path.read_text()
    start = text.index('[upstreams."big"]')
    path.write_text(text[:start] + text[start:].replace("TEST_UPSTREAM_KEY", "BIG_KEY_NOT_SET"))
    env = {k: v for k, v in os.environ.items() if k != "BIG_KEY_NOT_SET"} | ENV
    proc = subprocess.Popen(
        [sys.executable, "-m", "evals.cli", "serve", str(folder), "--port", "0", "--log-level", "warning"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if sum(ln.startswith("  ") for ln in lines) == 3:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    banner = "\n".join(lines)
    assert "2 of 3 upstreams can answer" in banner, banner
    by_model = {ln.split()[1 if ln.split()[0] == "ready" else 2]: ln for ln in lines if ln.startswith("  ")}
    assert by_model["cheap"].strip().startswith("ready") and "no key needed" in by_model["cheap"]
    assert by_model["mid"].strip().startswith("ready") and "key from TEST_UPSTREAM_KEY" in by_model["mid"]
    assert by_model["big"].strip().startswith("NO KEY") and "BIG_KEY_NOT_SET is NOT set" in by_model["big"]
    assert "TEST_UPSTREAM_KEY" not in by_model["cheap"]  # no warning about a key it does not need
