"""The HTTP layer shared by the ingest worker and the learner (FastAPI on uvicorn).

| module | job |
|---|---|
| :mod:`service_http.app` | the app factory: ``/metrics``, ``/healthz``, ``/readyz``, ``/openapi.json``, middleware |
| :mod:`service_http.errors` | every failure as ``{"error": "…"}``: 400 (not 422), 404, 405, 500 logged once |
| :mod:`service_http.limits` | requests in flight (503 + ``Retry-After``), URL/header/body size (414/431/413) |
| :mod:`service_http.query` | a blank query value counts as absent (on the paths that ask for it) |
| :mod:`service_http.openapi` | response schemas both services document, the document's tidying and text |
| :mod:`service_http.auth` | optional bearer tokens (an ASGI middleware with an allow-list of open paths) |
| :mod:`service_http.openapi_security` | those tokens in the OpenAPI document, from the middleware's own rule |
| :mod:`service_http.server` | uvicorn on a daemon thread, on a socket bound in the caller's thread |

It imports neither ``ingest`` nor ``learner``: each builds its app with :func:`create_app` and its own
routes, and starts it with :class:`HttpServer`. See docs/learner.md, "HTTP", and docs/ingest.md, "Health".
"""

import importlib
from typing import Any

#: Public name → the module defining it; imported on first use, so that ``service_http.auth`` (which the
#: CLI's settings read) does not pull FastAPI and uvicorn into commands that serve no HTTP.
_EXPORTS = {
    "ApiError": "service_http.errors",
    "HttpServer": "service_http.server",
    "Limits": "service_http.limits",
    "Probes": "service_http.app",
    "ServerBindError": "service_http.server",
    "create_app": "service_http.app",
    "json_response": "service_http.app",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'service_http' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
