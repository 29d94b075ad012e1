"""``sketchgen schema``: infer the schema of a data file's typed records and write it as JSON.

The schema (docs/design.md §1, "Typed records") lists each field's name, type (float, int, bool or
category with its values) and whether it may be null; it is a plain JSON file meant to be read and
edited (drop a column, add a category) before a stream is made from it.

Example
-------
>>> import argparse
>>> sub = argparse.ArgumentParser().add_subparsers()
>>> add_schema_command(sub)
>>> sorted(sub.choices)
['schema']
"""

from __future__ import annotations

import argparse
import logging

from sketch_store.errors import DataError
from sketch_store.schema import DEFAULT_MAX_CATEGORIES
from sketchgen.records_files import infer_schema_from_file
from sketchgen.settings import add_connection_args

log = logging.getLogger("sketchgen")


def add_schema_command(sub: argparse._SubParsersAction) -> None:
    """Register ``schema`` on an argparse sub-parser collection."""
    p = sub.add_parser("schema", help="infer the schema of a data file's records (.csv, .jsonl, .npy) into JSON")
    p.add_argument("data", help="records: .csv with a header row, .jsonl (one object a line), or an N×d .npy")
    p.add_argument("--out", required=True, help="schema file to write (.json)")
    p.add_argument("--max-categories", type=int, default=DEFAULT_MAX_CATEGORIES, metavar="K",
                   help=f"most distinct strings a column may have to be a category (default {DEFAULT_MAX_CATEGORIES})")
    p.add_argument("--limit", type=int, metavar="N", help="read only the first N records (default: all)")
    add_connection_args(p, kafka=False, redis=False)
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    """Infer, log one line per field, write ``--out`` (overwritten if it exists)."""
    if args.max_categories < 1:
        raise DataError(f"--max-categories must be >= 1, got {args.max_categories}")
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit must be >= 1, got {args.limit}")
    schema = infer_schema_from_file(args.data, max_categories=args.max_categories, limit=args.limit)
    for line in schema.describe():
        log.info("  %s", line)
    schema.save(args.out)
    log.info("schema of %d field(s) from %s -> %s", len(schema.fields), args.data, args.out)
    return 0
