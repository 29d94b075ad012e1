"""Run an ASGI app with uvicorn on a daemon thread, on a socket bound in the caller's thread.

Binding first means "address in use" (or a bad host) raises :class:`ServerBindError` at once in the
caller, with the address in the message, instead of dying later inside a thread. uvicorn runs its own
event loop on a daemon thread and installs no signal handlers (only the main thread may; the
processes keep their own SIGTERM handling). :class:`HttpServer` keeps the names of
:class:`http.server.HTTPServer` that callers use: ``server_port``, ``shutdown()``, ``server_close()``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from service_http.limits import Limits

log = logging.getLogger(__name__)

#: Seconds to wait for the server thread to start listening.
START_TIMEOUT_SECONDS = 10.0
#: Seconds ``shutdown()`` lets running requests finish before cancelling them.
GRACEFUL_SECONDS = 5.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_SECONDS = 5


class ServerBindError(OSError):
    """The listening socket could not be bound (address in use, unknown host, no permission).

    ``strerror`` is the system's reason; ``str()`` names the address too.
    """

    def __init__(self, errno: int | None, strerror: str, address: str) -> None:
        super().__init__(errno, strerror)
        self.address = address

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self.strerror}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); :class:`ServerBindError` if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServerBindError(exc.errno, exc.strerror or str(exc), f"{host}:{port}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServerBindError(exc.errno, exc.strerror or str(exc), f"{host}:{port}") from exc
    return sock


class HttpServer:
    """uvicorn serving ``app`` on a daemon thread; ``shutdown()`` then ``server_close()`` to stop."""

    def __init__(self, app: ASGIApp, host: str, port: int, name: str, limits: Limits | None = None) -> None:
        self.socket = bind_socket(host, port)
        self.server_address = self.socket.getsockname()[:2]
        self.server_port: int = self.server_address[1]
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=GRACEFUL_SECONDS,
                                h11_max_incomplete_event_size=(limits or Limits()).max_head_bytes,
                                http="h11", loop="asyncio", ws="none")
        self._server = uvicorn.Server(config)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._wait_started()

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self.socket]))
        except BaseException as exc:  # SystemExit from a failed startup included
            self._failure = exc
            log.error("the HTTP server on port %d stopped: %s: %s", self.server_port, type(exc).__name__, exc)

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.server_close()
                raise RuntimeError(f"the HTTP server on port {self.server_port} did not start: {self._failure}")
            time.sleep(0.005)

    def shutdown(self) -> None:
        """Stop accepting connections, let running requests finish (up to :data:`GRACEFUL_SECONDS`), and stop."""
        self._server.should_exit = True
        if self._thread is not threading.current_thread():
            self._thread.join(GRACEFUL_SECONDS + 2)

    def server_close(self) -> None:
        """Release the listening socket (idempotent)."""
        self._server.should_exit = True
        self.socket.close()
