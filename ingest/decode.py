"""Decoding and validating Kafka record values into rows of floats (docs/ingest.md, bad records).

Accepted values:

* JSON ``[x1, …, xd]`` (one row), ``[[…], […]]`` (several rows) or ``{"x": …}`` with either;
* little-endian float32 rows when the record header ``content-type`` is
  ``application/x-float32`` (the value's length must be a multiple of ``4d``).

Anything else raises :class:`RecordError` with a short machine-readable ``reason`` (the label of
``sketchgen_ingest_rejected_total`` and the dead-letter header) and a human ``detail``:
``too_large``, ``empty``, ``invalid_json``, ``bad_structure``, ``wrong_dimension``,
``non_finite``, ``bad_binary``, ``unsupported_content_type``, and ``out_of_range`` (finite but
absurdly far from the data, see :func:`check_range`).

A stream of typed records (its spec has an encoder, docs/design.md §1 "Typed records") takes one JSON
object per value, keyed by field names, decoded by :func:`decode_typed_value` into the one row
``u = E(r)`` of the encoder; besides the limits above it refuses a record with the encoder's reasons
(:data:`TYPED_REASONS`: ``wrong_type``, ``unknown_category``, ``null_not_allowed``, ``too_long``,
``nested_too_deep``, ``duplicate_key`` for an object that repeats a key; a non-finite number is ``non_finite``
as for vectors).

:func:`decode_json_vectors` is the fast path for the common case of many one-row JSON
records: one regular-expression match and one NumPy parse over all of them, used only when
every value is exactly one flat array of ``d`` JSON numbers; otherwise the caller decodes
record by record.

Example
-------
>>> decode_value(b"[1, 2.5]", {}, d=2).tolist()
[[1.0, 2.5]]
>>> try:
...     decode_value(b"[1, NaN]", {}, d=2)
... except RecordError as exc:
...     exc.reason
'non_finite'
>>> from sketch_store.schema import Field, Schema
>>> from sketch_store.typed_encoding import Encoder, EncodingStats
>>> enc = Encoder(Schema((Field("n", "int"), Field("ok", "bool"))), EncodingStats({"n": (10.0, 2.0)}))
>>> decode_typed_value(b'{"n": 12, "ok": false, "extra": [1]}', {}, enc).round(3).tolist()
[[1.0, -0.477]]
>>> try:
...     decode_typed_value(b'{"n": "12", "ok": true}', {}, enc)
... except RecordError as exc:
...     exc.reason
'wrong_type'
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sketch_store import typed_encoding

F32_CONTENT_TYPE = "application/x-float32"
JSON_CONTENT_TYPES = ("", "application/json", "text/json")
#: Default cap on one record value (bytes); a larger value is rejected unread.
MAX_VALUE_BYTES = 4 * 1024 * 1024
REASONS = (
    "too_large", "empty", "invalid_json", "bad_structure", "wrong_dimension", "non_finite", "bad_binary",
    "unsupported_content_type", "out_of_range",
)
#: Reasons only a stream of typed records gives (from :class:`sketch_store.typed_encoding.RecordError`).
TYPED_REASONS = ("wrong_type", "unknown_category", "null_not_allowed", "too_long", "nested_too_deep", "duplicate_key")
#: Every reject reason of either kind of stream: the labels ``sketchgen_ingest_rejected_total`` exports.
ALL_REASONS = REASONS + TYPED_REASONS
#: The encoder's reason → the ingest reason (the same name, except that a non-finite number has one label).
_TYPED_TO_INGEST = {**{r: r for r in TYPED_REASONS}, "not_finite": "non_finite"}
#: Rows farther than this from the stream's mean, in units of its std, are rejected: their
#: phases would exceed float32's precision (or range) and their features would be noise.
MAX_STANDARDIZED = 1e6


class RecordError(ValueError):
    """A record that must not enter the sketch: ``reason`` (a label) and ``detail`` (for people)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def header_value(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None, name: str) -> str:
    """The value of header ``name`` (case-insensitive) as text, or ``""``."""
    if not headers:
        return ""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == name:
            return value.decode("utf-8", "replace").strip().lower() if isinstance(value, bytes) else str(value)
    return ""


def _check_rows(rows: np.ndarray, d: int) -> np.ndarray:
    if rows.shape[1] != d:
        raise RecordError("wrong_dimension", f"rows have dimension {rows.shape[1]}, the stream expects {d}")
    if not np.all(np.isfinite(rows)):
        raise RecordError("non_finite", "the record contains NaN or Inf")
    return rows


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rows_from_json(obj: object, d: int) -> np.ndarray:
    """Rows from a parsed JSON value: a flat list of numbers, a list of such lists, or ``{"x": …}``."""
    if isinstance(obj, dict):
        if set(obj) != {"x"}:
            raise RecordError("bad_structure", "a JSON object record must have exactly one key, 'x'")
        obj = obj["x"]
    if not isinstance(obj, list) or not obj:
        raise RecordError("bad_structure", "expected a non-empty JSON array of numbers or of arrays of numbers")
    try:
        if all(_is_number(v) for v in obj):
            rows = np.asarray(obj, dtype=np.float64)[None, :]
        elif all(isinstance(r, list) and r and all(_is_number(v) for v in r) for r in obj):
            if len({len(r) for r in obj}) != 1:
                raise RecordError("wrong_dimension", "rows of the record have different lengths")
            rows = np.asarray(obj, dtype=np.float64)
        else:
            raise RecordError("bad_structure", "expected numbers or arrays of numbers (no strings, booleans or nulls)")
    except OverflowError:
        raise RecordError("non_finite", "a number is too large for a float64") from None
    return _check_rows(rows, d)


def decode_value(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None,
    d: int,
    max_bytes: int = MAX_VALUE_BYTES,
) -> np.ndarray:
    """Decode one record value into a finite (k, d) float64 array, or raise :class:`RecordError`."""
    ctype = _checked_content_type(value, headers, max_bytes)
    if ctype == F32_CONTENT_TYPE:
        if len(value) % (4 * d):
            raise RecordError("bad_binary", f"{len(value)} bytes is not a whole number of float32 rows of size {d}")
        rows = np.frombuffer(value, dtype="<f4").reshape(-1, d).astype(np.float64)
        return _check_rows(rows, d)
    if ctype not in JSON_CONTENT_TYPES:
        raise RecordError("unsupported_content_type", f"content-type {ctype!r} is neither JSON nor {F32_CONTENT_TYPE}")
    return rows_from_json(_parse_json(value), d)


def _checked_content_type(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None, max_bytes: int
) -> str:
    """The value's content type, after the limits every value must meet (not empty, at most ``max_bytes``)."""
    if value is None or len(value) == 0:
        raise RecordError("empty", "the record has no value")
    if len(value) > max_bytes:
        raise RecordError("too_large", f"value of {len(value)} bytes exceeds the limit of {max_bytes}")
    return header_value(headers, "content-type").split(";")[0].strip()


def _parse_json(value: bytes, loads: Callable[[str], object] = json.loads) -> object:
    """The JSON text ``value``, strictly UTF-8 (a leading BOM ignored); any failure is an ``invalid_json`` error.

    The bytes are decoded first because ``json.loads`` of bytes would also take UTF-16 and UTF-32 and, decoding
    with ``surrogatepass``, UTF-8-encoded surrogates: none is UTF-8 (docs/ingest.md, bad records). ``loads``
    parses the text (typed records: :func:`sketch_store.typed_encoding.loads_record`, which refuses a repeated
    key as ``duplicate_key``).
    """
    try:
        return loads(value.decode("utf-8-sig"))
    except typed_encoding.RecordError as exc:
        raise RecordError(exc.reason, str(exc)[:200]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError("invalid_json", str(exc)[:200]) from None
    except RecursionError:
        raise RecordError("invalid_json", "JSON nested too deeply") from None


def _json_value(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None, max_bytes: int
) -> object:
    """The parsed JSON of a typed record's value, after the limits every value must meet."""
    ctype = _checked_content_type(value, headers, max_bytes)
    if ctype == F32_CONTENT_TYPE:
        raise RecordError("unsupported_content_type",
                          f"a stream of typed records takes JSON objects, not {F32_CONTENT_TYPE} vectors")
    if ctype not in JSON_CONTENT_TYPES:
        raise RecordError("unsupported_content_type", f"content-type {ctype!r} is not JSON")
    return _parse_json(value, typed_encoding.loads_record)


def decode_typed_value(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None,
    encoder: typed_encoding.Encoder,
    max_bytes: int = MAX_VALUE_BYTES,
) -> np.ndarray:
    """One typed record's value → its encoded row ``E(r)``, a finite (1, D) float64 array, or :class:`RecordError`.

    The value must be a JSON object keyed by field names (dotted names: nested objects; other keys are
    ignored; a missing key is null; an object anywhere in it that repeats a key is refused, ``duplicate_key``).
    """
    obj = _json_value(value, headers, max_bytes)
    if not isinstance(obj, dict):
        raise RecordError("bad_structure", f"a typed record must be a JSON object of fields, got a {_json_kind(obj)}")
    try:
        row = encoder.encode(obj)
    except typed_encoding.RecordError as exc:
        raise RecordError(_TYPED_TO_INGEST.get(exc.reason, "bad_structure"), str(exc)[:200]) from None
    return _check_rows(row[None, :], encoder.dim)


def _json_kind(obj: object) -> str:
    """The JSON name of a parsed value's type (``array``, ``string``, ``number``, ``boolean``, ``null``)."""
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, bool):
        return "boolean"
    return "null" if obj is None else "number"


def check_range(rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows within ``MAX_STANDARDIZED`` stds of ``mean`` in every coordinate."""
    return np.all(np.abs(rows - mean) <= MAX_STANDARDIZED * std, axis=1)


_WS = rb"[ \t\r\n]*"
_NUMBER = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"  # the JSON number grammar
JOIN = b"\x00"  # separates joined record values: it cannot occur in valid JSON text
_TO_NUMBERS = bytes.maketrans(b"[]\x00", b"  ,")


@functools.lru_cache(maxsize=64)
def _rows_pattern(d: int) -> re.Pattern[bytes]:
    """Records ``[n1, …, nd]`` (JSON numbers, optional white space) joined by NUL bytes."""
    row = _WS + rb"\[" + _WS + _NUMBER + rb"(?:" + _WS + rb"," + _WS + _NUMBER + rb")" + b"{%d}" % (d - 1)
    row += _WS + rb"\]" + _WS
    return re.compile(row + rb"(?:\x00" + row + rb")*")


def decode_json_vectors(
    values: Sequence[bytes | None], d: int, max_bytes: int = MAX_VALUE_BYTES
) -> np.ndarray | None:
    """Fast path: an (n, d) array when each of the ``n`` values is one valid JSON row; else None.

    The values are joined with NUL bytes and matched by one regular expression that admits
    exactly ``[number, …]`` with ``d`` JSON numbers per record, then parsed by NumPy in one
    call: no Python work per record. None means "decode these one by one" (some value is not
    a plain row — a tombstone (None) included —, is too large, or holds a number beyond float64).
    """
    if not values or None in values or max(map(len, values)) > max_bytes:
        return None
    return decode_joined_vectors(JOIN.join(values), len(values), d)


def decode_joined_vectors(joined: bytes, n: int, d: int) -> np.ndarray | None:
    """:func:`decode_json_vectors` on values already joined with :data:`JOIN` (``n`` of them)."""
    if n == 0 or _rows_pattern(d).fullmatch(joined) is None:
        return None
    flat = np.fromstring(joined.translate(_TO_NUMBERS), dtype=np.float64, sep=",")
    if flat.size != n * d:
        return None
    rows = flat.reshape(n, d)
    return rows if np.all(np.isfinite(rows)) else None
