"""Shared tracking on PostgreSQL (issue 16, item 1), against a real PostgreSQL server on loopback.

``routelab eval`` of a small MMLU-Pro config is logged twice: straight into PostgreSQL
(``MLFLOW_TRACKING_URI=postgresql://...``, the ``[server]`` extra's driver) and through an ``mlflow server``
subprocess whose backend store is PostgreSQL (``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT``). Each time the
run is read back, listed on the app's *Experiments* page (Streamlit AppTest) and exported from its run id with
``routelab export --run-id``; the export decides like the evaluated router.

Skips only where the PostgreSQL binaries are missing (``apt-get install postgresql``; ``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pg_fixture import PostgresServer, free_port, postgres  # noqa: F401 - postgres is the session fixture

from evals import tracking

pytestmark = pytest.mark.slow


def _driver_missing() -> str | None:
    """Why SQLAlchemy cannot open postgresql:// here (the [server] extra is not installed), or None."""
    try:
        import sqlalchemy.dialects.postgresql as pg

        pg.dialect.import_dbapi()
    except ImportError as exc:
        return f'no PostgreSQL driver for SQLAlchemy ({exc}): pip install -e ".[server]"'
    return None


if (_why := _driver_missing()) is not None:
    pytestmark = [pytestmark, pytest.mark.skip(reason=_why)]

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "streamlit_app.py"
EXPERIMENT = "routelab/mmlu-pro"
ROUTERS = ["single", "category"]


def _small_config(folder: Path) -> Path:
    """examples/mmlu_pro.toml cut to 1,000 samples, two cheap routers, no gates (seconds, not minutes)."""
    text = (ROOT / "examples" / "mmlu_pro.toml").read_text(encoding="utf-8").split("[[routers]]")[0]
    text = re.sub(r"\[gates\].*?(?=\n\[|\Z)", "", text, flags=re.S)
    for old, new in (
        ("max_samples = 6000", "max_samples = 1000"),
        ("n_resamples = 1000", "n_resamples = 200"),
        ("n_points = 200", "n_points = 50"),
    ):
        assert old in text, f"examples/mmlu_pro.toml no longer has {old!r}; update this test"
        text = text.replace(old, new)
    text += "".join(f'\n[[routers]]\nname = "{name}"\n' for name in ROUTERS)
    path = folder / "small_mmlu_pro.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return _small_config(tmp_path_factory.mktemp("pg-config"))


@pytest.fixture()
def tracked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean working folder with the app's caches in it (the tracking URI is set by each test)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROUTELAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ROUTELAB_APP_WARMUP", "0")
    monkeypatch.delenv("ROUTELAB_APP_DEFAULT_SOURCE", raising=False)
    return tmp_path


@pytest.fixture()
def mlflow_server(postgres: PostgresServer, tmp_path: Path) -> Iterator[str]:  # noqa: F811 - pytest fixture
    """``mlflow server`` on 127.0.0.1 with a PostgreSQL backend store and a served artifact folder; its URL."""
    backend = postgres.create_database("mlflow_server")
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,  # its own process group: `mlflow server` starts uvicorn and a job runner
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # the first start creates MLflow's tables in PostgreSQL
        while True:
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text(errors="replace")[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health within 180 s"
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it and the workers it started), SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    # the group's other members (uvicorn, the job runner) may outlive the parent by a moment
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _eval_in_process(config: Path, out: Path) -> None:
    from evals.cli import main

    assert main(["eval", str(config), "--out", str(out), "--quiet"]) == 0


def _eval_subprocess(config: Path, out: Path, uri: str, cwd: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(
        [sys.executable, "-m", "evals.cli", "eval", str(config), "--out", str(out), "--quiet"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _the_evaluation(uri: str) -> dict:
    """The one evaluation run logged at ``uri``, checked through the tracking readers the app uses."""
    exps = [e for e in tracking.list_experiments(uri) if e["name"] == EXPERIMENT]
    assert len(exps) == 1, tracking.list_experiments(uri)
    runs = tracking.list_evaluations(exps[0]["experiment_id"], uri=uri)
    assert len(runs) == 1 and runs[0]["status"] == "FINISHED", runs
    run = runs[0]
    assert run["n_test"] == 198 and run["routers"] == '["single", "category"]', run
    children = tracking.router_runs([run["run_id"]], uri=uri)
    assert sorted(c["router"] for c in children) == sorted(ROUTERS)
    for child in children:
        frontier = tracking.run_frontier(child["run_id"], uri=uri)  # an artifact, read back through the store
        assert len(frontier) > 0 and "quality" in frontier.columns, child["router"]
    return run


def _experiments_page_lists(run: dict) -> None:
    """The app's Experiments page (AppTest) lists the evaluation and its two router runs."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="exp_experiment").value == EXPERIMENT
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}
    runs = next(f for cols, f in frames.items() if "best_single_quality" in cols)
    assert runs["run_id"].tolist() == [run["run_id"]]
    children = next(f for cols, f in frames.items() if "aiq" in cols)
    assert sorted(children["router"]) == sorted(ROUTERS)


def _export_from_run(run_id: str, out: Path) -> None:
    """``routelab export --run-id <evaluation> --router category``: the folder loads and routes."""
    from evals.cli import main
    from routers.export import load_exported

    assert main(["export", "--run-id", run_id, "--router", "category", "--out", str(out)]) == 0
    exported = load_exported(out)
    assert exported.manifest["router"]["name"] == "category"
    decisions = exported.route(
        ["What is the derivative of x**2?", "Which court hears appeals?"], categories=["math", "law"]
    )
    assert all(d in exported.models for d in decisions)


def test_eval_logged_straight_to_postgresql(
    postgres: PostgresServer,  # noqa: F811 - pytest fixture
    config: Path,
    tracked: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = postgres.create_database("mlflow_direct")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.tracking_uri() == uri
    _eval_in_process(config, tracked / "report")
    run = _the_evaluation(uri)
    _experiments_page_lists(run)
    _export_from_run(run["run_id"], tracked / "export")
    # the same store over the server's unix socket (libpq's ?host=<folder>) reads the same runs
    via_socket = postgres.uri("mlflow_direct", via_socket=True)
    assert _the_evaluation(via_socket)["run_id"] == run["run_id"]


def test_eval_logged_to_an_mlflow_server_on_postgresql(
    mlflow_server: str, config: Path, tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    _eval_subprocess(config, tracked / "report", mlflow_server, tracked)  # the real command, its own process
    run = _the_evaluation(mlflow_server)
    _experiments_page_lists(run)
    _export_from_run(run["run_id"], tracked / "export")


def test_compare_page_logs_to_postgresql(
    postgres: PostgresServer,  # noqa: F811 - pytest fixture
    tracked: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app's Compare page logs its comparison to PostgreSQL; the Experiments page reads it back."""
    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from app_fixtures import frame_with, make_table, run_compare  # the app tests' toy task set and driver

    source = tracked / "toy.parquet"
    make_table().to_parquet(source)
    monkeypatch.setenv("ROUTELAB_APP_DEFAULT_SOURCE", str(source))
    uri = postgres.create_database("mlflow_app")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = run_compare(["category", "single"], log=True)
    assert any("Logged to MLflow run" in c.value for c in at.caption), [c.value for c in at.caption]
    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="exp_experiment").value == "routelab/toy"
    assert len(frame_with(at, "best_single_quality")) == 1
    assert sorted(frame_with(at, "aiq")["router"]) == ["category", "single"]
    assert not (tracked / "mlflow.db").exists()  # nothing went to the default SQLite store
