"""The replicated stack (issue 16, item 4): ``scripts/stack`` for real on loopback, and ``deploy/`` kept in step.

The slow test starts the whole stack (PostgreSQL, Redis, an MLflow server on that PostgreSQL, two proxy replicas
of a small export whose upstreams are the replay server, nginx in front) with the one command, sends requests
through nginx, sees both replicas answer, and stops it: no process of it is left. The fast tests check the
container deployment (``deploy/compose.yaml``, ``deploy/nginx.conf``) against the topology ``scripts/stack``
uses (Docker is not available in CI, so that file is checked, not run), nginx's acceptance of the generated
config, and the errors the command gives.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from evals.cli import main
from evals.cli._stack_topology import (
    DEFAULT_PORT,
    REPLICAS,
    SERVICES,
    StackError,
    find_binaries,
    port_is_free,
    ports_for,
    render_nginx_conf,
    render_upstreams,
)
from evals.cli.stack import _group_members, _postgres_running

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CLIENT_KEY = "stack-client-key-42"


def _binaries_or_skip():
    try:
        return find_binaries()
    except StackError as exc:
        pytest.skip(str(exc))


def _free_base() -> int:
    """A --port whose six ports (nginx .. postgres) are all free now, below Linux's ephemeral range (32768+)
    so that no client socket of another process takes one between this check and the start."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(20000, 32700)
        if all(port_is_free(p) for p in ports_for(base).values()):
            return base
    raise AssertionError("no block of 6 free ports found")


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory: pytest.TempPathFactory):
    """(a small knn export whose upstreams are a replay server on loopback, the table it replays)."""
    sys.path.insert(0, str(ROOT / "tests" / "routers"))
    from export_helpers import PRICES, point_upstreams, small_table

    from evals.serving import ReplayServer
    from routers import make_router
    from routers.export import export_router

    table = small_table()
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)
    folder = export_router(router, tmp_path_factory.mktemp("stack") / "export", lam=0.05, prices=PRICES)
    with ReplayServer(table) as replay:
        point_upstreams(folder, {m: replay.base_url for m in table.models}, key_env="")
        yield folder, table


# ------------------------------------------------------------------------------------- deploy/ in step
def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_services_and_ports_of_scripts_stack() -> None:
    compose = _compose()
    services = compose["services"]
    assert sorted(services) == sorted(SERVICES)
    default = ports_for(DEFAULT_PORT)
    # published on the host's loopback at the ports scripts/stack gives them with its default --port
    assert services["nginx"]["ports"] == [f"127.0.0.1:{default['nginx']}:8080"]
    assert services["mlflow"]["ports"] == [f"127.0.0.1:{default['mlflow']}:5000"]
    backend = services["mlflow"]["command"][services["mlflow"]["command"].index("--backend-store-uri") + 1]
    assert re.fullmatch(r"postgresql://postgres:\$\{POSTGRES_PASSWORD:-\w+\}@postgres:5432/mlflow", backend)
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "mlflow"
    for name in REPLICAS:  # both replicas: the same image and command, state in the compose Redis
        replica = services[name]
        assert replica == services[REPLICAS[0]]
        command = " ".join(replica["command"])
        assert "routelab stack /export upstreams --state-url redis://redis:6379/0 > /tmp/upstreams.toml" in command
        assert "routelab serve /export --host 0.0.0.0 --port 8080 --upstreams /tmp/upstreams.toml" in command
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["redis"]["command"][0] == "redis-server"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'pip install ".[server]"' in dockerfile and services["mlflow"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_deploy_nginx_conf_is_the_one_scripts_stack_renders_for_the_compose_replicas() -> None:
    expected = render_nginx_conf(listen="8080", replicas=[f"{r}:8080" for r in REPLICAS], prefix="/tmp", logs=None)
    assert (DEPLOY / "nginx.conf").read_text() == expected, (
        "deploy/nginx.conf differs from render_nginx_conf(); regenerate it (see this test)"
    )


def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    bins = _binaries_or_skip()
    user = "root" if os.geteuid() == 0 else None
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(listen="127.0.0.1:1", replicas=["127.0.0.1:2", "127.0.0.1:3"],
                                      prefix=str(tmp_path), logs=str(tmp_path), user=user))  # fmt: skip
    done = subprocess.run([str(bins.nginx), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_replica_upstreams_get_the_shared_state_url_and_keep_the_rest() -> None:
    text = (
        '[proxy]\ncooldown_s = 30.0\n\n[state]\nurl = "redis://old:1/0"\ntimeout_ms = 20\n\n'
        '[upstreams."a"]\nbase_url = "https://example.invalid/v1"\n'
    )
    out = tomllib.loads(render_upstreams(text, "redis://127.0.0.1:6390/0"))
    assert out["state"] == {"url": "redis://127.0.0.1:6390/0", "timeout_ms": 20}
    assert out["proxy"] == {"cooldown_s": 30.0} and out["upstreams"]["a"]["base_url"].startswith("https://")
    assert "state" not in tomllib.loads(render_upstreams(text, None))
    with pytest.raises(StackError, match="x.toml: not valid TOML"):
        render_upstreams("[proxy\n", "redis://x", source="x.toml")


@pytest.mark.slow  # the export fixture fits a router (seconds)
def test_a_taken_port_is_named_and_nothing_starts(export_folder, tmp_path: Path, capsys) -> None:
    _binaries_or_skip()
    folder, _ = export_folder
    base = _free_base()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports_for(base)["redis"]))
        busy.listen()
        status = main(["stack", str(folder), "--port", str(base), "--state-dir", str(tmp_path / "s"), "start"])
    err = capsys.readouterr().err
    assert status == 2
    assert f"port(s) already in use on 127.0.0.1: redis {base + 4}; pick another --port" in err
    assert not (tmp_path / "s" / "stack.json").exists()  # refused before anything started


def test_a_missing_program_is_named_with_where_it_was_looked_for(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("ROUTELAB_NGINX", "/nonexistent/nginx")
    monkeypatch.setenv("ROUTELAB_REDIS_SERVER", str(tmp_path))  # a folder, not a program
    with pytest.raises(StackError) as exc:
        find_binaries()
    assert str(exc.value).startswith(
        "missing: nginx: not found at /nonexistent/nginx (from ROUTELAB_NGINX) (apt-get install nginx); "
        f"redis-server: not found at {tmp_path} (from ROUTELAB_REDIS_SERVER) (apt-get install redis-server)"
    )


def test_not_an_export_folder_and_stopping_nothing(tmp_path: Path, capsys) -> None:
    assert main(["stack", str(tmp_path), "--state-dir", str(tmp_path / "s"), "start"]) == 2
    assert "not an export folder (no router.json)" in capsys.readouterr().err
    assert main(["stack", str(tmp_path), "--state-dir", str(tmp_path / "s"), "stop"]) == 0  # idempotent
    assert "nothing was running" in capsys.readouterr().out
    assert main(["stack", str(tmp_path), "--state-dir", str(tmp_path / "s"), "status"]) == 3
    assert main(["stack", str(tmp_path), "--state-dir", str(tmp_path / "a b"), "start"]) == 2
    assert "choose a path without spaces" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the stack, for real
def _stack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROUTELAB_PROXY_KEYS": CLIENT_KEY}
    return subprocess.run(["bash", str(ROOT / "scripts" / "stack"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and text in cmdline and int(entry.name) != os.getpid():
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def _metric(text: str, line: str) -> float:
    m = re.search(rf"^{re.escape(line)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{line} not in /metrics"
    return float(m.group(1))


@pytest.mark.slow
def test_one_command_starts_the_replicated_stack_and_stops_it_cleanly(export_folder, tmp_path: Path) -> None:
    _binaries_or_skip()
    pytest.importorskip("psycopg", reason='the [server] extra: pip install -e ".[server]"')
    import psycopg

    folder, table = export_folder
    state = tmp_path / "state"
    base = _free_base()
    ports = ports_for(base)
    common = [str(folder), "--port", str(base), "--state-dir", str(state)]
    try:
        started = _stack(*common, "start")
        assert started.returncode == 0, (started.stdout + started.stderr)[-3000:]
        assert f"proxy (nginx over 2 replicas) http://127.0.0.1:{base}/v1" in started.stdout
        up = _stack(*common, "status")
        assert up.returncode == 0 and up.stdout.count(" running ") == len(SERVICES), up.stdout
        record = json.loads((state / "stack.json").read_text())
        twice = _stack(*common, "start")
        assert twice.returncode == 2 and f"a stack is already running from {state}" in twice.stderr, twice.stderr

        # requests through nginx: all answered, by both replicas, each reply from the replay upstream
        auth = {"authorization": f"Bearer {CLIENT_KEY}"}
        replicas_seen, n = set(), 20
        with httpx.Client(base_url=f"http://127.0.0.1:{base}/v1", headers=auth, timeout=30) as c:
            for prompt in list(table.prompts)[:n]:
                r = c.post("/chat/completions", json={"model": "router", "messages": [{"role": "user",
                                                                                      "content": prompt}]})  # fmt: skip
                assert r.status_code == 200, r.text
                assert r.headers["x-routelab-model"] in table.models and r.json()["choices"][0]["message"]["content"]
                replicas_seen.add(r.headers["x-routelab-replica"])
        assert replicas_seen == {f"127.0.0.1:{ports[name]}" for name in REPLICAS}
        routed = []
        for name in REPLICAS:  # each replica's own /metrics: both served, together every request
            text = httpx.get(f"http://127.0.0.1:{ports[name]}/metrics", headers=auth).text
            routed.append(_metric(text, 'routelab_requests_total{reason="routed"}'))
            health = httpx.get(f"http://127.0.0.1:{ports[name]}/healthz").json()
            if record["shared_state"]:  # this RouteLab has [state] url: the replicas share it through Redis
                assert health["state"]["backend"] == "redis", health
        assert all(k > 0 for k in routed) and sum(routed) == n, routed

        # the MLflow server answers, and its store is the stack's PostgreSQL
        assert httpx.get(record["urls"]["mlflow"] + "/health").status_code == 200
        with psycopg.connect(record["urls"]["postgres"]) as db:
            names = [row[0] for row in db.execute("select name from experiments")]
        assert "Default" in names

        stopped = _stack(*common, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"routelab stack: stopped {', '.join(reversed(SERVICES))}"
        for service in record["services"]:  # no process of the stack is left
            if service["name"] == "postgres":
                assert not _postgres_running(service)
            else:
                assert _group_members(service["pid"], service["since"]) == [], service["name"]
        assert _processes_mentioning(str(state)) == []
        assert all(port_is_free(p) for p in ports.values())
        again = _stack(*common, "stop")
        assert again.returncode == 0 and "nothing was running" in again.stdout
        assert _stack(*common, "status").returncode == 3
    finally:
        _stack(*common, "stop", "--purge")
