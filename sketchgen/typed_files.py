"""Typed records on the offline path: a data file → a typed spec and its encoded rows; samples → record files.

``sketchgen sketch`` reads a CSV with a header row or a JSON Lines file against a schema (given with
``--schema``, else inferred), refuses the whole file if any record does not fit it (naming how many and the
first one's line and reason: an offline sketch never drops records silently), and sketches the encoded vectors
``u = E(r)`` of :class:`sketch_store.typed_encoding.Encoder` under a typed spec (docs/design.md §1, "Typed
records, offline"). ``sketchgen sample`` decodes a typed model's rows to records and writes them as ``.csv``
(header = field names, null = empty cell, ints as ints, bools ``true``/``false``) or ``.jsonl`` (nested objects
for dotted names). A plain numeric CSV (with or without a header) keeps the numeric path.

Example
-------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "gems.csv").write_text("carat,cut,cert\\n0.3,Good,true\\n1.1,Fair,\\n0.7,Good,false\\n")
>>> is_numeric_csv(folder / "gems.csv")
False
>>> spec, rows = typed_sketch_input(folder / "gems.csv", m=16)
>>> rows.shape, spec.encoder.column_names
((3, 5), ('carat', 'cut=Fair', 'cut=Good', 'cert', 'cert=null'))
>>> write_records(folder / "out.csv", spec.encoder, rows)
>>> print((folder / "out.csv").read_text().strip())
carat,cut,cert
0.3,Good,true
1.1,Fair,
0.7,Good,false
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sketch_store.errors import DataError
from sketch_store.pilot import DEFAULT_KERNEL, DEFAULT_LAW, spec_from_pilot, typed_spec_from_pilot
from sketch_store.schema import Schema, parse_float_text
from sketch_store.spec import SketchSpec
from sketch_store.typed_encoding import Encoder, EncodingStats, RecordError, UnknownPolicy, lookup, parse_text_record
from sketchgen.records_files import RECORD_SUFFIXES, infer_schema_from_file, read_records

log = logging.getLogger("sketchgen")

#: Rows of a CSV with a header read to tell a numeric table from typed records.
NUMERIC_PROBE_ROWS = 10_000
#: Significant digits of a float written to a record file (as ``sketchgen sample``'s numeric CSV).
FLOAT_DIGITS = 8


# -- reading --------------------------------------------------------------------------------------------


def is_numeric_csv(path: str | Path) -> bool:
    """Whether a ``.csv`` is a plain table of numbers (header row optional): today's numeric ``sketch`` input.

    No header (a first row of numbers), or a header whose columns hold numbers in each of the first
    :data:`NUMERIC_PROBE_ROWS` rows (a later bad row is then refused by the numeric reader, as before).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    with p.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        first = next(csv.reader(fh), [])
    if first and all(parse_float_text(cell) is not None for cell in first):
        return True
    schema = infer_schema_from_file(p, limit=NUMERIC_PROBE_ROWS)
    return all(f.type in ("float", "int") and not f.nullable for f in schema.fields)


def reads_records(path: str | Path, schema_file: str | Path | None) -> bool:
    """Whether ``sketch`` takes the typed path: a ``.jsonl``, a ``.csv`` given ``--schema`` or not all numbers.

    An ``.npy`` (or any other suffix) keeps the numeric path; with ``--schema`` that schema must then be ``d``
    plain float fields, the array's columns.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in RECORD_SUFFIXES:
        if schema_file is not None and suffix == ".npy":
            check_vector_schema(p, Schema.load(schema_file))
        return False
    return suffix == ".jsonl" or schema_file is not None or not is_numeric_csv(p)


def check_vector_schema(path: Path, schema: Schema) -> None:
    """Refuse a schema for an ``.npy`` array unless it is as many plain float fields as the array has columns."""
    d = len(infer_schema_from_file(path).fields)
    if not schema.is_numeric or len(schema.fields) != d:
        raise DataError(f"{path}: a .npy file holds {d}-dimensional vectors; its schema can only be {d} "
                        "non-nullable float fields (typed records are read from .csv or .jsonl)")


def probe_encoder(schema: Schema) -> Encoder:
    """An encoder with neutral stats (mean 0, std 1): validates records and yields numeric fields' raw values."""
    return Encoder(schema, EncodingStats({f.name: (0.0, 1.0) for f in schema.fields if f.type in ("float", "int")}))


def record_line(path: Path, index: int) -> int:
    """The line of ``path`` where record ``index`` (0-based, as :func:`read_records` counts them) ends."""
    with path.open("r", encoding="utf-8", newline="") as fh:
        if path.suffix.lower() == ".csv":
            reader = csv.reader(fh)
            next(reader, None)
            rows = (reader.line_num for row in reader if row)
        else:
            rows = (number for number, line in enumerate(fh, start=1) if line.strip())
        for count, line in enumerate(rows):
            if count == index:
                return line
    raise DataError(f"{path}: has no record {index + 1}")


def check_columns(path: Path, schema: Schema, records: list[dict[str, object]]) -> None:
    """Refuse a schema with fields that no record has (absent, or null everywhere): it does not fit the file."""
    absent = [f.name for f in schema.fields if all(lookup(r, f.name) is None for r in records)]
    if not absent:
        return
    columns = f" (its columns: {', '.join(records[0])})" if path.suffix.lower() == ".csv" else ""
    raise DataError(f"{path}: schema field(s) {', '.join(map(repr, absent))} are absent or null in every record"
                    f"{columns}: the schema does not fit the data")


def read_checked_records(path: Path, schema: Schema) -> list[dict[str, object]]:
    """Every record of ``path`` as typed values (CSV cells parsed), each checked against ``schema``.

    If any record is refused, raises one :class:`DataError` stating how many were and the first one's line
    and reason; nothing is dropped silently.
    """
    records = read_records(path)
    if not records:
        raise DataError(f"{path}: no records")
    check_columns(path, schema, records)
    probe, text = probe_encoder(schema), path.suffix.lower() == ".csv"
    typed: list[dict[str, object]] = []
    first: tuple[int, RecordError] | None = None
    for i, record in enumerate(records):
        try:
            value = parse_text_record(schema, record) if text else record
            probe.read_record(value)
        except RecordError as exc:
            first = first or (i, exc)
            continue
        typed.append(value)
    if first is not None:
        index, exc = first
        raise DataError(f"{path}: {len(records) - len(typed)} of {len(records)} records do not fit the schema, "
                        f"nothing sketched; first at line {record_line(path, index)} ({exc.reason}): {exc}")
    return typed


def resolve_schema(path: Path, schema_file: str | Path | None) -> Schema:
    """The schema of ``--schema``, else the one inferred from the file (logged, one line per field)."""
    if schema_file is not None:
        return Schema.load(schema_file)
    schema = infer_schema_from_file(path)
    log.info("inferred the schema of %s (write it with `sketchgen schema`, edit, pass --schema):", path)
    for line in schema.describe():
        log.info("  %s", line)
    return schema


def typed_sketch_input(
    path: str | Path,
    schema_file: str | Path | None = None,
    *,
    m: int | None = None,
    law: str = DEFAULT_LAW,
    sigma: float | None = None,
    seed: int | None = 0,
    kernel: str = DEFAULT_KERNEL,
    standardize: bool = True,
    unknown: UnknownPolicy = "reject",
    name: str | None = None,
    keep_ranges: bool = False,
) -> tuple[SketchSpec, np.ndarray]:
    """The spec and the rows to sketch of a ``.csv``/``.jsonl`` file of records: ``sketch`` and ``create``'s pilot.

    A typed schema gives a typed spec from all records (:func:`typed_spec_from_pilot`, with the ``unknown``
    category policy) and the encoded rows; a schema of plain floats gives today's numeric spec over the records'
    vectors in schema order. The spec is named ``name``, else after the file; ``keep_ranges`` clips decoded
    numbers to the records' range (right when the file is all the data, as for ``sketch``).
    """
    p = Path(path)
    schema = resolve_schema(p, schema_file)
    if p.suffix.lower() not in RECORD_SUFFIXES:
        raise DataError(f"{p}: typed records are read from {' or '.join(RECORD_SUFFIXES)} files, not {p.suffix!r}")
    records = read_checked_records(p, schema)
    if not (standardize or schema.is_numeric):
        raise DataError("--no-standardize applies to numeric data only: the encoding of typed records "
                        "standardises their numbers itself")
    try:
        if schema.is_numeric:
            rows = probe_encoder(schema).encode_many(records)
            spec = spec_from_pilot(rows, m=m, law=law, sigma=sigma, seed=seed, standardize=standardize,
                                   name=name or p.stem, kernel=kernel)
            return spec, rows
        spec = typed_spec_from_pilot(records, schema, m=m, law=law, seed=seed, name=name or p.stem, kernel=kernel,
                                     sigma=sigma, unknown=unknown, keep_ranges=keep_ranges)
    except DataError as exc:  # e.g. too few records to design the kernel from
        raise DataError(f"{p}: {exc}") from None
    return spec, spec.encoder.encode_many(records)  # type: ignore[union-attr]


# -- writing --------------------------------------------------------------------------------------------


def _rounded(value: object) -> object:
    """A float cut to :data:`FLOAT_DIGITS` significant digits; nested objects walked; other values kept."""
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, Mapping):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def csv_cell(value: object) -> str:
    """A value as a CSV cell: null → empty, bool → ``true``/``false``, int as an int, float to 8 digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{FLOAT_DIGITS}g}"
    return str(value)


def records_csv(encoder: Encoder, rows: np.ndarray) -> str:
    """The decoded rows as CSV text, one column per field (dotted names as they are)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(encoder.schema.names)
    for record in encoder.decode_many(rows, nested=False):
        writer.writerow([csv_cell(record[name]) for name in encoder.schema.names])
    return buf.getvalue()


def records_jsonl(encoder: Encoder, rows: np.ndarray) -> str:
    """The decoded rows as JSON Lines, one object a line, nested objects for dotted names."""
    return "".join(json.dumps(_rounded(r), ensure_ascii=False) + "\n" for r in encoder.decode_many(rows))


def write_records(path: str | Path, encoder: Encoder, rows: np.ndarray) -> None:
    """Decode generated rows and write them to ``.csv`` or ``.jsonl`` (``"-"``: CSV on standard output)."""
    if str(path) == "-":
        sys.stdout.write(records_csv(encoder, rows))
        sys.stdout.flush()
        return
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        text = records_csv(encoder, rows)
    elif suffix == ".jsonl":
        text = records_jsonl(encoder, rows)
    else:
        raise DataError(f"{p}: a model of typed records writes records: use .csv or .jsonl (or - for CSV on "
                        f"standard output), not {suffix or '(none)'}")
    p.write_text(text, encoding="utf-8")
