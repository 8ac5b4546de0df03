"""Run an ASGI app with uvicorn on loopback in a background thread (tests, benchmarks, notebooks, CLIs).

The replay server and the routing proxy both serve this way. The listening socket is created with
``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on accepted connections: without it a response written
in two parts (headers, then body) waits for the client's delayed ACK, adding about 40 ms to every request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """An ASGI app served by uvicorn on ``host:port`` (port 0 picks a free one).

    Args:
        app: The ASGI application.
        host: Interface to bind; loopback by default.
        port: Port to bind; 0 picks a free one.
        log_level: uvicorn's log level.
        lifespan: uvicorn's lifespan mode ("on" runs the app's startup/shutdown handlers).
        name: Thread name prefix and the name used in error messages.

    Example:
        >>> with BackgroundServer(app) as srv:   # doctest: +SKIP
        ...     httpx.get(f"{srv.base_url}/models")
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        lifespan: str = "on",
        name: str = "server",
    ) -> None:
        self.app = app
        self.host, self._port, self.log_level, self.lifespan, self.name = host, port, log_level, lifespan, name
        self._sock: socket.socket | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._sock is None:
            raise RuntimeError(f"{self.name} is not started")
        return int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what an OpenAI-compatible client takes as its base URL."""
        return f"http://{self.host}:{self.port}/v1"

    def _bind(self) -> None:
        import uvicorn  # heavy; only when a server is really started

        self._sock = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self._port))
        self._sock.listen(2048)  # queue connections from now on, before uvicorn's loop runs
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=False,
            lifespan=self.lifespan,
            # uvloop and httptools when installed (dependencies): about half the per-request CPU of
            # asyncio + h11.
            loop="auto",
            http="auto",
            backlog=2048,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)

    def start(self) -> BackgroundServer:
        """Bind, serve in a daemon thread, and return once the server accepts connections.

        Raises:
            RuntimeError: if the server does not come up within 10 s.
        """
        self._bind()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} failed to start")
            time.sleep(0.01)
        return self

    def serve_forever(self, announce: Callable[[str], None] | None = None) -> None:
        """Serve in this thread until interrupted (a CLI's mode); ``announce(base_url)`` once bound."""
        self._bind()
        if announce is not None:
            announce(self.base_url)
        self._server.run(sockets=[self._sock])

    def stop(self) -> None:
        """Stop serving and join the thread (an app with a ``stopping`` flag is told first)."""
        if hasattr(self.app, "stopping"):  # the replay app releases requests it holds (injected timeouts)
            self.app.stopping = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
