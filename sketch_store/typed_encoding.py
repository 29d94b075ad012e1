"""Typed records → the numeric vectors the feature map sketches, and back (docs/design.md §1, "Typed records").

An :class:`Encoder` maps a record of a :class:`~sketch_store.schema.Schema` to ``u ∈ R^D``, one block of
coordinates per field, in schema order. With ``c`` the category scale (:data:`DEFAULT_CATEGORY_SCALE`):

* **float / int** ``v``: one coordinate ``(v − μ)/s``, ``μ`` and ``s`` the pilot's mean and (population)
  standard deviation (``s = 1`` for a constant column): a standardised value, as for plain vectors.
* **bool**: one coordinate ``+c/√2`` (true) or ``−c/√2`` (false).
* **category** with values ``k_1 … k_K``: ``c·e_j`` for value ``k_j``, a scaled one-hot of length K (K + 1 with
  ``unknown="other"``: values outside the schema's list go to a last ``__other__`` slot instead of being
  refused, and decode as ``"__other__"``).
* **nullable** fields get one more coordinate, the missingness indicator, ``0`` when the value is present; a
  null (or missing) value puts the value block at ``0`` (a numeric field's mean) and the indicator at
  ``√2·c`` (float/int), ``√(3/2)·c`` (bool) or ``c`` (category: the indicator is a last one-hot slot).

So two different categories, true against false, a null against any value of a bool or category field, and a
null against a numeric field's mean are all at distance ``√2·c``: a null is one more category of its field.
``c = Φ⁻¹(3/4) ≈ 0.674`` makes ``√2·c ≈ 0.954`` the median of ``|X − Y|`` for independent standard normal
``X, Y``: a change of category weighs as much as the median change of a standardised numeric field between two
records, in the same statistic (a median of pairwise distances) the median heuristic reads σ from. ``c = 1``
(a plain one-hot) would match the root-mean-square difference ``√2`` instead, which heavy tails inflate.

Decoding inverts each block: ``u·s + μ`` (rounded for an int field), the sign for a bool (``> 0`` is true),
the arg-max slot for a category (the null slot included), and an indicator above half its null value → null.

Records are JSON-like mappings. A dotted field name ``device.model`` is looked up by keys at each level, the
longest matching key first: a literal top-level key ``"device.model"`` wins over ``{"device": {"model": …}}``.
A missing field counts as null; keys outside the schema are ignored. A bad value raises :class:`RecordError`
with a ``reason`` from :data:`REASONS`. Text cells (CSV) are converted by :func:`parse_text_record` first.

Example
-------
>>> from sketch_store.schema import Field, Schema
>>> schema = Schema((Field("carat", "float"), Field("cut", "category", ("Fair", "Good", "Ideal")),
...                  Field("has_cert", "bool", nullable=True)))
>>> records = [{"carat": 0.5, "cut": "Good", "has_cert": True}, {"carat": 1.5, "cut": "Ideal"}]
>>> enc = Encoder(schema, fit_encoding_stats(schema, records))
>>> enc.dim, enc.column_names
(6, ('carat', 'cut=Fair', 'cut=Good', 'cut=Ideal', 'has_cert', 'has_cert=null'))
>>> u = enc.encode_many(records)
>>> u.round(3).tolist()
[[-1.0, 0.0, 0.674, 0.0, 0.477, 0.0], [1.0, 0.0, 0.0, 0.674, 0.0, 0.826]]
>>> enc.decode_many(u) == [records[0], {"carat": 1.5, "cut": "Ideal", "has_cert": None}]
True
>>> enc.encode({"carat": 1.0, "cut": "Poor"})
Traceback (most recent call last):
...
sketch_store.typed_encoding.RecordError: field 'cut': unknown category 'Poor'
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Literal

import numpy as np

from sketch_store.bounds import Bounds
from sketch_store.errors import DataError, SpecError, SpecMismatchError
from sketch_store.schema import (
    MAX_DEPTH,
    MAX_STRING_BYTES,
    OTHER,
    Field,
    Schema,
    parse_bool_text,
    parse_float_text,
    parse_int_text,
    short_repr,
    string_too_long,
)

#: Why a record was refused (``RecordError.reason``): a fixed set, so rejects can be counted by reason.
REASONS: tuple[str, ...] = ("wrong_type", "unknown_category", "null_not_allowed", "not_finite", "too_long",
                            "nested_too_deep", "duplicate_key")
#: ``c``: a one-hot's scale, so that two categories are ``√2·c`` ≈ 0.954 apart, the median |X − Y| of N(0, 1).
DEFAULT_CATEGORY_SCALE = NormalDist().inv_cdf(0.75)
UnknownPolicy = Literal["reject", "other"]
UNKNOWN_POLICIES: tuple[str, ...] = ("reject", "other")
NUMERIC_TYPES = ("float", "int")
_MISSING = object()


class RecordError(DataError):
    """A record that cannot be encoded: ``reason`` (one of :data:`REASONS`) and the ``field`` at fault (or None)."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.field = field

    def prefixed(self, prefix: str) -> RecordError:
        """The same error with ``prefix: `` before its message (e.g. which record)."""
        return RecordError(self.reason, f"{prefix}: {self}", self.field)


def _unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object from its key/value pairs; a repeated key raises ``RecordError('duplicate_key')``."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise RecordError("duplicate_key", f"key {short_repr(name)} appears more than once in one object",
                                  field=name)
            seen.add(name)
    return obj


def loads_record(text: str) -> object:
    """``json.loads(text)``, refusing any object with a repeated key (``duplicate_key``).

    JSON leaves a repeated key's meaning open (RFC 8259 §4) and parsers differ on which value wins, so a
    typed record that repeats one is ambiguous: it is refused, never read by one parser's rule.

    >>> loads_record('{"a": 1, "b": {"c": 2}}')
    {'a': 1, 'b': {'c': 2}}
    >>> try:
    ...     loads_record('{"a": 1, "b": {"c": 2, "c": 3}}')
    ... except RecordError as exc:
    ...     print(exc.reason, exc.field)
    duplicate_key c
    """
    return json.loads(text, object_pairs_hook=_unique_object)


def _fail(reason: str, field: Field, detail: str) -> RecordError:
    return RecordError(reason, f"field {field.name!r}: {detail}", field.name)


# -- finding a field's value in a record -----------------------------------------------------------------


def find_value(record: Mapping[str, object], parts: tuple[str, ...]) -> object:
    """The value at the dotted path ``parts``, or a sentinel when absent (see :func:`lookup`)."""
    return _find(record, parts, 0)


def _find(obj: Mapping[str, object], parts: tuple[str, ...], start: int) -> object:
    """Keys ``parts[start:j]`` joined by dots, longest first; a nested object continues the search."""
    for stop in range(len(parts), start, -1):
        key = ".".join(parts[start:stop])
        if key in obj:
            value = obj[key]
            if stop == len(parts):
                return value
            if isinstance(value, Mapping):
                found = _find(value, parts, stop)
                if found is not _MISSING:
                    return found
    return _MISSING


def lookup(record: Mapping[str, object], name: str) -> object:
    """The value of field ``name`` in ``record``, None when absent (the longest matching key wins at each level).

    >>> lookup({"device": {"model": "a"}}, "device.model"), lookup({"device.model": "b"}, "device.model")
    ('a', 'b')
    >>> lookup({"device.model": "b", "device": {"model": "a"}}, "device.model"), lookup({}, "x")
    ('b', None)
    """
    value = find_value(record, tuple(name.split(".")))
    return None if value is _MISSING else value


def check_depth(record: object, max_depth: int = MAX_DEPTH) -> None:
    """Refuse (``nested_too_deep``) a record with objects or lists nested more than ``max_depth`` levels."""
    stack: list[tuple[object, int]] = [(record, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > max_depth:
            raise RecordError("nested_too_deep", f"record is nested more than {max_depth} levels deep")
        children = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, list | tuple) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, Mapping | list | tuple))


# -- reading one value ------------------------------------------------------------------------------------


def _is_bool(value: object) -> bool:
    return isinstance(value, bool | np.bool_)


def _finite_float(field: Field, value: numbers.Real) -> float:
    try:
        out = float(value)
    except OverflowError:
        raise _fail("not_finite", field, f"{short_repr(value)} is too large for a float") from None
    if not math.isfinite(out):
        raise _fail("not_finite", field, f"{short_repr(value)} is not a finite number")
    return out


def read_number(field: Field, value: object) -> float:
    """A non-null value of a float or int field as a finite float (a float field takes ints; booleans are not numbers).

    An int field takes an integer, or a float with an integral value (JSON writers may send ``3.0``).
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise _fail("wrong_type", field, f"expected {'an int' if field.type == 'int' else 'a number'}, "
                    f"got {short_repr(value)} ({type(value).__name__})")
    out = _finite_float(field, value)
    if field.type == "int" and not isinstance(value, numbers.Integral) and not out.is_integer():
        raise _fail("wrong_type", field, f"expected an int, got {short_repr(value)}")
    return out


def read_value(field: Field, value: object) -> object:
    """Validate one field's value (``_MISSING``/None for absent or null); returns it as float, bool, str or None."""
    if value is None or value is _MISSING:
        if not field.nullable:
            raise _fail("null_not_allowed", field, "is null or missing, and the field is not nullable")
        return None
    if isinstance(value, str) and string_too_long(value):
        raise _fail("too_long", field, f"a string of over {MAX_STRING_BYTES} bytes")
    if isinstance(value, Mapping | list | tuple):
        raise _fail("wrong_type", field, f"expected a {field.type}, got a {type(value).__name__}")
    if field.type in NUMERIC_TYPES:
        return read_number(field, value)
    if field.type == "bool":
        if not _is_bool(value):
            raise _fail("wrong_type", field,
                        f"expected true or false, got {short_repr(value)} ({type(value).__name__})")
        return bool(value)
    if not isinstance(value, str):
        raise _fail("wrong_type", field, f"expected a string, got {short_repr(value)} ({type(value).__name__})")
    return value


# -- text cells ---------------------------------------------------------------------------------------------


def parse_text_record(schema: Schema, record: Mapping[str, object]) -> dict[str, object]:
    """A CSV row's text cells converted to the types of the schema's fields (other keys copied as they are).

    float: a decimal number; int: digits (or an integral decimal such as ``3.0``); bool: ``true``/``false`` in
    any case; category: the text itself; an empty cell is null. Unparseable text raises ``wrong_type``.
    """
    out = dict(record)
    for field in schema.fields:
        text = out.get(field.name)
        if isinstance(text, str):
            out[field.name] = _parse_cell(field, text)
    return out


def _parse_cell(field: Field, text: str) -> object:
    if string_too_long(text):
        raise _fail("too_long", field, f"a string of over {MAX_STRING_BYTES} bytes")
    if text == "":
        return None
    if field.type == "category":
        return text
    if field.type == "bool":
        parsed: object = parse_bool_text(text)
    elif field.type == "int":
        parsed = parse_int_text(text)
        if parsed is None:
            number = parse_float_text(text)
            parsed = int(number) if number is not None and number.is_integer() else None
    else:
        parsed = parse_float_text(text)
    if parsed is None:
        raise _fail("wrong_type", field, f"{short_repr(text)} is not a{'n' * (field.type == 'int')} {field.type}")
    return parsed


# -- the encoding's parameters ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncodingStats:
    """Everything an :class:`Encoder` needs besides the schema: per numeric field its mean and std, ``c``, the policy.

    ``numeric`` maps each float/int field's name to ``(mean, std)``; stored as JSON (:meth:`to_json`).
    ``ranges`` optionally maps some of them to the ``(min, max)`` that decoded values are clipped to (the whole
    data's range when a file is sketched offline; docs/design.md §1, "Typed records"); empty for a stream, whose
    values may move past its pilot's.
    """

    numeric: Mapping[str, tuple[float, float]]
    category_scale: float = DEFAULT_CATEGORY_SCALE
    unknown: UnknownPolicy = "reject"
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.numeric, Mapping):
            raise SpecError("encoding stats: numeric must map field names to (mean, std), "
                            f"got {short_repr(self.numeric)}")
        object.__setattr__(self, "numeric", {str(k): _mean_std(k, v) for k, v in self.numeric.items()})
        scale = self.category_scale
        if _is_bool(scale) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
            raise SpecError(f"encoding stats: category_scale must be a finite number > 0, got {short_repr(scale)}")
        object.__setattr__(self, "category_scale", float(scale))
        if self.unknown not in UNKNOWN_POLICIES:
            raise SpecError(f"encoding stats: unknown must be one of {', '.join(UNKNOWN_POLICIES)}, "
                            f"got {short_repr(self.unknown)}")
        if not isinstance(self.ranges, Mapping):
            raise SpecError(f"encoding stats: ranges must map field names to (min, max), got {short_repr(self.ranges)}")
        object.__setattr__(self, "ranges", {str(k): _range(k, v, self.numeric) for k, v in self.ranges.items()})

    def to_dict(self) -> dict[str, object]:
        """``{"category_scale": c, "unknown": …, "numeric": {name: {"mean": μ, "std": s}}}`` (fields in order)."""
        out: dict[str, object] = {"category_scale": self.category_scale, "unknown": self.unknown,
                                  "numeric": {k: {"mean": m, "std": s} for k, (m, s) in self.numeric.items()}}
        if self.ranges:  # only when set: specs without ranges keep their fingerprints
            out["range"] = {k: [lo, hi] for k, (lo, hi) in self.ranges.items()}
        return out

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`; floats are written exactly (shortest round-trip repr)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_dict(cls, obj: object) -> EncodingStats:
        """Inverse of :meth:`to_dict`; unknown keys and bad values raise :class:`SpecError`."""
        if not isinstance(obj, dict):
            raise SpecError(f"encoding stats must be a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - {"category_scale", "unknown", "numeric", "range"})
        if unknown or "numeric" not in obj:
            raise SpecError(f"encoding stats: expected keys category_scale, unknown, numeric (and range); "
                            f"got {sorted(obj)}")
        numeric = obj["numeric"]
        if not isinstance(numeric, dict):
            raise SpecError(f"encoding stats: numeric must be an object, got {type(numeric).__name__}")
        pairs = {}
        for name, item in numeric.items():
            if not isinstance(item, dict) or set(item) != {"mean", "std"}:
                raise SpecError(f"encoding stats: field {name!r} must be {{\"mean\": …, \"std\": …}}, "
                                f"got {short_repr(item)}")
            pairs[name] = (item["mean"], item["std"])
        ranges = obj.get("range", {})
        if not isinstance(ranges, dict):
            raise SpecError(f"encoding stats: range must be an object, got {type(ranges).__name__}")
        return cls(pairs, obj.get("category_scale", DEFAULT_CATEGORY_SCALE), obj.get("unknown", "reject"), ranges)

    @classmethod
    def from_json(cls, text: str | bytes) -> EncodingStats:
        """Parse :meth:`to_json`'s text."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(f"encoding stats: not valid JSON ({exc})") from None
        return cls.from_dict(obj)


def _mean_std(name: object, pair: object) -> tuple[float, float]:
    """A finite mean and a finite std > 0, or :class:`SpecError` naming the field."""
    try:
        mean, std = pair  # type: ignore[misc]
        ok = all(not _is_bool(v) and isinstance(v, numbers.Real) for v in (mean, std))
        ok = ok and math.isfinite(mean) and math.isfinite(std) and std > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise SpecError(f"encoding stats: field {name!r} needs a finite mean and a finite std > 0, "
                        f"got {short_repr(pair)}")
    return float(mean), float(std)


def _range(name: object, pair: object, numeric: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    """A finite ``(min, max)`` with min <= max for a numeric field, or :class:`SpecError` naming the field."""
    try:
        lo, hi = pair  # type: ignore[misc]
        ok = all(not _is_bool(v) and isinstance(v, numbers.Real) and math.isfinite(v) for v in (lo, hi)) and lo <= hi
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or name not in numeric:
        raise SpecError(f"encoding stats: the range of {name!r} must be [min, max] of finite numbers, min <= max, "
                        f"for a float or int field; got {short_repr(pair)}")
    return float(lo), float(hi)


def fit_encoding_stats(schema: Schema, records: Iterable[Mapping[str, object]], *,
                       category_scale: float = DEFAULT_CATEGORY_SCALE,
                       unknown: UnknownPolicy = "reject", keep_ranges: bool = False) -> EncodingStats:
    """Mean and population std of each float/int field over the pilot's non-null values (std 0 → 1).

    ``keep_ranges`` also keeps each numeric field's ``(min, max)`` over them, which decoding clips to.

    Every record is validated as :meth:`Encoder.encode` would; a bad one raises :class:`RecordError`
    naming the record (1-based).
    """
    values: dict[str, list[float]] = {f.name: [] for f in schema.fields if f.type in NUMERIC_TYPES}
    policy = EncodingStats({}, category_scale, unknown)  # validates the two parameters first
    probe = Encoder(schema, EncodingStats({name: (0.0, 1.0) for name in values}, category_scale, unknown))
    n = 0
    for i, record in enumerate(records):
        try:
            typed = probe.read_record(record)
        except RecordError as exc:
            raise exc.prefixed(f"pilot record {i + 1}") from None
        for name, column in values.items():
            if typed[name] is not None:
                column.append(typed[name])
        n += 1
    if n == 0:
        raise DataError("no pilot records to fit the encoding on")
    numeric, ranges = {}, {}
    for name, column in values.items():
        if not column:
            raise DataError(f"field {name!r} is null in every pilot record: its mean and std cannot be fitted")
        arr = np.asarray(column, dtype=np.float64)
        mean, std = float(arr.mean()), float(arr.std())
        numeric[name] = (mean, std if std > 0 and math.isfinite(std) else 1.0)
        ranges[name] = (float(arr.min()), float(arr.max()))
    return EncodingStats(numeric, policy.category_scale, policy.unknown, ranges if keep_ranges else {})


# -- the encoder ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Block:
    """One field's coordinates ``[start, start + width)``; the last one is the null indicator when nullable."""

    field: Field
    start: int
    width: int
    slots: Mapping[str, int]  # category value → offset in the block (``__other__`` included under "other")
    null_mark: float  # the indicator's value for a null (0 when not nullable)

    @property
    def indicator(self) -> int:
        return self.start + self.width - 1


class Encoder:
    """Typed records of ``schema`` ↔ vectors of ``R^dim`` (formulas in the module docstring)."""

    def __init__(self, schema: Schema, stats: EncodingStats) -> None:
        if not isinstance(schema, Schema) or not isinstance(stats, EncodingStats):
            raise SpecError("an Encoder needs a Schema and EncodingStats")
        numeric = [f.name for f in schema.fields if f.type in NUMERIC_TYPES]
        if sorted(numeric) != sorted(stats.numeric):
            missing, extra = sorted(set(numeric) - set(stats.numeric)), sorted(set(stats.numeric) - set(numeric))
            raise SpecMismatchError(f"encoding stats do not fit the schema: no stats for {missing}, "
                                    f"stats for non-numeric or unknown fields {extra}")
        self.schema, self.stats = schema, stats
        self._parts = [f.parts for f in schema.fields]
        self._blocks: list[_Block] = []
        start = 0
        for field in schema.fields:
            block = self._make_block(field, start)
            self._blocks.append(block)
            start += block.width
        self.dim = start
        self._bool_value = stats.category_scale / math.sqrt(2.0)

    def _make_block(self, field: Field, start: int) -> _Block:
        c = self.stats.category_scale
        slots: dict[str, int] = {}
        if field.type == "category":
            slots = {value: j for j, value in enumerate(field.categories)}
            if self.stats.unknown == "other":
                slots[OTHER] = len(slots)
            width, mark = len(slots), c
        else:
            width, mark = 1, c * (math.sqrt(1.5) if field.type == "bool" else math.sqrt(2.0))
        return _Block(field, start, width + field.nullable, slots, mark if field.nullable else 0.0)

    @property
    def blocks(self) -> tuple[_Block, ...]:
        """The coordinate layout, one block per field in schema order (read-only: the blocks are frozen)."""
        return tuple(self._blocks)

    @property
    def column_names(self) -> tuple[str, ...]:
        """A name per coordinate: ``price``, ``cut=Fair``, ``cut=__other__``, ``price=null``."""
        names: list[str] = []
        for block in self._blocks:
            name = block.field.name
            names.extend([f"{name}={value}" for value in block.slots] if block.slots else [name])
            if block.field.nullable:
                names.append(f"{name}=null")
        return tuple(names)

    def clipped_to(self, bounds: Bounds | None) -> Encoder:
        """This encoder, decoding each numeric field clipped to ``bounds`` (encoded coordinates) in its units.

        A field's range becomes ``[lo_j · s + μ, hi_j · s + μ]`` over its coordinate j; fields whose stats
        already keep a range keep theirs. ``bounds`` None (not known) returns this encoder unchanged.
        """
        if bounds is None:
            return self
        if bounds.d != self.dim:
            raise SpecMismatchError(f"bounds have {bounds.d} coordinates, the encoding has {self.dim}")
        ranges = dict(self.stats.ranges)
        for block in self._blocks:
            name = block.field.name
            if block.field.type in NUMERIC_TYPES and name not in ranges:
                mean, std = self.stats.numeric[name]
                ranges[name] = (float(bounds.lo[block.start] * std + mean), float(bounds.hi[block.start] * std + mean))
        return Encoder(self.schema, dataclasses.replace(self.stats, ranges=ranges))

    def read_record(self, record: object) -> dict[str, object]:
        """Validate ``record``: name → float (numeric), bool, str (a category, ``__other__`` if unknown) or None."""
        if not isinstance(record, Mapping):
            raise RecordError("wrong_type", f"a record must be an object, got {type(record).__name__}")
        check_depth(record)
        out: dict[str, object] = {}
        for block, parts in zip(self._blocks, self._parts, strict=True):
            value = read_value(block.field, find_value(record, parts))
            if isinstance(value, str) and value not in block.slots:
                if OTHER not in block.slots:
                    raise _fail("unknown_category", block.field, f"unknown category {short_repr(value)}")
                value = OTHER
            out[block.field.name] = value
        return out

    def _write(self, typed: dict[str, object], row: np.ndarray) -> None:
        stats = self.stats
        for block in self._blocks:
            value = typed[block.field.name]
            if value is None:
                row[block.indicator] = block.null_mark
            elif block.slots:
                row[block.start + block.slots[value]] = stats.category_scale  # type: ignore[index]
            elif block.field.type == "bool":
                row[block.start] = self._bool_value if value else -self._bool_value
            else:
                mean, std = stats.numeric[block.field.name]
                row[block.start] = (value - mean) / std  # type: ignore[operator]

    def encode(self, record: Mapping[str, object]) -> np.ndarray:
        """The vector ``u ∈ R^dim`` of one record (float64); a bad record raises :class:`RecordError`."""
        row = np.zeros(self.dim, dtype=np.float64)
        self._write(self.read_record(record), row)
        return row

    def encode_many(self, records: Iterable[Mapping[str, object]]) -> np.ndarray:
        """``(N, dim)`` float64 of the records; a bad one raises :class:`RecordError` naming it (1-based)."""
        typed = []
        for i, record in enumerate(records):
            try:
                typed.append(self.read_record(record))
            except RecordError as exc:
                raise exc.prefixed(f"record {i + 1}") from None
        out = np.zeros((len(typed), self.dim), dtype=np.float64)
        for row, rec in zip(out, typed, strict=True):
            self._write(rec, row)
        return out

    def decode_many(self, u: np.ndarray, nested: bool = True) -> list[dict[str, object]]:
        """Typed records of the rows of ``u`` (N, dim): inverse of :meth:`encode_many` on its image.

        Numeric ``u·s + μ`` (clipped to the field's range if the stats keep one, rounded to an int for an int
        field), bool ``u > 0``, category the arg-max slot, null
        when the indicator exceeds half its null value (for a category, when the null slot is the arg-max).
        ``nested`` builds nested objects for dotted names; otherwise keys are the dotted names.
        """
        arr = np.asarray(u, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise DataError(f"expected encoded rows of dimension {self.dim}, got an array of shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise DataError("encoded rows contain NaN or Inf")
        columns = [self._decode_block(block, arr) for block in self._blocks]
        records = []
        for values in zip(*columns, strict=True) if columns else []:
            flat = {block.field.name: value for block, value in zip(self._blocks, values, strict=True)}
            records.append(_nest(flat) if nested else flat)
        return records

    def _decode_block(self, block: _Block, arr: np.ndarray) -> list[object]:
        field = block.field
        part = arr[:, block.start: block.start + block.width]
        if block.slots:
            labels = [*block.slots, None] if field.nullable else list(block.slots)
            return [labels[j] for j in np.argmax(part, axis=1)]
        values: list[object]
        if field.type == "bool":
            values = [bool(v) for v in part[:, 0] > 0]
        else:
            mean, std = self.stats.numeric[field.name]
            with np.errstate(over="ignore"):
                raw = part[:, 0] * std + mean
            if not np.all(np.isfinite(raw)):
                raise DataError(f"field {field.name!r}: decoded values overflow")
            if field.name in self.stats.ranges:
                raw = np.clip(raw, *self.stats.ranges[field.name])
            values = [int(v) for v in np.rint(raw)] if field.type == "int" else [float(v) for v in raw]
        if field.nullable:
            nulls = part[:, -1] > block.null_mark / 2
            values = [None if null else v for v, null in zip(values, nulls, strict=True)]
        return values


def _nest(flat: dict[str, object]) -> dict[str, object]:
    """Dotted keys → nested objects: ``{"a.b": 1}`` → ``{"a": {"b": 1}}`` (names never prefix one another)."""
    out: dict[str, object] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        node[leaf] = value
    return out
