"""The app factory both services use: error bodies, limits, ``/metrics``, ``/healthz``, ``/readyz``, ``/openapi.json``.

| path | answer |
|---|---|
| ``/metrics`` | the service's own :class:`~prometheus_client.CollectorRegistry`, Prometheus text format |
| ``/healthz`` | the service's liveness probe: 200 when alive, else 503, its JSON body either way |
| ``/readyz`` | the service's readiness probe: 200 when ready, else 503, its JSON body either way |
| ``/openapi.json`` | the OpenAPI document (checked in under ``docs/openapi/``), with the optional bearer \
tokens declared from :mod:`service_http.auth`'s own rule (:mod:`service_http.openapi_security`) |

Middleware, outermost first: :class:`~service_http.errors.CatchAll` (500, logged once), then
:class:`~service_http.limits.LimitsMiddleware` (503/413/414/431), then the caller's ``middleware``
(the hook for authentication), then the routes. Synchronous routes (probes, ``/metrics``) run in
the server's thread pool, never on the event loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.middleware import Middleware
from starlette.responses import Response

from service_http.errors import CatchAll, install_error_handlers
from service_http.limits import Limits, LimitsMiddleware
from service_http.openapi import either_or_error, json_body, tidy, with_common
from service_http.openapi_security import declare_security

#: A probe: ``(ok, JSON body)``; the route answers 200 when ok, else 503, with the body either way.
Probe = Callable[[], tuple[bool, Any]]
#: Encodes a JSON body to bytes (the learner's never writes NaN or Infinity).
Encoder = Callable[[Any], bytes]


def plain_json(value: Any) -> bytes:
    """Standard JSON bytes."""
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Probes:
    """A service's liveness and readiness probes and the JSON schemas of their bodies (for the OpenAPI document)."""

    liveness: Probe
    readiness: Probe
    liveness_schema: dict[str, Any]
    readiness_schema: dict[str, Any]
    liveness_help: str = "alive"
    readiness_help: str = "ready to serve"


def json_response(body: Any, status: int = 200, encode: Encoder = plain_json,
                  headers: dict[str, str] | None = None) -> Response:
    """A prepared JSON response (no pydantic validation or serialisation)."""
    return Response(encode(body), status_code=status, media_type="application/json", headers=headers)


def create_app(*, title: str, description: str, registry: CollectorRegistry, probes: Probes, logger: logging.Logger,
               encode: Encoder = plain_json, limits: Limits | None = None, middleware: Sequence[Middleware] = (),
               version: str = "1") -> FastAPI:
    """A FastAPI app with the shared behaviour (see the module docstring); the caller adds its own routes.

    ``middleware`` runs inside the limits, around the routes: the place for authentication.
    """
    app = FastAPI(
        title=title, description=description, version=version, docs_url=None, redoc_url=None,
        openapi_url="/openapi.json",
        middleware=[Middleware(CatchAll, logger=logger), Middleware(LimitsMiddleware, limits=limits or Limits()),
                    *middleware],
    )
    install_error_handlers(app)
    _add_probes(app, registry, probes, encode)
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if not getattr(app.state, "openapi_tidied", False):
            declare_security(tidy(generated()))
            app.state.openapi_tidied = True
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_probes(app: FastAPI, registry: CollectorRegistry, probes: Probes, encode: Encoder) -> None:
    """``/metrics``, ``/healthz`` and ``/readyz``."""
    metrics_doc = {"description": "Prometheus text exposition format",
                   "content": {"text/plain": {"schema": {"type": "string"}}}}

    @app.get("/metrics", response_class=Response, responses=with_common({200: metrics_doc}),
             summary="Prometheus metrics", tags=["probes"])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    _add_probe(app, "/healthz", "healthz", probes.liveness, probes.liveness_schema, "Liveness probe",
               probes.liveness_help, ("alive", "not alive (restart it), or overloaded (Retry-After)"), encode)
    _add_probe(app, "/readyz", "readyz", probes.readiness, probes.readiness_schema, "Readiness probe",
               probes.readiness_help, ("ready", "not ready (with a reason), or overloaded (Retry-After)"), encode)


def _add_probe(app: FastAPI, path: str, name: str, probe: Probe, schema: dict[str, Any], summary: str, help: str,
               answers: tuple[str, str], encode: Encoder) -> None:
    """A probe's route: 200 with its body when it passes, else 503 with it; ``answers`` describe the two."""

    def answer() -> Response:
        ok, body = probe()
        return json_response(body, 200 if ok else 503, encode)

    app.add_api_route(path, answer, methods=["GET"], name=name, response_class=Response, summary=summary,
                      tags=["probes"], description=help,
                      responses=with_common({200: json_body(answers[0], schema),
                                             503: json_body(answers[1], either_or_error(schema))}))
