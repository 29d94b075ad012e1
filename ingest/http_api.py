"""The ingest worker's HTTP endpoints, on ``--metrics-port``.

| path | answer |
|---|---|
| ``/metrics`` | Prometheus text format |
| ``/healthz`` | 200 ``{"ok": true, "loop_idle_seconds": …}`` while the consume loop turns; 503 with ``reason`` \
when it has not completed an iteration for ``--stall-timeout`` seconds (wedged) |
| ``/readyz`` | 200 ``{"ready": true, "partitions": P, "owned": […], "assigned": […]}`` when Redis, the stream \
and Kafka are reachable and the worker is a member holding its share of partitions; 503 with ``reason`` \
otherwise (see :mod:`ingest.health`) |
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ingest.health import WorkerHealth

log = logging.getLogger(__name__)


def make_handler(registry: CollectorRegistry, health: WorkerHealth) -> type[BaseHTTPRequestHandler]:
    """A request handler class serving ``registry`` and ``health``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: object) -> None:
            self._send(code, json.dumps(data).encode())

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                alive, body = health.liveness()
                self._json(200 if alive else 503, body)
            elif path == "/readyz":
                ready, body = health.readiness()
                self._json(200 if ready else 503, body)
            else:
                self._json(404, {"error": f"no such endpoint {path}"})

    return Handler


def serve(registry: CollectorRegistry, health: WorkerHealth, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` then ``server_close()`` to stop)."""
    server = ThreadingHTTPServer((host, port), make_handler(registry, health))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sketchgen-ingest-http", daemon=True).start()
    log.info("ingest HTTP on http://%s:%d (/metrics /healthz /readyz)", host, server.server_port)
    return server
