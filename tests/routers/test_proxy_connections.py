"""Connection hygiene (issue 13, item 3): header and body read timeouts, a keep-alive timeout, a cap on open
connections with a clean 503 past it, and file descriptors back at baseline after a slow-client flood."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from pathlib import Path

import pytest

from routers.export.proxy import ProxyServer, build_proxy_app

sys.path.insert(0, str(Path(__file__).parent))
from proxy_helpers import CLIENT_KEY, ENV, chat, client, make_folder, set_proxy_options  # noqa: E402


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _connect(port: int, send: bytes = b"") -> socket.socket:
    """A non-blocking client socket that has sent ``send`` (if any) at once."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if send:
        s.sendall(send)
    s.setblocking(False)
    return s


def _wait_until(condition, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.02)


def _closed_by_server(socks: list[socket.socket], within: float) -> tuple[int, dict[int, bytes]]:
    """Wait until the server closed every socket; return (how many closed, what each one received)."""
    received: dict[int, bytes] = {id(s): b"" for s in socks}
    open_ = set(socks)
    deadline = time.monotonic() + within
    while open_ and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_), [], [], 0.1)
        for s in ready:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[id(s)] += data
            else:
                open_.discard(s)
    return len(socks) - len(open_), received


@pytest.mark.slow  # a process start (or a 300-connection flood): several seconds
@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts file descriptors through /proc")
def test_a_flood_of_silent_and_slow_clients_is_closed_and_descriptors_return_to_baseline(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    # The header deadline runs from the server's accept, so each slow client sends its bytes the moment it is
    # connected, and the deadline leaves a loaded CI machine room to deliver them (at 0.5 s, a slow-body
    # client whose complete headers arrived late was closed silently as a slow-header one: a flaky failure).
    set_proxy_options(folder, header_timeout_s=1.5, body_timeout_s=0.5)
    slow_header_bytes = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"  # then nothing (slowloris)
    slow_body_bytes = (  # complete headers, 10 of the 1,000 promised body bytes, then nothing
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {CLIENT_KEY}\r\ncontent-length: 1000\r\n\r\n".encode()
        + b'{"model": '
    )
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy:
        port = proxy.port
        with client(proxy.base_url) as c:  # warm up: the pools and lazy imports are not the flood's descriptors
            assert chat(c, table.prompts[0]).status_code == 200
        baseline = _open_fds()
        silent = [_connect(port) for _ in range(150)]
        slow_headers = [_connect(port, send=slow_header_bytes) for _ in range(50)]
        slow_bodies = [_connect(port, send=slow_body_bytes) for _ in range(100)]
        everyone = silent + slow_headers + slow_bodies
        peak, t_end = 0, time.monotonic() + 0.4
        while time.monotonic() < t_end:
            peak = max(peak, _open_fds())
            time.sleep(0.02)
        assert peak >= baseline + len(everyone) + 100  # the server had accepted (most of) them
        closed, received = _closed_by_server(everyone, within=10)
        assert closed == len(everyone)
        # Slow bodies got an OpenAI-shaped 408; silent and slow-header clients are simply closed.
        for s in slow_bodies:
            head, _, body = received[id(s)].partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), head
            assert json.loads(body)["error"]["code"] == "request_timeout"
        assert all(received[id(s)] == b"" for s in silent + slow_headers)
        # The server's ends are released while the clients still hold theirs ...
        assert _open_fds() <= baseline + len(everyone) + 10
        for s in everyone:
            s.close()
        # ... and once the clients let go, the process is back where it started (within 10%).
        assert _open_fds() <= baseline * 1.1 + 2
        with client(proxy.base_url) as c:  # and it still serves
            assert chat(c, table.prompts[1]).status_code == 200


def test_connections_past_the_cap_get_a_clean_503(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    set_proxy_options(folder, max_connections=20, header_timeout_s=30)
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy:
        before = _open_fds()
        held = [_connect(proxy.port) for _ in range(20)]
        # The server runs in this process: its accepted ends show here too (a fixed sleep flakes on a busy machine).
        _wait_until(lambda: _open_fds() >= before + 40, within=10)
        try:
            with client(proxy.base_url) as c:
                r = chat(c, table.prompts[0])
                assert r.status_code == 503 and r.headers["content-type"] == "application/json"
                assert r.json()["error"]["code"] == "too_many_connections"
        finally:
            for s in held:
                s.close()
        _wait_until(lambda: _open_fds() <= before + 2, within=10)  # the server noticed the closes
        with client(proxy.base_url) as c:
            assert chat(c, table.prompts[0]).status_code == 200


def test_idle_keep_alive_connections_are_closed_after_the_keep_alive_timeout(table, replay, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    set_proxy_options(folder, keep_alive_s=0.3)
    with ProxyServer(build_proxy_app(folder, environ=ENV)) as proxy:
        s = _connect(proxy.port)
        s.setblocking(True)
        s.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.setblocking(False)
        closed, _ = _closed_by_server([s], within=3)
        s.close()
        assert closed == 1
