"""The learner's HTTP endpoints.

| path | answer |
|---|---|
| ``/metrics`` | Prometheus text format |
| ``/healthz`` | 200 while the process runs |
| ``/readyz`` | 200 when leading with a model, or a healthy standby; 503 otherwise |
| ``/sample?n=N`` | ``{"samples": [[…], …]}`` in the data's units; 400 on a bad ``n`` (1 ≤ n ≤ the cap) |
| ``/status`` | JSON: stream, records, loss, rounds, steps, leader, checkpoint age, drift |
| ``/`` | the live page (``learner/web/``; static files under ``/static/``): samples, loss, drift, records, state |
| ``/history?since=T`` | JSON: state now (leader, lease holder, records, records/s, spec d/m/law/σ, loss, drift, \
threshold) and ``points``, the per-loop history (time, loss, floor, drift, threshold, records, leader, round, \
steps) newer than Unix time ``T`` (all held points without it). A ring buffer of ``LearnConfig.history_size`` \
points (2000): memory and payload are bounded. |
| ``/density?n=N&x=I&y=J&bins=B`` | JSON: ``N`` samples (default 10 000, ≤ the cap) binned server-side, never sent \
raw: a ``B × B`` histogram (default 64, 2 ≤ B ≤ 200) of coordinates ``I``, ``J`` (default 0, 1) and a ``B``-bin \
histogram per coordinate (the first 32 and the pair); 400 on bad values, 503 with no model yet |
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from learner.page import MAX_BINS, asset, density_payload
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
                ready = service.ready()
                self._json(200 if ready else 503, {"ready": ready, "leader": service.is_leader})
            elif url.path == "/status":
                self._json(200, service.status())
            elif url.path == "/sample":
                self._sample(parse_qs(url.query))
            elif url.path in ("/", "/index.html") or url.path.startswith("/static/"):
                self._asset(url.path.rpartition("/")[2] or "index.html")
            elif url.path == "/history":
                self._history(parse_qs(url.query))
            elif url.path == "/density":
                self._density(parse_qs(url.query))
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
            samples = self._samples(n)
            if samples is not None:
                self._json(200, {"samples": samples.tolist()})

        def _samples(self, n: int) -> np.ndarray | None:
            """``n`` samples of the current model, or None after answering 503 when there is none yet."""
            try:
                return service.sample(n)
            except SketchgenError as exc:
                self._json(503, {"error": str(exc)})
                return None

        def _asset(self, name: str) -> None:
            try:
                body, ctype = asset(name)
            except KeyError:
                self._json(404, {"error": f"no such file {name!r}"})
                return
            self._send(200, body, ctype)

        def _int(self, query: dict[str, list[str]], name: str, default: int | None, lo: int, hi: int) -> int | None:
            """Query parameter ``name`` as an int in [lo, hi]; on a bad value answers 400 and raises ValueError."""
            raw = query.get(name, [None])[-1]
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is None or not lo <= value <= hi:
                self._json(400, {"error": f"{name} must be an integer between {lo} and {hi}, got {raw!r}"})
                raise ValueError(name)
            return value

        def _history(self, query: dict[str, list[str]]) -> None:
            raw = query.get("since", [""])[-1]
            try:
                since = float(raw) if raw else None
            except ValueError:
                self._json(400, {"error": f"since must be a Unix time, got {raw!r}"})
                return
            self._json(200, service.history_payload(since))

        def _density(self, query: dict[str, list[str]]) -> None:
            d = service.spec_summary()["d"]
            assert isinstance(d, int)
            try:
                n = self._int(query, "n", min(10_000, service.config.max_sample), 1, service.config.max_sample)
                bins = self._int(query, "bins", 64, 2, MAX_BINS)
                x = self._int(query, "x", 0, 0, d - 1)
                y = self._int(query, "y", 1 if d > 1 else None, 0, d - 1)
            except ValueError:
                return
            assert n is not None and bins is not None and x is not None
            if d > 1 and (y is None or y == x):
                self._json(400, {"error": f"x and y must be two different coordinates of 0..{d - 1}"})
                return
            samples = self._samples(n)
            if samples is None:
                return
            if samples.shape[1] != d:  # the stream was just recreated with another d; the new model is coming
                self._json(503, {"error": f"the model has d = {samples.shape[1]}, the stream's spec d = {d}; retry"})
                return
            self._json(200, density_payload(samples, x, y if d > 1 else None, bins))

    return Handler


def serve(service: LearnerService, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` to stop)."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sketchgen-http", daemon=True).start()
    log.info("learner HTTP on http://%s:%d (/ /history /density /metrics /healthz /readyz /sample /status)", host,
             server.server_port)
    return server
