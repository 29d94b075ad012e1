"""The optional bearer-token authentication, declared in a service's OpenAPI document.

Which operation needs which token is not written here: :func:`declare_security` asks
:func:`service_http.auth.guard_of` — the rule :class:`~service_http.auth.BearerAuth` applies — for every
path of the document, so a new open path or a new endpoint can never leave the document wrong. A path
template is asked as written (``/static/{name}`` is a plain file name under ``/static/``: open).

* ``components.securitySchemes``: :data:`API_SCHEME` (``--api-token-file``) and :data:`METRICS_SCHEME`
  (``--metrics-token-file``), both HTTP bearer;
* a guarded operation: ``security: [{}, {"<scheme>": []}]`` (no token, or that bearer token: the tokens are
  off by default, required only when the service runs with the token file) and a documented ``401``
  (``{"error": …}`` body, ``WWW-Authenticate`` header);
* an open operation (probes, the live page and its files): ``security: []``.

See docs/learner.md, "Authentication", and docs/deploy.md, "API tokens".
"""

from __future__ import annotations

from typing import Any

from service_http.auth import REALM, guard_of
from service_http.openapi import error_body

#: Name of the scheme of the API tokens (``--api-token-file``) in ``components.securitySchemes``.
API_SCHEME = "bearer"
#: Name of the scheme of the ``/metrics`` tokens (``--metrics-token-file``).
METRICS_SCHEME = "metricsBearer"
#: The keys of a path item that are operations (a path item may also hold ``parameters``, ``summary``, …).
METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
#: :func:`service_http.auth.guard_of`'s answer → (scheme name, the flag that turns it on).
SCHEMES = {"api": (API_SCHEME, "--api-token-file"), "metrics": (METRICS_SCHEME, "--metrics-token-file")}

WWW_AUTHENTICATE: dict[str, Any] = {
    "WWW-Authenticate": {
        "description": f'the challenge: Bearer realm="{REALM}", plus error="invalid_token" when the token sent '
                       f"matches none",
        "schema": {"type": "string"},
    },
}


def security_schemes() -> dict[str, Any]:
    """The two HTTP bearer schemes of ``components.securitySchemes``."""
    return {
        API_SCHEME: {
            "type": "http", "scheme": "bearer",
            "description": "An API token, sent as `Authorization: Bearer TOKEN` (never in the query string). "
                           "Required only when the service runs with `--api-token-file` (one token a line; "
                           "any of them is accepted); off by default, when every operation is open.",
        },
        METRICS_SCHEME: {
            "type": "http", "scheme": "bearer",
            "description": "The token of `/metrics` (Prometheus' own credential), sent as `Authorization: "
                           "Bearer TOKEN`. Required only when the service runs with `--metrics-token-file`; "
                           "off by default, when `/metrics` is open. An API token does not open `/metrics`.",
        },
    }


def unauthorized(flag: str) -> dict[str, Any]:
    """The ``401`` response of an operation guarded by the token file of ``flag``."""
    out = error_body(f"only when the service runs with {flag}: no bearer token, or one that matches none")
    out["headers"] = WWW_AUTHENTICATE
    return out


def declare_security(document: dict[str, Any]) -> dict[str, Any]:
    """Add the schemes, and each operation's ``security`` (and ``401`` when guarded), to ``document``."""
    document.setdefault("components", {})["securitySchemes"] = security_schemes()
    for path, item in document.get("paths", {}).items():
        guard = guard_of(path)
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if guard is None:
                operation["security"] = []
                continue
            scheme, flag = SCHEMES[guard]
            operation["security"] = [{}, {scheme: []}]
            operation.setdefault("responses", {})["401"] = unauthorized(flag)
    return document
