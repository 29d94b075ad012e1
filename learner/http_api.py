"""The learner's HTTP endpoints.

| path | answer |
|---|---|
| ``/metrics`` | Prometheus text format |
| ``/healthz`` | 200 while the process runs |
| ``/readyz`` | 200 when leading with a model, or a healthy standby; 503 otherwise |
| ``/sample?n=N`` | ``{"samples": [[…], …]}`` in the data's units; 400 on a bad ``n`` (1 ≤ n ≤ the cap) |
| ``/status`` | JSON: stream, records, loss, rounds, steps, leader, checkpoint age, drift |
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from learner.service import LearnerService
from sketch_store.errors import SketchgenError

log = logging.getLogger(__name__)


def make_handler(service: LearnerService) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``service``."""

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
            url = urlparse(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
            elif url.path == "/healthz":
                self._json(200, {"ok": True})
            elif url.path == "/readyz":
                ready = (service.is_leader and service.has_model()) or (
                    not service.is_leader and service.standby_healthy
                )
                self._json(200 if ready else 503, {"ready": ready, "leader": service.is_leader})
            elif url.path == "/status":
                self._json(200, service.status())
            elif url.path == "/sample":
                self._sample(parse_qs(url.query))
            else:
                self._json(404, {"error": f"no such endpoint {url.path}"})

        def _sample(self, query: dict[str, list[str]]) -> None:
            cap = service.config.max_sample
            raw = query.get("n", ["1000"])[-1]
            try:
                n = int(raw)
            except ValueError:
                self._json(400, {"error": f"n must be an integer, got {raw!r}"})
                return
            if not 1 <= n <= cap:
                self._json(400, {"error": f"n must be between 1 and {cap}, got {n}"})
                return
            try:
                samples = service.sample(n)
            except SketchgenError as exc:
                self._json(503, {"error": str(exc)})
                return
            self._json(200, {"samples": samples.tolist()})

    return Handler


def serve(service: LearnerService, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` to stop)."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sketchgen-http", daemon=True).start()
    log.info("learner HTTP on http://%s:%d (/metrics /healthz /readyz /sample /status)", host, server.server_port)
    return server
