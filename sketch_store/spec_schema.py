"""The typed part of a sketch spec: its schema and encoding, validated, hashed and stored (docs/design.md §1).

A spec over typed records (:class:`sketch_store.spec.SketchSpec` with ``schema`` and ``encoding``) sketches
the vectors ``u = E(r) ∈ R^D`` of :class:`sketch_store.typed_encoding.Encoder`, so ``d = D``; the encoding
already standardises numbers, so the spec's own standardisation must be the identity (mean 0, std 1): a
per-coordinate std over the scaled one-hots would undo the category scale ``c``. Both parts are stored as
uint8 arrays of their canonical JSON bytes (no pickle) and hashed into the fingerprint only when present.

Example
-------
>>> from sketch_store.schema import Field, Schema
>>> from sketch_store.typed_encoding import EncodingStats
>>> schema = Schema((Field("carat", "float"), Field("cut", "category", ("Fair", "Good"))))
>>> stats = EncodingStats({"carat": (0.8, 0.4)})
>>> arrays = typed_to_arrays(schema, stats, "spec_")
>>> sorted(arrays), arrays["spec_schema"].dtype.name
(['spec_encoding', 'spec_schema'], 'uint8')
>>> typed_from_arrays(arrays, "spec_") == (schema, stats)
True
>>> typed_encoder(schema, stats, d=3, mean=np.zeros(3), std=np.ones(3)).column_names
('carat', 'cut=Fair', 'cut=Good')
"""

from __future__ import annotations

import json

import numpy as np

from sketch_store.errors import SketchgenError, SpecError
from sketch_store.schema import Schema
from sketch_store.typed_encoding import Encoder, EncodingStats

#: Array keys (after the spec's prefix) of the typed part.
SCHEMA_KEY = "schema"
ENCODING_KEY = "encoding"


def encoding_bytes(stats: EncodingStats) -> bytes:
    """Canonical JSON bytes of the encoding stats (compact, ASCII, sorted keys), for hashing and storage."""
    return json.dumps(stats.to_dict(), separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode("ascii")


def typed_encoder(schema: object, stats: object, d: int, mean: np.ndarray, std: np.ndarray) -> Encoder | None:
    """The encoder of a spec's typed part, after checking it fits the spec; None for a numeric spec.

    Both or neither of ``schema``/``stats``; not a plain-float schema (that is a numeric spec); ``d`` equal to
    the encoding's dimension; ``mean`` all 0 and ``std`` all 1 (the encoding standardises already).
    """
    if schema is None and stats is None:
        return None
    if schema is None or stats is None:
        raise SpecError("a typed spec needs both a schema and its encoding stats (or neither)")
    if not isinstance(schema, Schema) or not isinstance(stats, EncodingStats):
        raise SpecError("spec fields 'schema' and 'encoding' must be a Schema and EncodingStats")
    if schema.is_numeric:
        raise SpecError("a schema of plain float fields is a numeric spec: leave schema and encoding unset")
    try:
        encoder = Encoder(schema, stats)
    except SketchgenError as exc:
        raise SpecError(f"spec encoding does not fit its schema: {exc}") from None
    if encoder.dim != d:
        raise SpecError(f"spec dimension d={d} differs from its encoding's dimension {encoder.dim}")
    if np.any(mean != 0.0) or np.any(std != 1.0):
        raise SpecError("a typed spec must not standardise again (mean 0 and std 1): its encoding already "
                        "standardises numbers, and a per-coordinate std would undo the category scale")
    return encoder


def typed_fingerprint_bytes(schema: Schema | None, stats: EncodingStats | None) -> bytes:
    """What the typed part adds to the fingerprint: nothing for a numeric spec, else both canonical JSONs."""
    if schema is None or stats is None:
        return b""
    return b"|schema|" + schema.fingerprint_bytes() + b"|encoding|" + encoding_bytes(stats)


def _json_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def typed_to_arrays(schema: Schema | None, stats: EncodingStats | None, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix}schema`` and ``{prefix}encoding`` as uint8 arrays of JSON bytes (empty for a numeric spec)."""
    if schema is None or stats is None:
        return {}
    return {f"{prefix}{SCHEMA_KEY}": _json_array(schema.fingerprint_bytes()),
            f"{prefix}{ENCODING_KEY}": _json_array(encoding_bytes(stats))}


def _array_text(name: str, arr: np.ndarray) -> bytes:
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise SpecError(f"spec field {name!r} must be a 1-D uint8 array of JSON bytes, got {arr.dtype} {arr.shape}")
    return arr.tobytes()


def typed_from_arrays(arrays: dict[str, np.ndarray], prefix: str) -> tuple[Schema | None, EncodingStats | None]:
    """Inverse of :func:`typed_to_arrays`; one key without the other, or bad JSON, raises :class:`SpecError`."""
    keys = (f"{prefix}{SCHEMA_KEY}", f"{prefix}{ENCODING_KEY}")
    present = [k in arrays for k in keys]
    if not any(present):
        return None, None
    if not all(present):
        raise SpecError(f"spec has {'schema' if present[0] else 'encoding'} but not "
                        f"{'encoding' if present[0] else 'schema'}: a typed spec stores both")
    schema = Schema.from_json(_array_text(SCHEMA_KEY, arrays[keys[0]]))
    stats = EncodingStats.from_json(_array_text(ENCODING_KEY, arrays[keys[1]]))
    return schema, stats


def describe_typed(schema: Schema | None) -> str:
    """`` typed: 4 fields (carat, cut, price, has_cert)`` for the spec's one-line summary ('' when numeric)."""
    if schema is None:
        return ""
    names = ", ".join(schema.names[:6]) + (", …" if len(schema.names) > 6 else "")
    return f" typed: {len(schema.fields)} field{'s' * (len(schema.fields) != 1)} ({names})"
