"""The README's keyless proxy demo runs verbatim: replay server, export, proxy, one request, HTTP 200 with headers.

The test reads the bash block from README.md (so it fails when the README changes in a way that breaks the
demo), swaps its two ports for free ones, and runs it with bash in a scratch folder that has the checkout's
``examples/`` (the README's commands are run from the checkout). Nothing else of the block is changed.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from evals.serving import CANNED_PREFIX

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPLAY_PORT, PROXY_PORT = "8765", "8080"  # the ports the README uses


def readme_demo_block() -> str:
    """The README's bash block that starts the replay server, exports against it, serves and asks once."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    demo = [b for b in blocks if "routelab replay-serve mmlu-pro" in b and "--upstream-base-url" in b]
    assert len(demo) == 1, f"expected one README bash block with the keyless proxy demo, found {len(demo)}"
    return demo[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_http_response(output: str) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of the last HTTP response ``curl -i`` printed (earlier ones were retried)."""
    start = output.rfind("HTTP/1.1 ")
    assert start >= 0, f"no HTTP response in the demo's output:\n{output[-3000:]}"
    head, _, body = output[start:].replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_the_demo_block_is_runnable_as_written():
    block = readme_demo_block()
    assert block.count(f"--port {REPLAY_PORT}") == 1 and f"127.0.0.1:{REPLAY_PORT}/v1" in block
    assert block.count(f"--port {PROXY_PORT}") == 1 and f"127.0.0.1:{PROXY_PORT}/v1/chat/completions" in block
    assert "What is 2+2?" in block and "--unknown-prompts canned" in block  # an unrecorded prompt gets answered
    assert re.search(r"^kill ", block, flags=re.M), "the block stops the servers it started"


@pytest.mark.slow
def test_readme_keyless_proxy_demo_runs_verbatim(tmp_path):
    if shutil.which("curl") is None or shutil.which("routelab") is None:
        pytest.skip("the demo needs curl and the routelab command on PATH")
    replay_port, proxy_port = _free_port(), _free_port()
    script = readme_demo_block().replace(REPLAY_PORT, str(replay_port)).replace(PROXY_PORT, str(proxy_port))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # keyless, as for a newcomer
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: cleaned up below even if the block fails midway
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the servers, if the block's own `kill` did not run
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"the README demo failed (exit {proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}"
    status, headers, body = _last_http_response(out)
    assert status == 200, body
    folder = tmp_path / "exports" / "category-replay"
    upstreams = tomllib.loads((folder / "upstreams.toml").read_text())["upstreams"]
    assert headers["x-routelab-model"] in upstreams
    assert headers["x-routelab-reason"] in ("routed", f"fallback from {headers.get('x-routelab-choice')}")
    assert 0 <= float(headers["x-routelab-cost-usd"]) < 0.01
    assert CANNED_PREFIX in body  # a labelled placeholder, not an answer passed off as the model's
    # Every upstream is the replay server and needs no key: none is named, and no start-up line complains of one.
    for name, up in upstreams.items():
        assert up["base_url"] == f"http://127.0.0.1:{replay_port}/v1" and not up.get("api_key_env"), name
    assert not [line for line in err.splitlines() if "API_KEY" in line], err[-3000:]


def test_every_priced_provider_has_a_known_endpoint():
    """A default export points each model at its provider's endpoint, never silently at localhost."""
    from routers.export.upstreams import default_upstream

    with (ROOT / "datasets" / "prices.csv").open(encoding="utf-8") as f:
        providers = {row["provider"] for row in csv.DictReader(f)}
    local = sorted(p for p in providers if "127.0.0.1" in default_upstream("m", p)["base_url"])
    assert not local, f"providers of datasets/prices.csv without a known endpoint: {local}"


def test_an_upstream_base_url_of_our_own_names_no_provider_key(tiny_table, tmp_path):
    """``--upstream-base-url`` (``upstreams={"*": ...}``) never sends a provider's key to another server."""
    from routers import make_router
    from routers.export import export_router

    router = make_router("category").fit(tiny_table)
    prices = {m: {"provider": "openai", "input_per_1m": 1.0, "output_per_1m": 2.0} for m in tiny_table.models}
    url = "http://127.0.0.1:8765/v1"

    def upstreams(name: str, given: dict) -> dict:
        folder = export_router(router, tmp_path / name, lam=0.01, prices=prices, upstreams=given)
        return tomllib.loads((folder / "upstreams.toml").read_text())["upstreams"]

    default = upstreams("default", {})
    assert {u["base_url"] for u in default.values()} == {"https://api.openai.com/v1"}
    assert {u["api_key_env"] for u in default.values()} == {"OPENAI_API_KEY"}
    ours = upstreams("ours", {"*": {"base_url": url}})
    assert {u["base_url"] for u in ours.values()} == {url} and not any(u.get("api_key_env") for u in ours.values())
    keyed = upstreams("keyed", {"*": {"base_url": url, "api_key_env": "MY_GATEWAY_KEY"}})
    assert {u["api_key_env"] for u in keyed.values()} == {"MY_GATEWAY_KEY"}  # a key named for it is kept
