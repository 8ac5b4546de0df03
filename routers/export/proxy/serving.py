"""Serving the proxy: the app, uvicorn in the foreground (``routelab serve``, one or several workers) or in a
background thread (:class:`ProxyServer`), and the connection guard.

The guard (:class:`GuardedHttpProtocol`, uvicorn's httptools protocol with two additions) keeps misbehaving
clients from holding sockets: a connection must deliver complete request headers within ``header_timeout_s``
(silent and slow-header connections are closed), and past ``max_connections`` open connections a new one gets
an OpenAI-shaped 503 and is closed. Idle keep-alive connections close after ``keep_alive_s`` (uvicorn's own
timer) and slow request bodies get a 408 after ``body_timeout_s`` (in the handler).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from evals.exceptions import ConfigError
from evals.serving.background import BackgroundServer
from routers.export.loader import ExportedRouter, load_exported
from routers.export.proxy import handlers
from routers.export.proxy.errors import ErrorGuard, error_body, http_exception
from routers.export.proxy.state import ProxyState
from routers.export.upstreams import ProxyConfig, is_loopback_url

__all__ = [
    "GuardedHttpProtocol",
    "ProxyServer",
    "app_from_environment",
    "build_proxy_app",
    "describe_upstreams",
    "serve",
    "tune_gc_for_serving",
    "uvicorn_options",
]

log = logging.getLogger("routelab.proxy")

try:  # httptools is a dependency; without it uvicorn's h11 protocol and its plain-text 503 are used
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_BUSY_BODY = json.dumps(
    error_body("the proxy has too many open connections; retry shortly", "server_error", "too_many_connections")
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)

if HttpToolsProtocol is not None:

    class GuardedHttpProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol with a request-header deadline and a cap on open connections.

        The class attributes are the settings (a subclass per server, or set once per worker process).
        """

        header_timeout_s: float = 10.0
        max_connections: int = 1000

        def connection_made(self, transport: Any) -> None:  # noqa: D102
            self._header_timer = None
            super().connection_made(transport)
            if len(self.connections) > self.max_connections:
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()  # a silent or slow-header client: no answer is owed

        def on_message_begin(self) -> None:  # noqa: D102 - each request on a connection gets the deadline
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:  # noqa: D102
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
            self._disarm()
            super().connection_lost(exc)

else:  # pragma: no cover
    GuardedHttpProtocol = None  # type: ignore[assignment,misc]


def uvicorn_options(config: ProxyConfig, *, per_server_protocol: bool = True) -> dict[str, Any]:
    """uvicorn settings that apply ``config``'s connection limits.

    ``per_server_protocol`` makes a protocol subclass holding the settings (in-process servers); otherwise the
    shared class is configured (a worker process, which serves one config).
    """
    opts: dict[str, Any] = {"timeout_keep_alive": config.keep_alive_s}
    if GuardedHttpProtocol is None:  # pragma: no cover
        opts["limit_concurrency"] = config.max_connections
        return opts
    settings = {"header_timeout_s": config.header_timeout_s, "max_connections": config.max_connections}
    if per_server_protocol:
        opts["http"] = type("GuardedHttpProtocol", (GuardedHttpProtocol,), settings)
    else:
        for k, v in settings.items():
            setattr(GuardedHttpProtocol, k, v)
        opts["http"] = GuardedHttpProtocol
    return opts


def build_proxy_app(
    folder: str | os.PathLike[str] | ExportedRouter,
    *,
    no_auth: bool = False,
    environ: Mapping[str, str] | None = None,
    upstreams_path: str | os.PathLike[str] | None = None,
    connector: aiohttp.BaseConnector | None = None,
    trust_foreign_runtime: bool = False,
    tune_gc: bool = False,
) -> Starlette:
    """The proxy's ASGI app for an export folder (verified and loaded first).

    Args:
        folder: The export folder (or an already loaded :class:`ExportedRouter`).
        no_auth: Accept requests without a client key (explicit opt-out; local use only).
        environ: Where keys are read from (default ``os.environ``).
        upstreams_path: Another ``upstreams.toml`` to use instead of the folder's.
        connector: An aiohttp connector for the upstream calls (default: pooled TCP).
        trust_foreign_runtime: See :func:`~routers.export.load_exported`.
        tune_gc: Tune this process's garbage collector for serving once started (:func:`tune_gc_for_serving`);
            for a process that only serves (``routelab serve``), not one the app shares (tests, notebooks).

    Raises:
        ConfigError: when client auth is on but no client key is configured, or ``upstreams.toml`` is invalid
            (an upstream key variable that is the client-key variable, plain http to another machine, ...).
        ExportError / TamperedExportError: for a folder that does not verify.
    """
    env = os.environ if environ is None else environ
    exported = (
        folder
        if isinstance(folder, ExportedRouter)
        else load_exported(folder, trust_foreign_runtime=trust_foreign_runtime)
    )
    config = exported.proxy_config(upstreams_path)
    client_keys = None
    if not no_auth:
        client_keys = [k.strip() for k in str(env.get(config.client_keys_env, "")).split(",") if k.strip()]
        if not client_keys:
            raise ConfigError(
                f"no client keys: set {config.client_keys_env} to a comma-separated list of keys clients "
                "must send as 'Authorization: Bearer <key>', or pass --no-auth to run without client authentication"
            )
    upstream_keys = {m: (str(env.get(u.api_key_env, "")) if u.api_key_env else "") for m, u in config.upstreams.items()}
    missing = sorted({u.api_key_env for m, u in config.upstreams.items() if u.api_key_env and not upstream_keys[m]})
    if missing:
        log.warning("upstream key variable(s) not set: %s; those upstreams get no key", ", ".join(missing))
    state = ProxyState(exported, config, client_keys=client_keys, upstream_keys=upstream_keys, connector=connector)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        await state.startup()
        if tune_gc:
            tune_gc_for_serving()
        try:
            yield
        finally:
            await state.shutdown()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", handlers.chat, methods=["POST"]),
            Route("/v1/models", handlers.models, methods=["GET"]),
            Route("/v1/feedback", handlers.feedback, methods=["POST"]),
            Route("/v1/feedback/state", handlers.feedback_state, methods=["GET", "PUT"]),
            Route("/healthz", handlers.healthz, methods=["GET"]),
            Route("/metrics", handlers.metrics, methods=["GET"]),
        ],
        middleware=[Middleware(ErrorGuard)],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    app.state.proxy = state
    return app


#: The collector's first-generation threshold in a serving process (CPython's default is 700 allocations).
GC_GEN0_THRESHOLD = 20_000


def tune_gc_for_serving() -> None:
    """Make the garbage collector cheap for a process that only serves the proxy (called once it has started).

    Measured in the proxy at 32 requests in flight (``bench/bench_proxy.py``): with CPython's defaults a request
    costs 80-120 us of collections (a first-generation pass every ~10 requests, each walking the young objects),
    and each full collection walks every object loaded at start-up (the runtime, its arrays' owners, starlette,
    aiohttp, numpy) for 80-100 ms, a pause every request in flight waits out. ``gc.freeze()`` moves what start-up
    made into a generation no collection walks (it lives as long as the process anyway), and a higher
    first-generation threshold collects the short-lived garbage of many requests at once (almost all of it is
    freed by reference counting; a collection only finds cycles). Memory held by uncollected cycles stays
    bounded by the threshold.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, second, third)


def describe_upstreams(state: ProxyState) -> list[str]:
    """One line per upstream for the start-up banner: where it is, its key, whether it can answer."""
    lines = []
    for m, u in state.config.upstreams.items():
        where = u.base_url + ("" if is_loopback_url(u.base_url) or u.base_url.startswith("https") else " (insecure)")
        if not u.api_key_env:
            key, ok = "no key needed", True
        elif state.key_missing(m):
            key, ok = f"key variable {u.api_key_env} is NOT set", False
        else:
            key, ok = f"key from {u.api_key_env}", True
        lines.append(f"  {'ready  ' if ok else 'NO KEY '} {m} -> {where} [{key}]")
    return lines


class ProxyServer(BackgroundServer):
    """Run an ASGI app (the proxy, or any other) with uvicorn in a background thread on loopback.

    For tests, benchmarks and notebooks: a :class:`evals.serving.BackgroundServer` with the app's lifespan
    handlers on (the proxy opens and closes its upstream clients there). A proxy app gets its connection
    limits (see :func:`uvicorn_options`).

    Example:
        >>> with ProxyServer(build_proxy_app(folder, no_auth=True)) as srv:   # doctest: +SKIP
        ...     httpx.post(f"{srv.base_url}/chat/completions", json={...})
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        super().__init__(app, host=host, port=port, log_level=log_level, lifespan="on", name="routelab-proxy")

    def _bind(self) -> None:
        super()._bind()
        state = getattr(getattr(self.app, "state", None), "proxy", None)
        if isinstance(state, ProxyState):  # uvicorn reads these when the server starts
            for key, value in uvicorn_options(state.config).items():
                setattr(self._server.config, key, value)


#: Environment variables through which ``serve(workers=N)`` hands its settings to each worker process.
_WORKER_ENV = {
    "folder": "ROUTELAB_SERVE_FOLDER",
    "no_auth": "ROUTELAB_SERVE_NO_AUTH",
    "upstreams": "ROUTELAB_SERVE_UPSTREAMS",
    "trust": "ROUTELAB_SERVE_TRUST_RUNTIME",
}


def app_from_environment() -> Starlette:
    """The proxy app of one worker process of ``serve(workers=N)`` (an app factory for uvicorn).

    Reads the folder and flags from the ``ROUTELAB_SERVE_*`` variables ``serve`` sets; keys come from the
    environment as always. Configures this process's connection guard from the folder's ``upstreams.toml``.
    """
    folder = os.environ.get(_WORKER_ENV["folder"])
    if not folder:
        raise ConfigError(f"{_WORKER_ENV['folder']} is not set; start workers with `routelab serve --workers N`")
    app = build_proxy_app(
        Path(folder),
        no_auth=os.environ.get(_WORKER_ENV["no_auth"]) == "1",
        upstreams_path=os.environ.get(_WORKER_ENV["upstreams"]) or None,
        trust_foreign_runtime=os.environ.get(_WORKER_ENV["trust"]) == "1",
        tune_gc=True,
    )
    uvicorn_options(app.state.proxy.config, per_server_protocol=False)
    return app


def serve(
    folder: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    no_auth: bool = False,
    upstreams_path: str | os.PathLike[str] | None = None,
    trust_foreign_runtime: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve an export folder in the foreground (``routelab serve``).

    Prints which upstreams can answer before it starts.

    Args:
        workers: Worker processes sharing the port (uvicorn's process manager). Each holds its own circuit
            breakers, metrics and adaptive counts (the proxy is otherwise stateless), like workers behind a
            load balancer. The folder and keys are checked once here, before any worker starts.
    """
    import uvicorn

    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    app = build_proxy_app(
        Path(folder),
        no_auth=no_auth,
        upstreams_path=upstreams_path,
        trust_foreign_runtime=trust_foreign_runtime,
        tune_gc=True,
    )
    state: ProxyState = app.state.proxy
    lines = describe_upstreams(state)
    ready = sum(line.startswith("  ready") for line in lines)
    features = [name for name in state.health_sections if name != "telemetry"]  # telemetry is always on
    log_dir = state.config.section("log").dir
    print(
        f"routelab serve: {ready} of {len(lines)} upstreams can answer (deadline "
        f"{state.config.request_deadline_s:g} s per request):\n" + "\n".join(lines)
        + (f"\n  features: {', '.join(features)}" if features else "")
        + (f"\n  decision log: {Path(log_dir).resolve()}" if log_dir else ""),
        file=sys.stderr,
        flush=True,
    )
    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }
    if workers == 1:
        uvicorn.run(app, **common, **uvicorn_options(state.config))
        return
    os.environ[_WORKER_ENV["folder"]] = str(Path(folder).resolve())
    os.environ[_WORKER_ENV["no_auth"]] = "1" if no_auth else "0"
    os.environ[_WORKER_ENV["upstreams"]] = str(Path(upstreams_path).resolve()) if upstreams_path else ""
    os.environ[_WORKER_ENV["trust"]] = "1" if trust_foreign_runtime else "0"
    opts = uvicorn_options(state.config, per_server_protocol=False)
    opts["http"] = "routers.export.proxy.serving:GuardedHttpProtocol"  # workers import it (and configure it)
    uvicorn.run(
        "routers.export.proxy.serving:app_from_environment", factory=True, workers=workers, **common, **opts
    )
