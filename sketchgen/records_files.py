"""Reading typed records from files: CSV with a header row and JSON Lines, and inferring their schema.

``read_records`` gives a list of dicts: a CSV row's values are its text cells (an empty cell is None, see
:func:`sketch_store.typed_encoding.parse_text_record` for the conversion to typed values), a JSON Lines file's
are its objects. ``infer_schema_from_file`` picks the reader by suffix (``.csv``, ``.jsonl``; a ``.npy`` array
has the numeric schema ``x0 … x{d-1}``). See docs/design.md §1, "Typed records".

Example
-------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "gems.csv"
>>> _ = path.write_text("carat,cut,has_cert\\n0.3,Good,true\\n1.1,Fair,\\n")
>>> read_records(path)
[{'carat': '0.3', 'cut': 'Good', 'has_cert': 'true'}, {'carat': '1.1', 'cut': 'Fair', 'has_cert': None}]
>>> [f.describe() for f in infer_schema_from_file(path).fields]
['carat: float', 'cut: category (2 values: Fair, Good)', 'has_cert: bool, nullable']
>>> read_typed_records(path, infer_schema_from_file(path))[1]
{'carat': 1.1, 'cut': 'Fair', 'has_cert': None}
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from sketch_store.errors import DataError
from sketch_store.schema import DEFAULT_MAX_CATEGORIES, Schema, infer_schema, parse_float_text
from sketch_store.typed_encoding import RecordError, loads_record, parse_text_record

#: Suffixes of the record files this module reads.
RECORD_SUFFIXES = (".csv", ".jsonl")


def _open_text(path: Path):
    """Open ``path`` as UTF-8 text (a missing file is a :class:`DataError`)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return path.open("r", encoding="utf-8", newline="")


def _is_numeric_header(header: list[str]) -> bool:
    """Whether a CSV's first row is all numbers: data, not a header."""
    return bool(header) and all(parse_float_text(cell) is not None for cell in header)


def _csv_header(reader, path: Path) -> list[str]:
    """The header row: non-empty, distinct names, not a row of numbers."""
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}: empty CSV, expected a header row")
    if _is_numeric_header(header):
        raise DataError(f"{path}: the first row holds numbers, not column names; a CSV of records needs a header row")
    if any(not name.strip() for name in header):
        raise DataError(f"{path}: the header row has an empty column name")
    if len(set(header)) != len(header):
        dup = next(n for i, n in enumerate(header) if n in header[:i])
        raise DataError(f"{path}: column {dup!r} appears twice in the header row")
    return header


def read_csv_records(path: str | Path, limit: int | None = None) -> list[dict[str, object]]:
    """The rows of a CSV with a header row as dicts of text cells (empty cell → None); at most ``limit`` rows.

    A row with a different number of cells than the header is refused with its line number; blank lines are
    skipped.
    """
    p = Path(path)
    records: list[dict[str, object]] = []
    try:
        with _open_text(p) as fh:
            reader = csv.reader(fh)
            header = _csv_header(reader, p)
            for row in reader:
                if limit is not None and len(records) >= limit:
                    break
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{p}: line {reader.line_num}: {len(row)} cells, the header has {len(header)}")
                records.append({name: (cell if cell != "" else None) for name, cell in zip(header, row, strict=True)})
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{p}: not a valid CSV ({exc})") from None
    return records


def read_jsonl_records(path: str | Path, limit: int | None = None) -> list[dict[str, object]]:
    """The objects of a JSON Lines file, one a line (blank lines skipped); at most ``limit`` of them.

    A line that is not valid JSON, not an object, or an object that repeats a key, is refused with its line
    number.
    """
    p = Path(path)
    records: list[dict[str, object]] = []
    try:
        with _open_text(p) as fh:
            for number, line in enumerate(fh, start=1):
                if limit is not None and len(records) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    obj = loads_record(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{p}: line {number}: not valid JSON ({exc.msg})") from None
                except RecordError as exc:  # a repeated key: which value is meant is ambiguous
                    raise DataError(f"{p}: line {number}: {exc}") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{p}: line {number}: expected a JSON object, got {type(obj).__name__}")
                records.append(obj)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise DataError(f"{p}: a line is nested too deeply to parse") from None
    return records


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (*RECORD_SUFFIXES, ".npy"):
        raise DataError(f"{path}: unsupported record format {suffix or '(none)'}; use .csv, .jsonl or .npy")
    return suffix


def read_records(path: str | Path, limit: int | None = None) -> list[dict[str, object]]:
    """The records of a ``.csv`` (text cells) or ``.jsonl`` (objects) file, by suffix; at most ``limit``."""
    p = Path(path)
    suffix = _suffix(p)
    if suffix == ".csv":
        return read_csv_records(p, limit)
    if suffix == ".jsonl":
        return read_jsonl_records(p, limit)
    raise DataError(f"{p}: a .npy file holds vectors, not records; its schema is numeric (infer_schema_from_file)")


def _npy_dim(path: Path) -> int:
    """The number of columns of an ``.npy`` array (1 for a 1-D one), read without loading the data."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a valid .npy file ({exc})") from None
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise DataError(f"{path}: expected an N×d array of numbers, got shape {arr.shape}")
    return 1 if arr.ndim == 1 else int(arr.shape[1])


def infer_schema_from_file(path: str | Path, max_categories: int = DEFAULT_MAX_CATEGORIES,
                           limit: int | None = None) -> Schema:
    """The schema of a data file: inferred from a ``.csv`` (text cells parsed) or ``.jsonl``; numeric for ``.npy``.

    ``limit`` bounds the number of records read (the first ones).
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix == ".npy":
        return Schema.numeric(_npy_dim(p))
    records = read_records(p, limit)
    try:
        return infer_schema(records, max_categories=max_categories, parse_strings=suffix == ".csv")
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None


def read_typed_records(path: str | Path, schema: Schema, limit: int | None = None) -> list[dict[str, object]]:
    """The records of a ``.csv`` or ``.jsonl`` file with a CSV's text cells converted to the schema's types."""
    p = Path(path)
    records = read_records(p, limit)
    if p.suffix.lower() != ".csv":
        return records
    typed = []
    for i, record in enumerate(records):
        try:
            typed.append(parse_text_record(schema, record))
        except RecordError as exc:
            raise exc.prefixed(f"{p}: record {i + 1}") from None
    return typed
