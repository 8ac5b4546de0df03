"""A real PostgreSQL server for tests: ``initdb`` into a temporary folder, started and stopped with ``pg_ctl``.

It listens on 127.0.0.1 at a free port and on a unix socket in its own folder, with ``trust`` authentication
for the ``postgres`` user (loopback only). The binaries are Debian's (``apt-get install postgresql``:
``/usr/lib/postgresql/<version>/bin``) or any ``initdb``/``pg_ctl`` on ``PATH``; :func:`postgres_binaries`
returns None where they are missing, and the fixtures skip with that reason, and only then.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``), and its
folder is a fresh ``/tmp/routelab-pg-*`` owned by that user (pytest's ``tmp_path`` is private to root).

Example (in a test module)::

    from pg_fixture import postgres  # noqa: F401 - the session fixture

    def test_x(postgres):
        uri = postgres.create_database("mydb")   # postgresql://postgres@127.0.0.1:PORT/mydb
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals.cli._stack_topology import postgres_bin_folder

__all__ = ["PostgresServer", "free_port", "postgres", "postgres_binaries"]

#: The user the server runs as (and the database superuser); initdb refuses root.
PG_USER = "postgres"


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (Debian's newest version first, then ``PATH``), or None."""
    return postgres_bin_folder()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on 127.0.0.1:``port`` and a unix socket in that folder.

    Use as a context manager (or :meth:`start` / :meth:`stop`); the folder is removed on stop.
    """

    def __init__(self, bin_dir: Path, port: int | None = None) -> None:
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="routelab-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        self.started = False

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the ``postgres`` user when we are root."""
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-800:]}")
        return out

    def start(self) -> PostgresServer:
        """``initdb`` (trust auth, UTF-8) and ``pg_ctl start``, waiting until it accepts connections."""
        self.socket_dir.mkdir()
        if self._as_root:
            shutil.chown(self.root, PG_USER)
            shutil.chown(self.socket_dir, PG_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        # fsync off: a throwaway test cluster; small buffers: several helpers share the machine.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.started = True
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` and remove the folder."""
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def uri(self, database: str = "postgres", *, via_socket: bool = False) -> str:
        """A SQLAlchemy/MLflow URI: TCP on 127.0.0.1, or the unix socket (``?host=<socket folder>``)."""
        if via_socket:
            return f"postgresql://{PG_USER}@/{database}?host={self.socket_dir}&port={self.port}"
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """``createdb name`` over the socket; returns its TCP URI."""
        self._run("createdb", "-h", str(self.socket_dir), "-p", str(self.port), "-U", PG_USER, name)
        return self.uri(name)

    def server_log(self) -> str:
        """The server's log so far (for assertion messages)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the test session; skips only where the PostgreSQL binaries are missing."""
    bin_dir = postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    with PostgresServer(bin_dir) as server:
        yield server
