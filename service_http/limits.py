"""Bounded requests: how many are in flight at once, and how large one may be.

| limit | default | beyond it |
|---|---|---|
| requests in flight | :attr:`Limits.max_in_flight` = 64 | 503 ``{"error": "overloaded: …"}``, ``Retry-After`` |
| URL (path and query) | :attr:`Limits.max_url_bytes` = 8 KiB | 414 |
| headers (names and values) | :attr:`Limits.max_header_bytes` = 16 KiB | 431 |
| body | :attr:`Limits.max_body_bytes` = 0 (every endpoint is a GET) | 413 |

A request head longer than :attr:`Limits.max_head_bytes` (64 KiB) is refused by the HTTP parser
itself (uvicorn's h11 answers 400 and closes), so the server never buffers more than that for a
request it will refuse anyway. See docs/learner.md, "HTTP".
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from service_http.errors import error_response

#: Seconds a client is asked to wait after a 503 for too many requests in flight.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class Limits:
    """The bounds :class:`LimitsMiddleware` enforces (see the module docstring)."""

    max_in_flight: int = 64
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 0
    max_head_bytes: int = 64 * 1024


class _BodyTooLargeError(Exception):
    """A chunked body grew past the limit while the route read it."""


class LimitsMiddleware:
    """ASGI middleware enforcing :class:`Limits`; the in-flight count is kept on the event loop (no lock)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.in_flight = 0

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, message) when the request is too large, else None."""
        lim = self.limits
        url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url > lim.max_url_bytes:
            return 414, f"the URL is {url} bytes; at most {lim.max_url_bytes} are accepted"
        headers = scope.get("headers", [])
        size = sum(len(k) + len(v) for k, v in headers)
        if size > lim.max_header_bytes:
            return 431, f"the headers are {size} bytes; at most {lim.max_header_bytes} are accepted"
        declared = dict(headers).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > lim.max_body_bytes):
            return 413, f"a request body of at most {lim.max_body_bytes} bytes is accepted"
        if lim.max_body_bytes == 0 and b"transfer-encoding" in dict(headers):
            return 413, "no request body is accepted"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await error_response(*refusal, {"Connection": "close"})(scope, receive, send)
            return
        if self.in_flight >= self.limits.max_in_flight:
            message = (f"overloaded: {self.in_flight} requests are in flight; retry in {RETRY_AFTER_SECONDS} s")
            await error_response(503, message, {"Retry-After": str(RETRY_AFTER_SECONDS)})(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, self._bounded(receive), send)
        except _BodyTooLargeError:
            message = f"a request body of at most {self.limits.max_body_bytes} bytes is accepted"
            await error_response(413, message, {"Connection": "close"})(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that raises :class:`_BodyTooLargeError` once a chunked body passes the limit."""
        received = 0

        async def bounded() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limits.max_body_bytes:
                raise _BodyTooLargeError
            return message

        return bounded

