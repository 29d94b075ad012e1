"""The HTTP layer shared by the ingest worker and the learner (FastAPI on uvicorn).

| module | job |
|---|---|
| :mod:`service_http.app` | the app factory: ``/metrics``, ``/healthz``, ``/readyz``, ``/openapi.json``, middleware |
| :mod:`service_http.errors` | every failure as ``{"error": "…"}``: 400 (not 422), 404, 405, 500 logged once |
| :mod:`service_http.limits` | requests in flight (503 + ``Retry-After``), URL/header/body size (414/431/413) |
| :mod:`service_http.openapi` | response schemas both services document, the document's tidying and text |
| :mod:`service_http.server` | uvicorn on a daemon thread, on a socket bound in the caller's thread |

It imports neither ``ingest`` nor ``learner``: each builds its app with :func:`create_app` and its own
routes, and starts it with :class:`HttpServer`. See docs/learner.md, "HTTP", and docs/ingest.md, "Health".
"""

from service_http.app import Probes, create_app, json_response
from service_http.errors import ApiError
from service_http.limits import Limits
from service_http.server import HttpServer, ServerBindError

__all__ = ["ApiError", "HttpServer", "Limits", "Probes", "ServerBindError", "create_app", "json_response"]
