"""``routelab stack EXPORT start|stop|status|upstreams``: a replicated RouteLab deployment on this machine.

``start`` runs, all on 127.0.0.1: PostgreSQL (a cluster ``initdb``-ed into the state folder), an MLflow server
whose backend store is that PostgreSQL, Redis, two proxy replicas of the export (``routelab serve``) sharing
their state through that Redis (``[state] url`` in the replicas' ``upstreams.toml``), and nginx balancing the
two. Ports: nginx on ``--port`` (default 8080), the replicas on +1 and +2, MLflow +3, Redis +4, PostgreSQL +5.
It prints the URLs. ``stop`` stops every process it started (idempotent; ``--purge`` also deletes the state
folder, PostgreSQL's data included). ``status`` prints each service's state (exit 0 when all run, 3 otherwise).
``upstreams`` prints the replicas' ``upstreams.toml`` (the export's, with ``[state] url = --state-url``): the
container deployment (``deploy/compose.yaml``) starts its replicas from it.

Everything it writes is under the state folder (``--state-dir``, default ``.routelab/stack`` in the current
folder): generated configs, logs, pid files, PostgreSQL's data, MLflow's artifacts. Runs as any user; as root,
PostgreSQL runs as the ``postgres`` user (``initdb`` refuses root) and nginx's workers as root. Linux only
(process bookkeeping reads ``/proc``). ``scripts/stack`` runs this command.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from evals.cli._stack_topology import (
    DEFAULT_PORT,
    REPLICAS,
    SERVICES,
    Binaries,
    StackError,
    find_binaries,
    port_is_free,
    ports_for,
    render_nginx_conf,
    render_upstreams,
    shared_state_supported,
)

__all__ = ["register", "start", "status", "stop"]

STATE_FILE = "stack.json"
PG_USER = "postgres"
MLFLOW_DB = "mlflow"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stack`` sub-command."""
    p = subparsers.add_parser(
        "stack",
        help="start/stop a replicated stack on this machine: PostgreSQL, MLflow, Redis, 2 proxies, nginx",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", help="export folder written by `routelab export`")
    p.add_argument("action", choices=["start", "stop", "status", "upstreams"])
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="nginx's port; the others follow it (default 8080)")
    p.add_argument("--state-dir", default=".routelab/stack", help="where configs, logs and data go")
    p.add_argument("--upstreams", help="start the replicas from this upstreams.toml instead of the folder's")
    p.add_argument("--no-auth", action="store_true", help="replicas accept requests without a client key")
    p.add_argument("--purge", action="store_true", help="with stop: also delete the state folder and its data")
    p.add_argument(
        "--state-url",
        help="with upstreams: the Redis URL written as [state] url (default: the stack's own Redis for --port)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    if args.action == "start":
        stack = start(args.folder, state_dir, port=args.port, upstreams=args.upstreams, no_auth=args.no_auth)
        print(_urls_text(stack))
        return 0
    if args.action == "stop":
        print(stop(state_dir, purge=args.purge))
        return 0
    if args.action == "upstreams":
        export = Path(args.folder)
        source = Path(args.upstreams) if args.upstreams else export / "upstreams.toml"
        if not source.is_file():
            raise StackError(f"{source}: no upstreams.toml")
        url = args.state_url or f"redis://127.0.0.1:{ports_for(args.port)['redis']}/0"
        print(render_upstreams(source.read_text(encoding="utf-8"), url, source=str(source)), end="")
        return 0
    running, text = status(state_dir)
    print(text)
    return 0 if running else 3


# ---------------------------------------------------------------------------------------------- processes
def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _group_members(pgid: int, since: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` started at or after ``since`` (pid reuse guard)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid and int(fields[19]) >= since:
            members.append(int(entry.name))
    return members


def _stop_group(pgid: int, since: int, grace_s: float = 20.0) -> None:
    """SIGTERM to the group, SIGKILL to whatever is left after ``grace_s``; returns when none is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        members = _group_members(pgid, since)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _group_members(pgid, since):
            time.sleep(0.1)
    if left := _group_members(pgid, since):
        raise StackError(f"processes {left} of group {pgid} survived SIGKILL")


def _spawn(name: str, cmd: list[str], state_dir: Path, env: dict[str, str] | None = None) -> dict:
    """Start ``cmd`` in its own session (so stop can end it and its children together), output to its log."""
    log = state_dir / "logs" / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env=env, cwd=state_dir,
        )  # fmt: skip
    return {"name": name, "pid": proc.pid, "since": _start_time(proc.pid) or 0, "log": str(log), "_proc": proc}


def _log_tail(path: str | Path, n: int = 15) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in lines[-n:])


def _wait(name: str, record: dict, ready, timeout_s: float) -> None:
    """Poll ``ready()`` until it is true; fail early (with the log's tail) if the process exits."""
    deadline = time.monotonic() + timeout_s
    proc = record.get("_proc")
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{name} exited with status {proc.returncode}; its log {record['log']}:\n"
                             f"{_log_tail(record['log'])}")  # fmt: skip
        if time.monotonic() > deadline:
            raise StackError(f"{name} did not come up within {timeout_s:.0f} s; its log {record['log']}:\n"
                             f"{_log_tail(record['log'])}")  # fmt: skip
        time.sleep(0.2)


def _http_ok(url: str, any_status: bool = False) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own loopback URL
            return r.status == 200
    except urllib.error.HTTPError:
        return any_status  # an HTTP answer: the server is up (a proxy with no upstream left answers 503)
    except (OSError, urllib.error.URLError):
        return False


def _redis_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- PostgreSQL
def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_folder(state_dir: Path) -> Path:
    """Where the cluster lives: ``state/pg``, or, as root when the ``postgres`` user cannot reach the state
    folder (e.g. under a private /tmp/pytest-of-root), a folder of its own under /tmp linked from ``state/pg``."""
    link = state_dir / "pg"
    if link.is_symlink() or link.exists():
        return link.resolve()
    if os.geteuid() == 0 and subprocess.run(_as_pg_user(["test", "-x", str(state_dir)])).returncode != 0:
        folder = Path(f"/tmp/routelab-stack-pg-{hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]}")
        folder.mkdir(exist_ok=True)
        link.symlink_to(folder)
    else:
        link.mkdir()
    folder = link.resolve()
    if os.geteuid() == 0:
        shutil.chown(folder, PG_USER)
    return folder


def _pg_run(bins: Binaries, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(_as_pg_user([str(bins.postgres_bin / args[0]), *args[1:]]), capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    if check and out.returncode != 0:
        raise StackError(f"postgres: {args[0]} failed: {(out.stderr or out.stdout).strip()[-600:]}")
    return out


def _start_postgres(bins: Binaries, state_dir: Path, port: int) -> dict:
    folder = _pg_folder(state_dir)
    data, sock = folder / "data", folder / "sock"
    for sub in (sock,):
        sub.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(sub, PG_USER)
    if not (data / "PG_VERSION").exists():
        _pg_run(bins, "initdb", "-D", str(data), "-U", PG_USER, "--auth=trust", "--encoding=UTF8", "--locale=C")
    log = folder / "server.log"  # beside the data: the postgres user may not reach state/logs (see _pg_folder)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sock}"
    _pg_run(bins, "pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "120", "start")
    made = _pg_run(bins, "createdb", "-h", str(sock), "-p", str(port), "-U", PG_USER, MLFLOW_DB, check=False)
    if made.returncode != 0 and "already exists" not in made.stderr:
        raise StackError(f"postgres: createdb {MLFLOW_DB} failed: {made.stderr.strip()[-600:]}")
    return {"name": "postgres", "data": str(data), "log": str(log), "pg_bin": str(bins.postgres_bin)}


def _postgres_running(record: dict) -> bool:
    pid_file = Path(record["data"]) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _start_time(pid) is not None


def _stop_postgres(record: dict) -> None:
    if not _postgres_running(record):
        return
    pg_ctl = str(Path(record["pg_bin"]) / "pg_ctl")
    subprocess.run(_as_pg_user([pg_ctl, "-D", record["data"], "-m", "fast", "-w", "-t", "60", "stop"]),
                   capture_output=True, timeout=90)  # fmt: skip
    if _postgres_running(record):
        raise StackError(f"postgres did not stop; see {record['log']}")


# ---------------------------------------------------------------------------------------------- start/stop
def _read_state(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise StackError(f"{state_dir / STATE_FILE}: unreadable ({exc}); stop the processes by hand") from exc


def _write_state(state_dir: Path, stack: dict) -> None:
    clean = {**stack, "services": [{k: v for k, v in s.items() if k != "_proc"} for s in stack["services"]]}
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(clean, indent=2))
    tmp.replace(state_dir / STATE_FILE)


def _running(record: dict) -> bool:
    if record["name"] == "postgres":
        return _postgres_running(record)
    return bool(_group_members(record["pid"], record["since"]))


def start(
    folder: str | os.PathLike[str],
    state_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    upstreams: str | os.PathLike[str] | None = None,
    no_auth: bool = False,
) -> dict:
    """Start the stack for an export folder; returns its record (URLs, ports, processes). See the module doc.

    Raises:
        StackError: a missing program, a taken port, a stack already running in ``state_dir``, or a service
            that did not come up (everything started so far is stopped again first).
    """
    if any(c.isspace() for c in str(state_dir)):  # nginx's and PostgreSQL's options are space-separated
        raise StackError(f"--state-dir {str(state_dir)!r}: choose a path without spaces")
    export = Path(folder).resolve()
    if not (export / "router.json").is_file():
        raise StackError(f"{export}: not an export folder (no router.json); write one with `routelab export`")
    source = Path(upstreams).resolve() if upstreams else export / "upstreams.toml"
    if not source.is_file():
        raise StackError(f"{source}: no upstreams.toml to start the replicas from")
    bins = find_binaries()
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_state(state_dir)
    if previous and any(_running(s) for s in previous["services"]):
        raise StackError(f"a stack is already running from {state_dir}; `routelab stack {export} stop` first")
    ports = ports_for(port)
    taken = [f"{name} {p}" for name, p in ports.items() if not port_is_free(p)]
    if taken:
        raise StackError(f"port(s) already in use on 127.0.0.1: {', '.join(taken)}; pick another --port")
    for sub in ("logs", "nginx", "redis", "mlflow-artifacts"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)

    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    shared = shared_state_supported()
    (state_dir / "upstreams.toml").write_text(
        render_upstreams(source.read_text(encoding="utf-8"), redis_url if shared else None, source=str(source))
    )
    user = getpass.getuser() if os.geteuid() == 0 else None
    nginx_conf = state_dir / "nginx" / "nginx.conf"
    nginx_conf.write_text(render_nginx_conf(
        listen=f"127.0.0.1:{ports['nginx']}", replicas=[f"127.0.0.1:{ports[r]}" for r in REPLICAS],
        prefix=str(state_dir / "nginx"), logs=str(state_dir / "nginx"), user=user,
    ))  # fmt: skip
    stack = {
        "export": str(export),
        "state_dir": str(state_dir),
        "ports": ports,
        "shared_state": shared,
        "urls": {
            "proxy": f"http://127.0.0.1:{ports['nginx']}/v1",
            **{r: f"http://127.0.0.1:{ports[r]}/v1" for r in REPLICAS},
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "redis": redis_url,
            "postgres": f"postgresql://{PG_USER}@127.0.0.1:{ports['postgres']}/{MLFLOW_DB}",
        },
        "services": [],
    }
    try:
        _start_all(stack, bins, state_dir, export, no_auth)
    except BaseException:
        _stop_services(stack["services"])
        _write_state(state_dir, {**stack, "services": []})
        raise
    return stack


def _start_all(stack: dict, bins: Binaries, state_dir: Path, export: Path, no_auth: bool) -> None:
    ports, urls, services = stack["ports"], stack["urls"], stack["services"]

    def started(record: dict) -> dict:
        services.append(record)
        _write_state(state_dir, stack)  # at once: a stop finds it even if a later service fails
        return record

    started(_start_postgres(bins, state_dir, ports["postgres"]))
    redis = started(_spawn("redis", [str(bins.redis_server), "--bind", "127.0.0.1", "--port", str(ports["redis"]),
                                     "--save", "", "--appendonly", "no", "--dir", str(state_dir / "redis"),
                                     "--daemonize", "no"], state_dir))  # fmt: skip
    mlflow = started(_spawn("mlflow", [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", urls["postgres"],
        "--artifacts-destination", str(state_dir / "mlflow-artifacts"),
        "--host", "127.0.0.1", "--port", str(ports["mlflow"]), "--workers", "1",
    ], state_dir))  # fmt: skip
    replicas = []
    for name in REPLICAS:
        cmd = [sys.executable, "-m", "evals.cli", "serve", str(export), "--port", str(ports[name]),
               "--upstreams", str(state_dir / "upstreams.toml"), "--log-level", "warning"]  # fmt: skip
        replicas.append(started(_spawn(name, cmd + (["--no-auth"] if no_auth else []), state_dir)))
    _wait("redis", redis, lambda: _redis_ok(ports["redis"]), 30)
    for name, record in zip(REPLICAS, replicas, strict=True):
        _wait(name, record, lambda p=ports[name]: _http_ok(f"http://127.0.0.1:{p}/healthz", any_status=True), 180)
    nginx = [str(bins.nginx), "-p", str(state_dir / "nginx"), "-c", str(state_dir / "nginx" / "nginx.conf"),
             "-e", str(state_dir / "nginx" / "error.log")]  # fmt: skip
    checked = subprocess.run([*nginx, "-t", "-q"], capture_output=True, text=True)
    if checked.returncode != 0:
        raise StackError(f"nginx refused its generated config: {checked.stderr.strip()[-600:]}")
    balancer = started(_spawn("nginx", nginx, state_dir))
    _wait("nginx", balancer, lambda: _http_ok(f"http://127.0.0.1:{ports['nginx']}/healthz", any_status=True), 30)
    # the first start creates MLflow's tables in PostgreSQL: the slowest step, waited for last
    _wait("mlflow", mlflow, lambda: _http_ok(f"{urls['mlflow']}/health"), 240)


def _stop_services(services: list[dict]) -> list[str]:
    """Stop services in reverse start order; returns the names of those that were running."""
    stopped = []
    for record in reversed(services):
        was_running = _running(record)
        if record["name"] == "postgres":
            _stop_postgres(record)
        else:
            _stop_group(record["pid"], record["since"])
        if was_running:
            stopped.append(record["name"])
    return stopped


def stop(state_dir: Path, *, purge: bool = False) -> str:
    """Stop every process of the stack in ``state_dir`` (nothing running is not an error); a one-line summary."""
    stack = _read_state(state_dir)
    stopped = _stop_services(stack["services"]) if stack else []
    if stack:
        _write_state(state_dir, {**stack, "services": []})
    if purge and state_dir.exists():
        pg = state_dir / "pg"
        if pg.is_symlink():
            shutil.rmtree(pg.resolve(), ignore_errors=True)
        shutil.rmtree(state_dir)
    what = f"stopped {', '.join(stopped)}" if stopped else "nothing was running"
    return f"routelab stack: {what}{f'; deleted {state_dir}' if purge else ''}"


def status(state_dir: Path) -> tuple[bool, str]:
    """(whether every service runs, one line per service with its state and URL)."""
    stack = _read_state(state_dir)
    if not stack or not stack["services"]:
        return False, f"routelab stack: not running (state folder {state_dir})"
    by_name = {s["name"]: s for s in stack["services"]}
    where = {"nginx": "proxy", "postgres": "postgres", "redis": "redis", "mlflow": "mlflow"}
    lines, all_up = [], True
    for name in SERVICES:
        record = by_name.get(name)
        up = bool(record) and _running(record)
        all_up &= up
        lines.append(f"  {name:9s} {'running' if up else 'STOPPED':8s} {stack['urls'][where.get(name, name)]}")
    return all_up, f"routelab stack ({state_dir}):\n" + "\n".join(lines)


def _urls_text(stack: dict) -> str:
    u = stack["urls"]
    state = ("shared through Redis ([state] url)" if stack["shared_state"]
             else "per replica (this RouteLab has no [state] url yet)")  # fmt: skip
    return "\n".join([
        f"routelab stack: running from {stack['state_dir']} (logs in logs/)",
        f"  proxy (nginx over 2 replicas) {u['proxy']}",
        f"  replicas                      {u['proxy-a']}  {u['proxy-b']}  (state {state})",
        f"  MLflow server                 {u['mlflow']}  (export MLFLOW_TRACKING_URI={u['mlflow']})",
        f"  PostgreSQL (MLflow's store)   {u['postgres']}",
        f"  Redis                         {u['redis']}",
        f"stop it with: routelab stack {stack['export']} stop --state-dir {stack['state_dir']}",
    ])  # fmt: skip
