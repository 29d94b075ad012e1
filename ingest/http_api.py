"""The ingest worker's HTTP endpoints, on ``--metrics-port`` (:mod:`service_http`: FastAPI on uvicorn).

| path | answer |
|---|---|
| ``/metrics`` | Prometheus text format |
| ``/healthz`` | 200 ``{"ok": true, "loop_idle_seconds": …}`` while the consume loop turns; 503 with ``reason`` \
when it has not completed an iteration for ``--stall-timeout`` seconds (wedged) |
| ``/readyz`` | 200 ``{"ready": true, "partitions": P, "owned": […], "assigned": […]}`` when Redis, the stream \
and Kafka are reachable and the worker is a member holding its share of partitions; 503 with ``reason`` \
otherwise (see :mod:`ingest.health`) |
| ``/openapi.json`` | the OpenAPI document, checked in as ``docs/openapi/ingest.json`` |

Every error is JSON ``{"error": "…"}`` (404 unknown path, 405, 500 logged once, 503 with
``Retry-After`` when too many requests are in flight: :mod:`service_http.limits`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ingest.health import WorkerHealth

if TYPE_CHECKING:  # FastAPI and uvicorn are imported when the worker serves, not by every CLI command
    from fastapi import FastAPI
    from starlette.middleware import Middleware

    from service_http import HttpServer
    from service_http.auth import HttpAuth

log = logging.getLogger(__name__)

_PARTITIONS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
LIVENESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "loop_idle_seconds": {"type": "number", "minimum": 0},
                   "reason": {"type": "string"}},
    "required": ["ok", "loop_idle_seconds"],
}
READINESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ready": {"type": "boolean"}, "partitions": {"type": "integer", "minimum": 0},
                   "owned": _PARTITIONS, "assigned": _PARTITIONS,
                   "reason": {"type": "string", "description": "the first failing check (when not ready)"}},
    "required": ["ready", "partitions", "owned", "assigned"],
}


def make_app(registry: CollectorRegistry, health: WorkerHealth | None,
             middleware: Sequence[Middleware] = ()) -> FastAPI:
    """The worker's app serving ``registry`` and ``health`` (None: an app that only documents itself)."""
    from service_http import Probes, create_app

    def liveness() -> tuple[bool, dict[str, object]]:
        assert health is not None
        return health.liveness()

    def readiness() -> tuple[bool, dict[str, object]]:
        assert health is not None
        return health.readiness()

    probes = Probes(
        liveness, readiness, LIVENESS_SCHEMA, READINESS_SCHEMA,
        liveness_help="200 while the consume loop turns; 503 with `reason` when it has not completed an "
                      "iteration for `--stall-timeout` seconds (wedged: restart it).",
        readiness_help="200 when Redis, the stream and Kafka are reachable and the worker is a member holding "
                       "its share of partitions; 503 with the first failing check as `reason` otherwise.",
    )
    return create_app(title="sketchgen ingest worker", registry=registry, probes=probes, logger=log,
                      middleware=middleware,
                      description="Probes and metrics of a Kafka → Redis ingest worker (docs/ingest.md, \"Health\").")


def serve(registry: CollectorRegistry, health: WorkerHealth, port: int, host: str = "0.0.0.0", *,
          auth: HttpAuth | None = None) -> HttpServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` then ``server_close()`` to stop).

    ``auth``: bearer tokens for ``/metrics`` and any endpoint but the probes (:mod:`service_http.auth`); None: open.
    """
    from service_http import HttpServer

    middleware = auth.middleware() if auth is not None else []
    server = HttpServer(make_app(registry, health, middleware), host, port, name="sketchgen-ingest-http")
    log.info("ingest HTTP on http://%s:%d (/metrics /healthz /readyz /openapi.json)", host, server.server_port)
    return server
