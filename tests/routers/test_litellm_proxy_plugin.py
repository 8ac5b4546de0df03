"""The RouteLab routing plugin inside a real LiteLLM proxy (issue 16, item 5): the proxy calls the export's choice.

A ``category`` router fitted on MMLU-Pro's train split is exported; ``litellm --config`` starts on loopback with one
deployment per model of the export (OpenAI-compatible, ``api_base`` = the replay server) and
``router_settings.plugins: [routers.integrations.litellm_proxy.routelab_plugin]``. On 200 test prompts, the
deployment LiteLLM called (its ``x-litellm-model-name`` response header) is the export's decision for every prompt,
and the answer is that model's recorded one. No network beyond loopback, no real key.

The proxy needs ``litellm[proxy]``. Its ``proxy`` extra does not install from the registry for every LiteLLM
release (1.110.x pins a ``litellm-proxy`` package the registry does not serve), so the test runs the ``litellm``
executable named by ``ROUTELAB_LITELLM_PROXY`` (e.g. a ``--system-site-packages`` venv with
``litellm[proxy]==1.108.7``, as CI makes), else the one of this interpreter when its proxy imports, and skips
with that reason otherwise.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
pytest.importorskip("litellm", reason='the LiteLLM plugin is an optional extra: pip install -e ".[litellm]"')
plugin_module = pytest.importorskip(
    "routers.integrations.litellm_proxy", reason="this LiteLLM has no routing plugins (1.94 or later)"
)

from litellm.types.router import RoutingContext  # noqa: E402

from evals.serving import ReplayServer  # noqa: E402
from routers.export import ExportError, load_exported  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import mmlu_category_export, mmlu_split  # noqa: E402
from processes import stop_process  # noqa: E402

RouteLabRoutingPlugin = plugin_module.RouteLabRoutingPlugin
plugin_from_env = plugin_module.plugin_from_env

pytestmark = pytest.mark.slow
N_PROMPTS = 200
GROUP = "routelab"
OTHER = "direct"
REPO = Path(__file__).resolve().parents[2]
PROXY_ENV = "ROUTELAB_LITELLM_PROXY"
START_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def mmlu(shared_data):
    """MMLU-Pro split as the workbench splits it (seed 0): (train, test)."""
    return mmlu_split()


@pytest.fixture(scope="module")
def category_export(mmlu, tmp_path_factory):
    """A ``category`` export at the median of its decision grid: (folder, test rows, the export's choices there)."""
    test = mmlu[1]
    folder = tmp_path_factory.mktemp("litellm-proxy") / "category"
    _, _, rows = mmlu_category_export(folder, N_PROMPTS, seed=1)
    expected = load_exported(folder).route(
        [test.prompts[i] for i in rows], categories=[str(test.categories[i]) for i in rows]
    )
    assert len(set(expected)) >= 2, "pick an operating point where the router uses more than one model"
    return folder, rows, expected


@pytest.fixture(scope="module")
def replay(mmlu):
    with ReplayServer(mmlu[1]) as srv:
        yield srv


def _proxy_executable() -> str:
    """The ``litellm`` executable to start (see the module docstring), or a skip saying how to get one."""
    configured = os.environ.get(PROXY_ENV, "").strip()
    if configured:
        if not os.access(configured, os.X_OK):
            raise AssertionError(f"{PROXY_ENV}={configured!r} is not an executable file")
        return configured
    try:
        import litellm.proxy.proxy_server  # noqa: F401  # the proxy's own dependencies (litellm[proxy])
    except ImportError as exc:
        pytest.skip(
            f"the LiteLLM proxy does not import here ({exc}); set {PROXY_ENV} to the litellm executable of an "
            "environment with litellm[proxy] (python -m venv --system-site-packages V && V/bin/pip install "
            '"litellm[proxy]==1.108.7")'
        )
    found = Path(sys.executable).with_name("litellm")
    if found.exists():
        return str(found)
    which = shutil.which("litellm")
    if which is None:
        pytest.skip("litellm[proxy] imports but no litellm executable is on PATH")
    return which


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base_url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"litellm exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/health/liveliness", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"litellm did not answer at {base_url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def litellm_proxy(category_export, replay, tmp_path_factory):
    """``litellm --config`` on loopback with the RouteLab plugin: (base URL, its key); stopped at the end."""
    executable = _proxy_executable()
    folder, _, _ = category_export
    work = tmp_path_factory.mktemp("litellm-proxy-run")
    deployment = {"api_base": replay.base_url, "api_key": "os.environ/REPLAY_API_KEY"}
    config = {
        "model_list": [
            {"model_name": GROUP, "litellm_params": {"model": f"openai/{m}", **deployment}}
            for m in load_exported(folder).models
        ]
        + [{"model_name": OTHER, "litellm_params": {"model": "openai/gpt-4o-2024-05-13", **deployment}}],
        "router_settings": {"plugins": ["routers.integrations.litellm_proxy.routelab_plugin"], "num_retries": 0},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    key = f"sk-{secrets.token_hex(32)}"  # the proxy refuses to start without a strong master key
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}  # no HTTP(S)_PROXY detour
    env.update(
        LITELLM_MASTER_KEY=key,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # the bundled price map: no download at start
        REPLAY_API_KEY="sk-replay",
        ROUTELAB_EXPORT=str(folder),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        NO_PROXY="127.0.0.1,localhost",
    )
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = work / "litellm.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [executable, "--config", str(work / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(base_url, proc, log)
        yield base_url, key
    finally:
        stop_process(proc)


def _ask(base_url: str, key: str, requests: list[dict], headers: list[dict] | None = None) -> list[httpx.Response]:
    headers = headers or [{} for _ in requests]
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda b, h: c.post("/v1/chat/completions", json=b, headers=h), requests, headers))


def _body(prompt: str, model: str = GROUP, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


def test_the_proxy_calls_the_exports_choice_on_200_prompts(mmlu, category_export, replay, litellm_proxy):
    _, test = mmlu
    _, rows, expected = category_export
    replay.reset_stats()
    responses = _ask(
        *litellm_proxy,
        [_body(test.prompts[i]) for i in rows],
        [{"x-routelab-category": str(test.categories[i])} for i in rows],
    )
    assert [r.status_code for r in responses] == [200] * N_PROMPTS, responses[0].text
    called = [r.headers.get("x-litellm-model-name") for r in responses]
    want = [f"openai/{m}" for m in expected]
    wrong = sum(a != b for a, b in zip(called, want, strict=True))
    assert wrong == 0, f"LiteLLM called another deployment than the export's choice for {wrong} of {N_PROMPTS}"
    records = replay.app.records  # {model: {prompt: recorded answer}}
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    recorded = [records[m][test.prompts[i]].response for m, i in zip(expected, rows, strict=True)]
    assert answers == recorded
    assert replay.stats()["requests"] == N_PROMPTS  # one upstream call each: the plugin left one deployment


def test_the_category_comes_from_metadata_and_is_optional(mmlu, category_export, litellm_proxy):
    _, test = mmlu
    folder, rows, expected = category_export
    rows, expected = rows[:20], expected[:20]
    exported = load_exported(folder)
    by_metadata = _ask(
        *litellm_proxy, [_body(test.prompts[i], metadata={"routelab_category": str(test.categories[i])}) for i in rows]
    )
    assert [r.headers.get("x-litellm-model-name") for r in by_metadata] == [f"openai/{m}" for m in expected]
    without = _ask(*litellm_proxy, [_body(test.prompts[i]) for i in rows])
    uncategorised = exported.route([test.prompts[i] for i in rows])  # as the RouteLab proxy decides without one
    assert [r.headers.get("x-litellm-model-name") for r in without] == [f"openai/{m}" for m in uncategorised]


def test_other_model_groups_pass_through(mmlu, category_export, litellm_proxy):
    _, test = mmlu
    _, rows, expected = category_export
    i = next(i for i, m in zip(rows, expected, strict=True) if m != "gpt-4o-2024-05-13")
    (response,) = _ask(*litellm_proxy, [_body(test.prompts[i], model=OTHER)])
    assert response.status_code == 200, response.text
    assert response.headers.get("x-litellm-model-name") == "openai/gpt-4o-2024-05-13"


# ---------------------------------------------------------------------------------- the plugin without a proxy
def _context(prompt: str | None, candidates: list[str], **metadata) -> RoutingContext:
    messages = [] if prompt is None else [{"role": "user", "content": prompt}]
    return RoutingContext(
        raw_messages=messages, structured_messages=messages, candidate_models=candidates, metadata=metadata
    )


def test_a_model_without_deployment_is_named(mmlu, category_export):
    _, test = mmlu
    folder, rows, _ = category_export
    exported = load_exported(folder)
    missing = exported.models[-1]
    plugin = RouteLabRoutingPlugin(exported)
    context = _context(test.prompts[rows[0]], [f"openai/{m}" for m in exported.models[:-1]], model_group=GROUP)
    with pytest.raises(ExportError, match=f"no deployment in 'routelab' for 1 model\\(s\\) of the export: {missing}"):
        asyncio.run(plugin.run(context))


def test_models_mapped_by_name_and_signals_written(mmlu, category_export):
    _, test = mmlu
    folder, rows, expected = category_export
    exported = load_exported(folder)
    aliases = {m: f"together_ai/alias-{k}" for k, m in enumerate(exported.models)}
    plugin = RouteLabRoutingPlugin(exported, models=aliases)
    category = str(test.categories[rows[0]])
    context = _context(
        test.prompts[rows[0]], list(aliases.values()), model_group=GROUP, headers={"X-RouteLab-Category": category}
    )
    out = asyncio.run(plugin.run(context))
    assert out.candidate_models == [aliases[expected[0]]]
    assert out.signals["routelab"] == {"model": expected[0], "category": category}
    with pytest.raises(ExportError, match="names 1 model\\(s\\) the export does not have: nope"):
        RouteLabRoutingPlugin(exported, models={"nope": "openai/nope"})


def test_requests_without_a_user_message_or_for_other_groups(category_export):
    folder, _, _ = category_export
    exported = load_exported(folder)
    plugin = RouteLabRoutingPlugin(exported)
    candidates = [f"openai/{m}" for m in exported.models]
    untouched = asyncio.run(plugin.run(_context("hi", candidates, model_group=OTHER)))
    assert untouched.candidate_models == candidates and "routelab" not in untouched.signals
    with pytest.raises(ValueError, match="without a user message"):
        asyncio.run(plugin.run(_context(None, candidates, model_group=GROUP)))


def test_the_default_plugin_reads_its_export_from_the_environment(category_export):
    folder, _, _ = category_export
    with pytest.raises(ExportError, match="ROUTELAB_EXPORT is not set"):
        plugin_from_env({})
    plugin = plugin_from_env({"ROUTELAB_EXPORT": str(folder), "ROUTELAB_MODEL_GROUP": "smart"})
    assert plugin.model_group == "smart" and plugin.exported.models == load_exported(folder).models


def test_an_export_that_routes_slowly_decides_off_litellms_event_loop(mmlu, category_export, monkeypatch):
    """A transformer-encoder export takes milliseconds per decision: the plugin runs it in a worker thread (as the
    RouteLab proxy does), so LiteLLM's event loop keeps serving; fast exports decide inline."""
    import threading

    from routers.export import ExportedRouter

    _, test = mmlu
    folder, rows, expected = category_export
    exported = load_exported(folder)
    assert not exported.routes_slowly  # a category router has no encoder
    threads = []
    real = plugin_module.export_decision

    def spy(*args, **kwargs):
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(plugin_module, "export_decision", spy)
    plugin = RouteLabRoutingPlugin(exported)
    candidates = [f"openai/{m}" for m in exported.models]
    context = _context(test.prompts[rows[0]], candidates, model_group=GROUP,
                       headers={"X-RouteLab-Category": str(test.categories[rows[0]])})
    asyncio.run(plugin.run(context))
    assert threads == [threading.get_ident()]  # inline: asyncio.run's loop runs in this thread
    monkeypatch.setattr(ExportedRouter, "routes_slowly", property(lambda self: True))
    out = asyncio.run(plugin.run(_context(test.prompts[rows[0]], candidates, model_group=GROUP,
                                          headers={"X-RouteLab-Category": str(test.categories[rows[0]])})))
    assert len(threads) == 2 and threads[1] != threading.get_ident()  # a worker thread
    assert out.candidate_models == [f"openai/{expected[0]}"]  # the same decision
