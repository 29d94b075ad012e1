"""Every failure as JSON ``{"error": "…"}``: the exception a route raises, and the handlers that answer them.

| failure | status | body |
|---|---|---|
| :class:`ApiError` raised by a route | its own | ``{"error": message}`` (and its headers, e.g. ``Retry-After``) |
| unknown path | 404 | ``{"error": "no such endpoint /path"}`` |
| known path, other method | 405 | ``{"error": "method M is not allowed on /path"}``, ``Allow`` |
| a bad query parameter | 400 | ``{"error": "n must be an integer between 1 and 9, got '0'"}`` |
| an unexpected exception | 500 | ``{"error": "internal error: Type: message"}``, logged once (:class:`CatchAll`) |

FastAPI answers a bad parameter with 422 and a list of pydantic errors; these services answer 400 with
one sentence naming the parameter, its type and bounds (read from the route's own declaration, so the
message and the OpenAPI document cannot disagree). See docs/learner.md, "HTTP".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiError(Exception):
    """Answer ``status`` with ``{"error": message}`` (and ``headers``) instead of the route's reply."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON ``{"error": message}`` response."""
    body = json.dumps({"error": message}).encode()
    return Response(body, status_code=status, media_type="application/json", headers=dict(headers or {}))


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        message = f"no such endpoint {path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, exc.headers)


def _bounds(request: Request, name: str) -> tuple[str, object, object]:
    """(type word, lower bound, upper bound) of query parameter ``name`` as the matched route declares it."""
    route = request.scope.get("route")
    for field in getattr(getattr(route, "dependant", None), "query_params", ()):
        if field.alias == name:
            lo = hi = None
            for rule in field.field_info.metadata:
                lo = getattr(rule, "ge", lo)
                hi = getattr(rule, "le", hi)
            annotation = str(field.field_info.annotation)
            word = "an integer" if "int" in annotation else "a number" if "float" in annotation else "valid"
            return word, lo, hi
    return "valid", None, None


def bad_parameter_message(request: Request, exc: RequestValidationError) -> str:
    """One sentence for the first invalid parameter: ``n must be an integer between 1 and 10, got '0'``."""
    error = exc.errors()[0]
    loc = error.get("loc", ())
    name = str(loc[-1]) if loc else "the request"
    word, lo, hi = _bounds(request, name)
    expected = f"{name} must be {word}"
    if lo is not None and hi is not None:
        expected += f" between {lo} and {hi}"
    elif lo is not None:
        expected += f" ≥ {lo}"
    elif hi is not None:
        expected += f" ≤ {hi}"
    return f"{expected}, got {error.get('input')!r}"


async def _bad_parameter(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, bad_parameter_message(request, exc))


def install_error_handlers(app: FastAPI) -> None:
    """Answer :class:`ApiError`, 404/405 and invalid parameters (400, not FastAPI's 422) as ``{"error": …}``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _bad_parameter)


class CatchAll:
    """ASGI middleware: an exception no handler took is logged once (type and message; the traceback at
    debug level) and answered 500 ``{"error": "internal error: Type: message"}`` if nothing was sent yet.

    It sits outside the routes (Starlette's own last-resort handler would log a second, full traceback
    through the server's logger and answer plain text).
    """

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.log = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            self.log.error("internal error answering %s %s: %s: %s", scope.get("method"), scope.get("path"),
                           type(exc).__name__, exc)
            self.log.debug("traceback of the internal error", exc_info=True)
            if not started:
                response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
                await response(scope, receive, send)
