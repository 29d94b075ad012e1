"""The OpenAPI document of a service: response descriptions shared by both services, and its tidying.

Routes return prepared :class:`~starlette.responses.Response` objects (a 10⁵-row ``/sample`` body is
never validated through pydantic), so their bodies are documented here by hand as JSON schemas:
:func:`json_body` for a 200, :func:`error_body` for the ``{"error": …}`` bodies, and
:func:`common_responses` for what any operation may answer (413/414/431 too large, 500, 503 overloaded
with ``Retry-After``). :func:`tidy` removes what FastAPI adds but these services never answer (422), and
:func:`dumps` is the stable text checked in under ``docs/openapi/`` (sorted keys, indented).
"""

from __future__ import annotations

import json
from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what went wrong, in one sentence"}},
    "required": ["error"],
    "additionalProperties": False,
}

RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
}


def json_body(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response object with a JSON body of ``schema``."""
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def error_body(description: str, retry_after: bool = False) -> dict[str, Any]:
    """An OpenAPI response object with the ``{"error": …}`` body (and ``Retry-After`` when asked)."""
    return json_body(description, ERROR_SCHEMA, RETRY_AFTER if retry_after else None)


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def either_or_error(schema: dict[str, Any]) -> dict[str, Any]:
    """A body that is ``schema`` or the ``{"error": …}`` body (a probe's 503 may also be an overload's)."""
    return {"anyOf": [schema, ERROR_SCHEMA]}


def common_responses() -> dict[int | str, dict[str, Any]]:
    """What any operation may answer besides its own codes (:mod:`service_http.limits`, :mod:`service_http.errors`)."""
    return {
        413: error_body("a request body was sent (the endpoints take none)"),
        414: error_body("the URL is too long"),
        431: error_body("the request's headers are too large"),
        500: error_body("an unexpected error (logged once by the service)"),
        503: error_body("too many requests are in flight: retry after Retry-After seconds", retry_after=True),
    }


def with_common(own: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``own`` responses plus :func:`common_responses` (an operation's own 503 replaces the overload's)."""
    return {**common_responses(), **own}


def tidy(document: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's 422 responses and their pydantic schemas (these services answer 400 instead), and turn
    optional query parameters' ``anyOf [X, null]`` into ``X`` (an absent parameter is the null)."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
            for param in operation.get("parameters", []):
                options = param.get("schema", {}).get("anyOf")
                if options and len(options) == 2 and {"type": "null"} in options:
                    kept = next(o for o in options if o != {"type": "null"})
                    rest = {k: v for k, v in param["schema"].items() if k != "anyOf"}
                    param["schema"] = {**kept, **rest}
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if "components" in document and not schemas:
        document["components"].pop("schemas", None)
        if not document["components"]:
            document.pop("components")
    return document


def dumps(document: dict[str, Any]) -> str:
    """The checked-in text of an OpenAPI document: keys sorted, two-space indent, one final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
