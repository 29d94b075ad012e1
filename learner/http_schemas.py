"""JSON schemas of the learner's HTTP bodies, for its OpenAPI document (:mod:`learner.http_api`).

The routes return prepared bodies (never validated through pydantic); these schemas describe them
for clients and for the contract test (``tests/test_http_contract.py``, schemathesis checks every
reply against them). Objects whose keys may grow (``/status``, ``/history``) allow more properties.
Every number may be null: :mod:`learner.json_safe` writes a non-finite one as null.
"""

from __future__ import annotations

from typing import Any

from service_http.openapi import nullable

NUMBER: dict[str, Any] = nullable({"type": "number"})
INTEGER: dict[str, Any] = nullable({"type": "integer"})
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
STRING: dict[str, Any] = nullable({"type": "string"})


def _object(properties: dict[str, Any], required: list[str] | None = None, open_: bool = True) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties),
            "additionalProperties": open_}


HEALTH = _object({"ok": {"type": "boolean", "const": True}}, open_=False)
READINESS = _object({"ready": {"type": "boolean"}, "leader": {"type": "boolean"}, "reason": {"type": "string"}})

DRIFT_FIELDS: dict[str, Any] = {
    "type": "array",
    "description": "per-field drift scores, top first (learner.drift_fields)",
    "items": _object({"field": {"type": "string"}, "score": NUMBER,
                      "categories": {"type": "array", "items": _object({"category": STRING, "score": NUMBER},
                                                                       required=["category", "score"])}},
                     required=["field", "score"]),
}

STATUS = _object({
    "stream": {"type": "string"}, "records": NUMBER, "loss": NUMBER, "rounds": COUNT, "steps": INTEGER,
    "leader": {"type": "boolean"}, "lease_holder": STRING, "reachable": {"type": "boolean"},
    "checkpoint_age_seconds": NUMBER,
    "checkpoint_error": nullable(_object({"reason": {"type": "string"}, "time": NUMBER})),
    "drift_score": NUMBER, "drift_fields": DRIFT_FIELDS, "drift_threshold": NUMBER,
    "drift_alarm": {"type": "object", "additionalProperties": True}, "target": STRING,
})

POINT = _object({"time": NUMBER, "records": NUMBER, "leader": {"type": "boolean"}, "loss": NUMBER, "floor": NUMBER,
                 "drift": NUMBER, "threshold": NUMBER, "round": {"type": "integer"}, "steps": INTEGER},
                required=["time", "records", "leader"])

HISTORY = _object({
    "stream": {"type": "string"}, "now": {"type": "number"}, "maxlen": {"type": "integer", "minimum": 1},
    "leader": {"type": "boolean"}, "holder": STRING, "lease_holder": STRING, "reachable": {"type": "boolean"},
    "target": STRING, "spec": {"type": "object", "additionalProperties": True}, "records": NUMBER,
    "target_records": NUMBER, "rate": NUMBER, "rounds": COUNT, "steps": INTEGER, "loss": NUMBER, "drift": NUMBER,
    "drift_fields": DRIFT_FIELDS, "threshold": NUMBER, "has_model": {"type": "boolean"},
    "points": {"type": "array", "items": POINT},
}, required=["now", "maxlen", "leader", "points"])

SAMPLES = _object({"samples": {"type": "array", "description": "n rows of d numbers in the data's units",
                               "items": {"type": "array", "items": NUMBER}}}, open_=False)
RECORDS = _object({"fields": {"type": "array", "items": {"type": "string"}},
                   "records": {"type": "array", "description": "n typed records (a stream with a schema)",
                               "items": {"type": "object", "additionalProperties": True}}}, open_=False)
SAMPLE = {"oneOf": [SAMPLES, RECORDS]}

_COUNTS = {"type": "array", "items": COUNT}
MARGINAL = _object({"dim": COUNT, "lo": {"type": "number"}, "hi": {"type": "number"}, "counts": _COUNTS})
CATEGORY_BARS = {"type": "array", "items": _object({
    "field": {"type": "string"}, "type": {"type": "string"}, "labels": {"type": "array", "items": STRING},
    "counts": _COUNTS}, required=["field", "labels", "counts"])}
DENSITY = _object({
    "n": COUNT, "d": {"type": "integer", "minimum": 1}, "x": COUNT, "y": nullable(COUNT), "bins": COUNT,
    "marginals": {"type": "array", "items": MARGINAL}, "marginals_truncated": {"type": "boolean"},
    "counts": nullable({"type": "array", "items": _COUNTS, "description": "counts[i][j]: x-bin i, y-bin j"}),
    "outside": COUNT, "nonfinite": COUNT,
    "x_range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    "y_range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    "categories": CATEGORY_BARS,
}, required=["n", "d", "x", "y", "bins", "marginals", "counts", "outside", "nonfinite"])
