"""The schema of typed records: named fields of type float, int, bool or category (docs/design.md §1, "Typed records").

A :class:`Schema` lists a stream's fields in order; :mod:`sketch_store.typed_encoding` turns a record of that
schema into the vector the feature map reads. A field name may contain dots: ``device.model`` addresses
``{"device": {"model": ...}}`` (or a literal top-level key ``"device.model"``). The JSON form is

``{"fields": [{"name": "cut", "type": "category", "categories": ["Fair", "Good"], "nullable": false}, ...]}``

with ``categories`` only on category fields. :func:`infer_schema` reads a schema off pilot records.

Example
-------
>>> schema = infer_schema([{"carat": 0.3, "cut": "Good", "price": 326, "has_cert": True},
...                        {"carat": 1.1, "cut": "Fair", "price": 4100, "has_cert": None}])
>>> [(f.name, f.type, f.categories, f.nullable) for f in schema.fields]  # doctest: +NORMALIZE_WHITESPACE
[('carat', 'float', (), False), ('cut', 'category', ('Fair', 'Good'), False),
 ('price', 'int', (), False), ('has_cert', 'bool', (), True)]
>>> Schema.from_json(schema.to_json()) == schema
True
>>> Schema.numeric(2).is_numeric, Schema.numeric(2).names
(True, ('x0', 'x1'))
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, get_args

from sketch_store.errors import DataError, SpecError

FieldType = Literal["float", "int", "bool", "category"]
#: The field types, in the order the docs list them.
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
#: Longest string value (UTF-8 bytes) a record may carry; longer ones are free text, not a category.
MAX_STRING_BYTES = 1024
#: Deepest nesting of objects (and lists) a record may have; a flat record has depth 1.
MAX_DEPTH = 8
#: Default bound on the number of distinct values a string column may have to be taken as a category.
DEFAULT_MAX_CATEGORIES = 50
#: Reserved category: the slot that unknown values map to under ``unknown="other"`` (typed_encoding).
OTHER = "__other__"

_FIELD_KEYS = ("name", "type", "categories", "nullable")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_TRUE_TEXT, _FALSE_TEXT = "true", "false"


class SchemaError(DataError, SpecError):
    """A schema is malformed: a :class:`DataError` (the user's file) and a :class:`SpecError` (part of a spec)."""


def string_too_long(value: str) -> bool:
    """Whether ``value`` is over :data:`MAX_STRING_BYTES` bytes in UTF-8 (cheap for short strings)."""
    return len(value) > MAX_STRING_BYTES or (len(value) > MAX_STRING_BYTES // 4
                                             and len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES)


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a :class:`Schema`: a (possibly dotted) name, a type, its categories, whether it may be null."""

    name: str
    type: FieldType
    categories: tuple[str, ...] = ()
    nullable: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        label = f"field {self.name!r}"
        if self.type not in FIELD_TYPES:
            raise SchemaError(f"{label}: unknown type {short_repr(self.type)}; use one of {', '.join(FIELD_TYPES)}")
        if not isinstance(self.nullable, bool):
            raise SchemaError(f"{label}: nullable must be true or false, got {short_repr(self.nullable)}")
        if isinstance(self.categories, str) or not isinstance(self.categories, Iterable):
            raise SchemaError(f"{label}: categories must be a list of strings, got {short_repr(self.categories)}")
        object.__setattr__(self, "categories", tuple(self.categories))
        _check_categories(label, self.type, self.categories)

    def to_dict(self) -> dict[str, object]:
        """The JSON object of this field (``categories`` only on a category field), keys in a fixed order."""
        out: dict[str, object] = {"name": self.name, "type": self.type}
        if self.type == "category":
            out["categories"] = list(self.categories)
        out["nullable"] = self.nullable
        return out

    @property
    def parts(self) -> tuple[str, ...]:
        """The name split at its dots: the path of keys into a nested record."""
        return tuple(self.name.split("."))

    def describe(self) -> str:
        """One line: ``cut: category (5 values: Fair, Good, …)``, with ``, nullable`` when it may be null."""
        text = f"{self.name}: {self.type}"
        if self.type == "category":
            shown = ", ".join(self.categories[:5]) + (", …" if len(self.categories) > 5 else "")
            text += f" ({len(self.categories)} value{'s' * (len(self.categories) != 1)}: {shown})"
        return text + (", nullable" if self.nullable else "")


def _check_name(name: object) -> None:
    """A name is a non-empty string of at most :data:`MAX_DEPTH` non-empty dot-separated parts."""
    if not isinstance(name, str):
        raise SchemaError(f"a field name must be a string, got {short_repr(name)}")
    if not name.strip():
        raise SchemaError("a field name must not be empty")
    if string_too_long(name):
        raise SchemaError(f"field name {short_repr(name)} is over {MAX_STRING_BYTES} bytes")
    parts = name.split(".")
    if any(not p for p in parts):
        raise SchemaError(f"field name {name!r} has an empty part between dots")
    if len(parts) > MAX_DEPTH:
        raise SchemaError(f"field name {name!r} is nested {len(parts)} levels deep, more than {MAX_DEPTH}")


def _check_categories(label: str, type_: str, categories: tuple[object, ...]) -> None:
    """Categories: only on a category field, at least one, distinct, strings of at most 1 KiB, not ``__other__``."""
    if type_ != "category":
        if categories:
            raise SchemaError(f"{label}: categories are only allowed on a category field, not on a {type_} field")
        return
    if not categories:
        raise SchemaError(f"{label}: a category field needs at least one category")
    for value in categories:
        if not isinstance(value, str):
            raise SchemaError(f"{label}: categories must be strings, got {short_repr(value)}")
        if string_too_long(value):
            raise SchemaError(f"{label}: category {short_repr(value)} is over {MAX_STRING_BYTES} bytes")
        if value == OTHER:
            raise SchemaError(f"{label}: {OTHER!r} is reserved (the slot of unknown values)")
    if len(set(categories)) != len(categories):
        dup = next(c for i, c in enumerate(categories) if c in categories[:i])
        raise SchemaError(f"{label}: category {dup!r} is listed twice")


@dataclasses.dataclass(frozen=True)
class Schema:
    """The ordered fields of a stream's typed records."""

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        if isinstance(self.fields, Field) or not isinstance(self.fields, Iterable):
            raise SchemaError(f"a schema's fields must be a list of fields, got {short_repr(self.fields)}")
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.fields:
            raise SchemaError("a schema needs at least one field")
        for f in self.fields:
            if not isinstance(f, Field):
                raise SchemaError(f"a schema's fields must be Field objects, got {short_repr(f)}")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            dup = next(n for i, n in enumerate(names) if n in names[:i])
            raise SchemaError(f"field {dup!r} is listed twice")
        _check_prefixes(names)

    @classmethod
    def numeric(cls, d: int) -> Schema:
        """``d`` non-nullable float fields ``x0 … x{d-1}``: the schema of plain numeric vectors."""
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise SchemaError(f"a numeric schema needs d >= 1, got {short_repr(d)}")
        return cls(tuple(Field(f"x{i}", "float") for i in range(d)))

    @property
    def names(self) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in self.fields)

    @property
    def is_numeric(self) -> bool:
        """Whether every field is a non-nullable float (records are then plain vectors)."""
        return all(f.type == "float" and not f.nullable for f in self.fields)

    def field(self, name: str) -> Field:
        """The field called ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(f"the schema has no field {name!r}")

    def to_dict(self) -> dict[str, object]:
        """``{"fields": [...]}``, the JSON object of this schema."""
        return {"fields": [f.to_dict() for f in self.fields]}

    def to_json(self) -> str:
        """The schema as JSON text, one field per line, keys in a fixed order (stable, easy to edit)."""
        lines = [json.dumps(f.to_dict(), ensure_ascii=False) for f in self.fields]
        return '{\n  "fields": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"

    def fingerprint_bytes(self) -> bytes:
        """Canonical JSON bytes of this schema (compact, ASCII, sorted keys, field order kept), for hashing."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode("ascii")

    @classmethod
    def from_dict(cls, obj: object) -> Schema:
        """The schema of a parsed JSON object; refuses unknown keys and wrongly typed values, naming the field."""
        if not isinstance(obj, dict):
            raise SchemaError(f"a schema must be a JSON object with a 'fields' list, got {type(obj).__name__}")
        unknown = sorted(set(obj) - {"fields"})
        if unknown:
            raise SchemaError(f"schema: unknown key(s) {', '.join(map(repr, unknown))}; expected only 'fields'")
        if "fields" not in obj:
            raise SchemaError("schema: missing key 'fields'")
        if not isinstance(obj["fields"], list):
            raise SchemaError(f"schema: 'fields' must be a list, got {type(obj['fields']).__name__}")
        return cls(tuple(_field_from_dict(i, item) for i, item in enumerate(obj["fields"])))

    @classmethod
    def from_json(cls, text: str | bytes) -> Schema:
        """Parse the JSON form written by :meth:`to_json`; a malformed one raises a one-line :class:`SchemaError`."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"schema: not valid JSON ({exc})") from None
        return cls.from_dict(obj)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema file written by :meth:`save`; errors name the file."""
        p = Path(path)
        try:
            text = p.read_bytes()
        except FileNotFoundError:
            raise SchemaError(f"{p}: no such file") from None
        try:
            return cls.from_json(text)
        except SchemaError as exc:
            raise SchemaError(f"{p}: {exc}") from None

    def describe(self) -> list[str]:
        """One line per field (:meth:`Field.describe`)."""
        return [f.describe() for f in self.fields]


def _check_prefixes(names: list[str]) -> None:
    """No name may be the parent of another (``device`` and ``device.model``): one would be an object and a value."""
    known = set(names)
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts)):
            parent = ".".join(parts[:k])
            if parent in known:
                raise SchemaError(f"field {parent!r} is also the parent object of field {name!r}")


def _field_from_dict(index: int, item: object) -> Field:
    """One field's JSON object → :class:`Field`, with errors naming it (by name, else by position)."""
    label = f"schema field {index + 1}"
    if not isinstance(item, dict):
        raise SchemaError(f"{label}: must be a JSON object, got {type(item).__name__}")
    if isinstance(item.get("name"), str):
        label += f" ({item['name']!r})"
    unknown = sorted(set(item) - set(_FIELD_KEYS))
    if unknown:
        raise SchemaError(f"{label}: unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(_FIELD_KEYS)}")
    for key in ("name", "type"):
        if key not in item:
            raise SchemaError(f"{label}: missing key {key!r}")
        if not isinstance(item[key], str):
            raise SchemaError(f"{label}: {key!r} must be a string, got {short_repr(item[key])}")
    categories = item.get("categories", [])
    if not isinstance(categories, list):
        raise SchemaError(f"{label}: 'categories' must be a list of strings, got {short_repr(categories)}")
    nullable = item.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{label}: 'nullable' must be true or false, got {short_repr(nullable)}")
    try:
        return Field(item["name"], item["type"], tuple(categories), nullable)
    except SchemaError as exc:
        raise SchemaError(f"{label}: {exc}") from None


# -- text cells (CSV) -------------------------------------------------------------------------------------


def parse_bool_text(text: str) -> bool | None:
    """``true``/``false`` in any case (spaces around ignored) → bool; anything else → None."""
    word = text.strip().lower()
    return True if word == _TRUE_TEXT else False if word == _FALSE_TEXT else None


def parse_int_text(text: str) -> int | None:
    """An optionally signed run of decimal digits → int; anything else (``1.0``, ``1e3``, ``1_000``) → None."""
    stripped = text.strip()
    return int(stripped) if _INT_TEXT.fullmatch(stripped) else None


def parse_float_text(text: str) -> float | None:
    """A decimal number (``nan`` and ``inf`` included, rejected later as not finite) → float; else None."""
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


# -- inference ---------------------------------------------------------------------------------------------


def flatten_record(record: Mapping[str, object], max_depth: int = MAX_DEPTH) -> dict[str, object]:
    """Nested objects flattened to dotted names, ``{"a": {"b": 1}}`` → ``{"a.b": 1}``; over ``max_depth`` deep refused.

    An empty nested object contributes no column; lists and other values are kept as they are.
    """
    out: dict[str, object] = {}
    for name, value in _walk(record, "", 1, max_depth):
        out[name] = value
    return out


def _walk(obj: Mapping[str, object], prefix: str, depth: int, max_depth: int) -> Iterator[tuple[str, object]]:
    if depth > max_depth:
        raise DataError(f"record is nested more than {max_depth} levels deep at {prefix.rstrip('.')!r}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise DataError(f"record key {short_repr(key)} is not a string")
        if isinstance(value, Mapping):
            yield from _walk(value, f"{prefix}{key}.", depth + 1, max_depth)
        else:
            yield f"{prefix}{key}", value


def _value_kind(value: object, parse_strings: bool) -> str:
    """``bool``, ``int``, ``float`` or ``str`` of one non-null value (text cells parsed if ``parse_strings``)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        if parse_strings:
            if parse_bool_text(value) is not None:
                return "bool"
            if parse_int_text(value) is not None:
                return "int"
            if parse_float_text(value) is not None:
                return "float"
        return "str"
    raise DataError(f"a {type(value).__name__} is not a value a schema can describe "
                    "(numbers, booleans, strings and nulls only)")


def _infer_field(name: str, values: list[object], n_records: int, max_categories: int, parse_strings: bool) -> Field:
    """The field of one column: its non-null values (``values``) out of ``n_records`` records."""
    if not values:
        raise DataError(f"column {name!r} is null or missing in every pilot record: its type cannot be inferred; "
                        "drop it or write its type in the schema")
    nullable = len(values) < n_records
    try:
        kinds = {_value_kind(v, parse_strings) for v in values}
    except DataError as exc:
        raise DataError(f"column {name!r}: {exc}") from None
    if kinds == {"bool"}:
        return Field(name, "bool", nullable=nullable)
    if kinds == {"int"}:
        return Field(name, "int", nullable=nullable)
    if kinds <= {"int", "float"}:
        return Field(name, "float", nullable=nullable)
    if not parse_strings and kinds != {"str"}:
        raise DataError(f"column {name!r} mixes {' and '.join(sorted(kinds))} values; a column holds one type")
    return _infer_category(name, values, max_categories, nullable)


def _infer_category(name: str, values: list[object], max_categories: int, nullable: bool) -> Field:
    """A string column: a category if it has at most ``max_categories`` distinct short values."""
    distinct = {str(v) for v in values}
    if any(string_too_long(v) for v in distinct):
        raise DataError(f"column {name!r} holds strings over {MAX_STRING_BYTES} bytes: it looks like free text and "
                        "cannot be sketched; drop it or edit the schema")
    if len(distinct) > max_categories:
        raise DataError(f"column {name!r} has {len(distinct)} distinct strings (more than {max_categories}): it looks "
                        "like free text or an identifier and cannot be sketched; drop it, edit the schema, or raise "
                        "--max-categories")
    return Field(name, "category", tuple(sorted(distinct)), nullable)


def infer_schema(records: Iterable[Mapping[str, object]], max_categories: int = DEFAULT_MAX_CATEGORIES,
                 parse_strings: bool = False) -> Schema:
    """Infer a schema from pilot records (nested objects flattened to dotted names), fields in order of appearance.

    Per column: all booleans → bool; all integers → int; numbers → float; strings → category (sorted distinct
    values) when at most ``max_categories`` distinct, else refused as free text. A null or missing value in any
    record makes the field nullable; a column null everywhere is refused. ``parse_strings`` says the values are
    text cells (CSV): ``true``/``false`` (any case) are booleans, digit runs integers, decimals numbers, and a column
    of other text is a category of the raw strings.
    """
    if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 1:
        raise DataError(f"max_categories must be an integer >= 1, got {short_repr(max_categories)}")
    columns: dict[str, list[object]] = {}
    n_records = 0
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(f"pilot record {i + 1} is a {type(record).__name__}, not an object")
        try:
            flat = flatten_record(record)
        except DataError as exc:
            raise DataError(f"pilot record {i + 1}: {exc}") from None
        for name, value in flat.items():
            column = columns.setdefault(name, [])
            if value is not None:
                column.append(value)
        n_records += 1
    if n_records == 0:
        raise DataError("no pilot records to infer a schema from")
    fields = [_infer_field(name, values, n_records, max_categories, parse_strings) for name, values in columns.items()]
    return Schema(tuple(fields))

