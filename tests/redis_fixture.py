"""A real Redis server for tests: Debian's ``redis-server`` in a temporary folder, on 127.0.0.1 at a free port.

No snapshots (``--save ""``) and, unless asked (``persist=True``: an append-only file fsynced on every
write, so data survives a kill), no append-only file; loopback only, no password. :class:`RedisServer` can be
stopped (SIGKILL, as a crash) and started again on the same port, for tests of what replicas do while Redis is
away. :func:`redis_binary` returns None where the binary is missing (``apt-get install redis-server``); the
fixture skips with that reason, and only then.

Example (in a test module)::

    from redis_fixture import redis_server  # noqa: F401 - the fixture

    def test_x(redis_server):
        url = redis_server.url   # redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_binary", "redis_server"]


def redis_binary() -> Path | None:
    """``redis-server`` (Debian's ``/usr/bin/redis-server`` first, then ``PATH``), or None."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process in a temporary folder; :meth:`kill` and :meth:`start` again keep the port."""

    def __init__(self, binary: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.binary = binary
        self.persist = persist
        """Keep the data across :meth:`kill` (an append-only file fsynced on every write)."""
        self.port = port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="routelab-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        cmd = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--dir", str(self.root), "--protected-mode", "yes", "--loglevel", "warning",
               *(["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"])]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the process owns it until it exits
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {(self.root / 'server.log').read_text()[-500:]}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout:g} s")

    def ping(self) -> bool:
        """Whether the server answers PING (a raw socket: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server at once (SIGKILL: as a crash, no goodbye to clients) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Kill the server and remove its folder."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture()
def redis_server() -> Iterator[RedisServer]:
    """A fresh Redis for one test (skipped only when ``redis-server`` is not installed)."""
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); these tests need a real Redis")
    if importlib.util.find_spec("redis") is None:
        pytest.skip("the Python package 'redis' is not installed (pip install -e \".[server]\")")
    with RedisServer(binary) as server:
        yield server
