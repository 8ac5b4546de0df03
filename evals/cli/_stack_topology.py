"""The replicated stack's topology and generated configs, shared by ``routelab stack`` and ``deploy/``.

One place says which services the stack runs and on which ports, and renders the two files the services read:
nginx's config (two proxy replicas behind one load balancer) and the replicas' ``upstreams.toml`` (the
export's, with ``[state] url`` pointing at the shared Redis). ``deploy/compose.yaml`` and ``deploy/nginx.conf``
have the same topology; ``tests/test_stack.py`` checks they agree with this module.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
import shutil
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

from evals.exceptions import WorkbenchError

__all__ = [
    "DEFAULT_PORT",
    "PORT_OFFSETS",
    "REPLICAS",
    "SERVICES",
    "Binaries",
    "StackError",
    "find_binaries",
    "port_is_free",
    "ports_for",
    "render_nginx_conf",
    "render_upstreams",
    "shared_state_supported",
]


class StackError(WorkbenchError):
    """The stack cannot start, stop or report (a missing binary, a taken port, a service that did not come up)."""


#: The services in start order (stop runs in reverse): storage first, the load balancer last.
SERVICES = ("postgres", "redis", "mlflow", "proxy-a", "proxy-b", "nginx")
#: The proxy replicas nginx balances (their service names).
REPLICAS = ("proxy-a", "proxy-b")
#: ``--port N``: nginx listens on N, each other service on N + its offset (all on 127.0.0.1).
PORT_OFFSETS = {"nginx": 0, "proxy-a": 1, "proxy-b": 2, "mlflow": 3, "redis": 4, "postgres": 5}
DEFAULT_PORT = 8080


def ports_for(base: int) -> dict[str, int]:
    """Each service's port for ``--port base``."""
    if not 1 <= base <= 65535 - max(PORT_OFFSETS.values()):
        raise StackError(f"--port {base}: must be between 1 and {65535 - max(PORT_OFFSETS.values())}")
    return {name: base + PORT_OFFSETS[name] for name in SERVICES}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound right now (nothing listens there)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for a server
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Binaries:
    """Where the stack's programs are."""

    nginx: Path
    redis_server: Path
    postgres_bin: Path  # the folder with initdb, pg_ctl, createdb


def postgres_bin_folder() -> Path | None:
    """Debian's newest ``/usr/lib/postgresql/<version>/bin``, else the folder of ``initdb`` on PATH (or None).

    The one lookup of PostgreSQL's server binaries: the stack and the tests' PostgreSQL fixture both use it.
    """

    def version(folder: str) -> int:
        part = Path(folder).parent.name
        return int(part) if part.isdigit() else 0

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(Path(folder, b).is_file() for b in ("initdb", "pg_ctl", "createdb")):
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl") and shutil.which("createdb"):
        return Path(os.path.realpath(initdb)).parent
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _program(name: str, variable: str, fallback: str) -> tuple[Path | None, str]:
    """(the program ``name``: ``$variable`` when set, else on PATH, else ``fallback``; where it was looked for)."""
    chosen = os.environ.get(variable)
    if chosen:
        return (Path(chosen) if _executable(chosen) else None), f"{chosen} (from {variable})"
    found = shutil.which(name) or (fallback if _executable(fallback) else None)
    return (Path(found) if found else None), f"{name} on PATH or {fallback}"


def find_binaries() -> Binaries:
    """The programs the stack runs; one error naming every missing one, where it was looked for, and its package.

    ``ROUTELAB_NGINX`` and ``ROUTELAB_REDIS_SERVER`` point at other builds of nginx and redis-server.
    """
    nginx, nginx_where = _program("nginx", "ROUTELAB_NGINX", "/usr/sbin/nginx")
    redis, redis_where = _program("redis-server", "ROUTELAB_REDIS_SERVER", "/usr/bin/redis-server")
    pg = postgres_bin_folder()
    missing = [
        text
        for found, text in (
            (nginx, f"nginx: not found at {nginx_where} (apt-get install nginx)"),
            (redis, f"redis-server: not found at {redis_where} (apt-get install redis-server)"),
            (pg, "PostgreSQL's initdb/pg_ctl/createdb (apt-get install postgresql)"),
        )
        if found is None
    ]
    for module, text in (("mlflow", "the mlflow package"), ("psycopg", 'psycopg (pip install -e ".[server]")')):
        if importlib.util.find_spec(module) is None:  # found, not imported: importing mlflow takes seconds
            missing.append(text)
    if missing:
        raise StackError(f"missing: {'; '.join(missing)}")
    assert nginx and redis and pg  # for the type checker: checked just above
    return Binaries(nginx=nginx, redis_server=redis, postgres_bin=pg)


def render_nginx_conf(
    *, listen: str, replicas: list[str], prefix: str, logs: str | None = None, user: str | None = None
) -> str:
    """nginx's config: one server on ``listen`` balancing ``replicas`` (``host:port``) round-robin.

    The pid file and temporary files are under ``prefix``, the logs in the folder ``logs`` (None, in a
    container: ``/dev/stdout`` and ``/dev/stderr``), so nginx runs as any user without touching ``/var``.
    ``user`` is only written when the master runs as root (workers then keep that user instead of dropping to
    ``nobody``, who could not write under ``prefix``).

    Why these proxy settings: answers stream (server-sent events), so nothing is buffered; a POST is never sent
    to a second replica after the first one got it (``proxy_next_upstream`` without ``non_idempotent``), so
    nginx cannot double a paid request, while a replica that refuses connections is skipped.
    ``x-routelab-replica`` names the replica that answered.
    """
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = "\n".join(f"        server {r} max_fails=1 fail_timeout=5s;" for r in replicas)
    access = f"{logs}/access.log routelab buffer=64k flush=1s" if logs else "/dev/stdout routelab"
    error = f"{logs}/error.log" if logs else "/dev/stderr"
    return f"""# Generated by RouteLab's stack (evals/cli/_stack_topology.py): nginx balancing the proxy replicas.
{f"user {user};" if user else ""}
daemon off;
worker_processes 1;
# each proxied request holds two connections (client, replica); streamed answers hold them for their length
worker_rlimit_nofile 8192;
pid {prefix}/nginx.pid;
error_log {error} warn;

events {{
    worker_connections 4096;
}}

http {{
{temp}
    log_format routelab '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                        'replica=$upstream_addr upstream_s=$upstream_response_time';
    access_log {access};

    upstream routelab_replicas {{
{servers}
        keepalive 64;
    }}

    server {{
        listen {listen};
        client_max_body_size 16m;

        location / {{
            proxy_pass http://routelab_replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_next_upstream error timeout;
            add_header x-routelab-replica $upstream_addr always;
        }}
    }}
}}
"""


_SECTION = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


def render_upstreams(text: str, state_url: str | None, *, source: str = "upstreams.toml") -> str:
    """The replicas' ``upstreams.toml``: ``text`` with its ``[state]`` section replaced by ``url = state_url``.

    With ``state_url`` None the ``[state]`` section is only removed (replicas keep in-process state). Any other
    key of the original ``[state]`` (namespace, timeouts) is kept.
    """
    try:
        original = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{source}: not valid TOML ({exc})") from exc
    kept, in_state = [], False
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            in_state = m.group(1).strip() == "state"
        if not in_state:
            kept.append(line)
    out = "\n".join(kept).rstrip() + "\n"
    if state_url is not None:
        extra = {k: v for k, v in original.get("state", {}).items() if k != "url"}
        lines = [f'url = "{state_url}"'] + [f"{k} = {_toml_value(v)}" for k, v in extra.items()]
        out += "\n# Written by RouteLab's stack: the replicas share their state through this Redis.\n[state]\n"
        out += "\n".join(lines) + "\n"
    tomllib.loads(out)  # what we write must parse
    return out


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def shared_state_supported() -> bool:
    """Whether this RouteLab's ``upstreams.toml`` has ``[state] url`` (replicas sharing state through Redis)."""
    from routers.export.settings import shared_state

    return any(f.name == "url" for f in dataclasses.fields(shared_state.SharedStateSettings))
