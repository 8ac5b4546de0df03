"""OpenAI-shaped errors: the one shape every error of the proxy takes, and the guard for the unexpected ones.

Every error answer is ``{"error": {"message", "type", "param", "code"}}`` (what OpenAI's SDKs parse). Anything
unexpected becomes a 500 of that shape carrying a request id (also in the ``x-request-id`` header); the log
gets the id, the exception's type and the code location, never the exception's message or the request
(either can quote a prompt or a key).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["ClientRequestError", "ErrorGuard", "UpstreamFailed", "error_body", "http_exception", "openai_error"]

log = logging.getLogger("routelab.proxy")


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None):
    """The OpenAI error object (a dict) for ``message``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    param: str | None = None,
) -> JSONResponse:
    """An error response in OpenAI's shape."""
    return JSONResponse(error_body(message, type_, code, param), status_code=status, headers=dict(headers or {}))


async def http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (unknown path, wrong method) in OpenAI's shape instead of plain text."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return openai_error(exc.status_code, message, code=code, headers=exc.headers)


class ClientRequestError(Exception):
    """A request the proxy refuses (400 unless said otherwise); ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def response(self) -> JSONResponse:
        """The OpenAI-shaped answer to the client."""
        return openai_error(self.status, self.message, code=self.code, param=self.param)


class UpstreamFailed(Exception):
    """One upstream failed every attempt (message is safe to show: no bodies, no keys).

    Attributes:
        model: The model whose upstream failed.
        why: What happened on the last attempt, for people.
        kind: The metric label of the last failure (``timeout``, ``malformed``, ``http_503``, ...).
        attempts: How many attempts were made.
    """

    def __init__(self, model: str, why: str, kind: str = "error", attempts: int = 1) -> None:
        super().__init__(f"{model}: {why}")
        self.model, self.why, self.kind, self.attempts = model, why, kind, attempts


class ErrorGuard:
    """ASGI middleware: an unexpected exception becomes an OpenAI-shaped 500 with a request id, never a
    plain-text 500 with a traceback.

    The exception is not re-raised (the server would log its message, which may quote request content);
    it is logged here with the request id, its type and the stack's code locations only.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the whole point: nothing escapes unshaped
            request_id = uuid.uuid4().hex
            where = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-6:]))
            log.error(
                "unexpected %s answering %s %s (request id %s); stack (no request content):\n%s",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
                request_id,
                where,
            )
            if started:  # too late for a status: the connection is closed mid-answer
                return
            response = openai_error(
                500,
                f"internal error in the routing proxy (request id {request_id}); the operator's log has details",
                "server_error",
                "internal_error",
                {"x-request-id": request_id},
            )
            await response(scope, receive, send)
