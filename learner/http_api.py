"""The learner's HTTP endpoints (see docs/learner.md for status codes and behaviour).

| path | answer |
|---|---|
| ``/metrics`` | Prometheus text format |
| ``/healthz`` | 200 while the process runs |
| ``/readyz`` | 200 ``{"ready": true, …}`` while the stream is reachable and this replica has a model to serve \
(leading, or a standby with an accepted checkpoint); 503 with ``"reason"`` otherwise |
| ``/sample?n=N`` | ``{"samples": [[…], …]}`` in the data's units (a typed stream: ``{"fields": […], \
"records": [{…}, …]}``, :meth:`~learner.serving.ServedModel.sample_body`); 400 on a bad ``n`` (1 ≤ n ≤ the cap), \
503 with no model yet, 429 when ``LearnConfig.max_concurrent_samples`` requests are already sampling |
| ``/status`` | JSON: stream, records, loss, rounds, steps, leader, checkpoint age, ``checkpoint_error`` \
(``{"reason", "time"}`` of the last refused stored checkpoint, or null), drift, ``drift_fields`` (per-field \
scores, top first: :mod:`learner.drift_fields`) |
| ``/`` | the live page (``learner/web/``; static files under ``/static/``): samples, loss, drift, records, state |
| ``/history?since=T`` | JSON: state now (leader, lease holder, records, records/s, spec d/m/law/σ, loss, drift, \
threshold, ``drift_fields``) and ``points``, the per-loop history (time, loss, floor, drift, threshold, records, \
leader, round, steps) newer than Unix time ``T`` (all held points without it). A ring buffer of \
``LearnConfig.history_size`` points (2000): memory and payload are bounded. |
| ``/density?n=N&x=I&y=J&bins=B`` | JSON: ``N`` samples (default 10 000, ≤ the cap) binned server-side, never sent \
raw: a ``B × B`` histogram (default 64, 2 ≤ B ≤ 200) of coordinates ``I``, ``J`` (default 0, 1) and a ``B``-bin \
histogram per coordinate (the first 32 and the pair); 400 on bad values, 503 with no model yet, 429 as ``/sample`` |

Every answer is JSON without NaN or Infinity (:mod:`learner.json_safe`: non-finite numbers are
null). Sampling never holds the training lock: it draws from the immutable snapshot the loop
publishes after each slice (:mod:`learner.serving`). At most ``max_concurrent_samples``
requests sample at once; beyond that the answer is 429 with ``Retry-After`` at once, never a
wait. A sampling request's thread runs at nice :data:`SAMPLING_NICE` (Linux), so when CPUs are
scarce the training thread keeps most of its share. An exception inside a handler is answered
with 500 ``{"error": …}`` and logged once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NoReturn
from urllib.parse import ParseResult, parse_qs, urlparse

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from learner import json_safe
from learner.page import MAX_BINS, asset, category_bars, density_payload
from learner.service import LearnerService, NoModelError
from sketch_store.errors import DataError

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait after a 429.
RETRY_AFTER_SECONDS = 1
#: Seconds a connection may stall reading the request or taking the reply before it is closed.
SOCKET_TIMEOUT_SECONDS = 60
#: Nice value of a thread while it samples (training runs at the process's own, 0 by default).
SAMPLING_NICE = 10


def lower_this_threads_priority(nice: int = SAMPLING_NICE) -> None:
    """Run the calling thread at ``nice`` (never raising it back); Linux only, where a TID names one thread.

    Each request has its own thread (HTTP/1.0, one request per connection), so the lower
    priority ends with the request.
    """
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.debug("cannot lower the sampling thread's priority: %s", exc)


class _Answered(Exception):  # noqa: N818 (control flow, not an error)
    """A handler already answered (a 4xx/5xx); stop handling the request."""


def make_handler(service: LearnerService) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``service``."""
    sampling = threading.BoundedSemaphore(service.config.max_concurrent_samples)

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_SECONDS
        _replied = False

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, code: int, body: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self._replied = True
            self._give_back_slot()  # before the first byte: a client that got its answer may ask again at once
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: object, headers: dict[str, str] | None = None) -> None:
            self._send(code, json_safe.dumps(data), headers=headers)

        def _fail(self, code: int, error: str, headers: dict[str, str] | None = None) -> NoReturn:
            """Answer ``code`` with ``{"error": error}`` and stop handling the request."""
            self._json(code, {"error": error}, headers)
            raise _Answered

        def do_GET(self) -> None:
            self._replied = False
            try:
                self._route(urlparse(self.path))
            except _Answered:
                pass
            except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
                log.debug("%s went away during %s: %s", self.address_string(), self.path, exc)
                self.close_connection = True
            except Exception as exc:
                self._internal_error(exc)

        def _internal_error(self, exc: Exception) -> None:
            """One log line for an unexpected exception, and a 500 if nothing was sent yet."""
            log.error("internal error answering GET %s: %s: %s", self.path, type(exc).__name__, exc)
            log.debug("traceback of the internal error", exc_info=True)
            if self._replied:
                self.close_connection = True
                return
            try:
                self._json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})
            except OSError:
                self.close_connection = True

        def _route(self, url: ParseResult) -> None:
            if url.path == "/metrics":
                self._send(200, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
            elif url.path == "/healthz":
                self._json(200, {"ok": True})
            elif url.path == "/readyz":
                ready, reason = service.readiness()
                self._json(200 if ready else 503, {"ready": ready, "leader": service.is_leader, "reason": reason})
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
                self._fail(404, f"no such endpoint {url.path}")

        def _sample(self, query: dict[str, list[str]]) -> None:
            cap = service.config.max_sample
            raw = query.get("n", ["1000"])[-1]
            try:
                n = int(raw)
            except ValueError:
                self._fail(400, f"n must be an integer, got {raw!r}")
            if not 1 <= n <= cap:
                self._fail(400, f"n must be between 1 and {cap}, got {n}")
            with self._sampling_slot():
                self._json(200, self._sample_body(n))

        @contextlib.contextmanager
        def _sampling_slot(self) -> Iterator[None]:
            """Hold one of the ``max_concurrent_samples`` slots, or answer 429 at once when all are taken."""
            if not sampling.acquire(blocking=False):
                self._fail(429, f"busy: {service.config.max_concurrent_samples} sampling requests are running; "
                                f"retry in {RETRY_AFTER_SECONDS} s", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            self._slot_held = True
            try:
                lower_this_threads_priority()
                yield
            finally:
                self._give_back_slot()

        def _give_back_slot(self) -> None:
            """Release the sampling slot this request holds, if any (once)."""
            if getattr(self, "_slot_held", False):
                self._slot_held = False
                sampling.release()

        def _sample_body(self, n: int) -> dict[str, object]:
            """``{"samples": …}``, or ``{"fields": …, "records": …}`` when the served snapshot is of typed records."""
            model = service.model
            if model is None or model.encoder is None:
                return {"samples": self._samples(n)}
            try:
                return model.sample_body(n)
            except DataError as exc:  # a diverged model's non-finite numbers cannot be decoded to records
                self._fail(503, f"the model's samples cannot be decoded: {exc}")

        def _samples(self, n: int) -> np.ndarray:
            """``n`` samples of the served snapshot (no lock held); 503 when there is no model yet."""
            try:
                return service.sample(n)
            except NoModelError as exc:
                self._fail(503, str(exc))

        def _asset(self, name: str) -> None:
            try:
                body, ctype = asset(name)
            except KeyError:
                self._fail(404, f"no such file {name!r}")
            self._send(200, body, ctype)

        def _int(self, query: dict[str, list[str]], name: str, default: int | None, lo: int, hi: int) -> int | None:
            """Query parameter ``name`` as an int in [lo, hi]; a bad value is answered with 400."""
            raw = query.get(name, [None])[-1]
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is None or not lo <= value <= hi:
                self._fail(400, f"{name} must be an integer between {lo} and {hi}, got {raw!r}")
            return value

        def _history(self, query: dict[str, list[str]]) -> None:
            raw = query.get("since", [""])[-1]
            try:
                since = float(raw) if raw else None
            except ValueError:
                self._fail(400, f"since must be a Unix time, got {raw!r}")
            self._json(200, service.history_payload(since))

        def _density(self, query: dict[str, list[str]]) -> None:
            d = service.spec.d
            n = self._int(query, "n", min(10_000, service.config.max_sample), 1, service.config.max_sample)
            bins = self._int(query, "bins", 64, 2, MAX_BINS)
            x = self._int(query, "x", 0, 0, d - 1)
            y = self._int(query, "y", 1 if d > 1 else None, 0, d - 1)
            assert n is not None and bins is not None and x is not None
            if d > 1 and (y is None or y == x):
                self._fail(400, f"x and y must be two different coordinates of 0..{d - 1}")
            with self._sampling_slot():
                samples = self._samples(n)
                if samples.shape[1] != d:  # the stream was just recreated with another d; the new model is coming
                    self._fail(503, f"the model has d = {samples.shape[1]}, the stream's spec d = {d}; retry")
                finite = samples[np.isfinite(samples).all(axis=1)]
                if not len(finite):
                    self._fail(503, "the model's samples are all NaN or infinite")
                payload = density_payload(finite, x, y if d > 1 else None, bins)
                self._json(200, {**payload, **self._typed_extras(finite), "nonfinite": int(n - len(finite))})

        def _typed_extras(self, rows: np.ndarray) -> dict[str, object]:
            """``{"categories": …}`` (:func:`~learner.page.category_bars`) when the served model is of typed records."""
            model = service.model
            encoder = None if model is None else model.encoder
            if encoder is None or encoder.dim != rows.shape[1]:
                return {}
            return {"categories": category_bars(encoder, rows)}

    return Handler


def serve(service: LearnerService, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` to stop)."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sketchgen-http", daemon=True).start()
    log.info("learner HTTP on http://%s:%d (/ /history /density /metrics /healthz /readyz /sample /status)", host,
             server.server_port)
    return server
