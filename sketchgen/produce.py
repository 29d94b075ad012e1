"""``sketchgen produce``: feed a Kafka topic with a dataset or a file, at a given rate.

Vectors (a dataset, an ``.npy`` or a numeric ``.csv``) go out as JSON arrays or float32 rows; typed records (a
``.jsonl`` file, or a ``.csv`` with a non-numeric header) go out as one JSON object per record, a CSV's cells
typed by the schema (``--schema``, else inferred from the file): ints as JSON ints, bools as booleans, an empty
cell as null (docs/ingest.md, "Typed records").

Example
-------
>>> from sketch_store.schema import Field, Schema
>>> schema = Schema((Field("n", "int"), Field("ok", "bool", nullable=True), Field("cut", "category", ("A",))))
>>> record_value({"n": "3", "ok": None, "cut": "A"}, schema)
b'{"n": 3, "ok": null, "cut": "A"}'
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from kafka.errors import KafkaError
from tqdm import tqdm

from ingest.decode import F32_CONTENT_TYPE
from ingest.kafka_connect import PRODUCE_SETTINGS, ensure_topic, record_producer
from sketch_store.errors import DataError, SketchgenError
from sketch_store.schema import Schema
from sketch_store.typed_encoding import RecordError, parse_text_record
from sketchgen.datafiles import load_data
from sketchgen.datasets import DATASETS, make_dataset
from sketchgen.records_files import infer_schema_from_file, read_records
from sketchgen.settings import Connections, add_connection_args
from sketchgen.typed_files import reads_records

log = logging.getLogger("sketchgen")
CHUNK_ROWS = 10_000


def add_produce_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("produce", help="feed a Kafka topic with a dataset or a file (creates the topic if missing)")
    p.add_argument("topic", help="Kafka topic")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS, help="one of the paper's synthetic datasets")
    source.add_argument("--file", help="rows from a .npy or numeric .csv file, or typed records from a .jsonl or a "
                        ".csv with a header row")
    p.add_argument("--schema", metavar="FILE", help="schema that types a records CSV's cells (default: inferred)")
    p.add_argument("--count", type=int, help="rows to send (default: 100000 for a dataset, the whole file)")
    p.add_argument("--rate", type=float, help="rows per second (default: as fast as possible)")
    p.add_argument("--format", choices=("json", "f32"), default="json", help="record encoding (default json)")
    p.add_argument("--batch-rows", type=int, default=1, help="rows per record (default 1)")
    p.add_argument("--partitions", type=int, default=4, help="partitions if the topic is created (default 4)")
    p.add_argument("--seed", type=int, help="seed of the dataset draw (default: random)")
    add_connection_args(p, redis=False)
    p.set_defaults(func=cmd_produce)


def encode_records(
    rows: np.ndarray, fmt: str, batch_rows: int
) -> Iterator[tuple[bytes, list[tuple[str, bytes]], int]]:
    """``(value, headers, rows in it)`` for records carrying up to ``batch_rows`` rows each."""
    for start in range(0, rows.shape[0], batch_rows):
        chunk = rows[start : start + batch_rows]
        if fmt == "f32":
            value = np.ascontiguousarray(chunk, dtype="<f4").tobytes()
            yield value, [("content-type", F32_CONTENT_TYPE.encode())], chunk.shape[0]
        elif batch_rows == 1:
            yield json.dumps(chunk[0].tolist()).encode(), [], 1
        else:
            yield json.dumps(chunk.tolist()).encode(), [], chunk.shape[0]


Message = tuple[bytes, list[tuple[str, bytes]], int]


def record_value(record: Mapping[str, object], schema: Schema | None) -> bytes:
    """One record as a JSON object: CSV text cells typed by ``schema`` first (None: a JSON Lines object as is).

    A NaN or infinite number is refused (``DataError``): JSON has none, and the stream would refuse it.
    """
    typed = parse_text_record(schema, record) if schema is not None else record
    try:
        return json.dumps(typed, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:
        raise DataError("a record holds NaN or Inf, which JSON cannot carry") from None


def record_source(args: argparse.Namespace) -> tuple[Iterator[Message], int]:
    """The messages of a file of typed records (one record each), and their total (``--count`` caps it)."""
    path = Path(args.file)
    if args.format != "json" or args.batch_rows != 1:
        raise DataError(f"{path}: typed records go out one JSON object per record: --format json, --batch-rows 1")
    records = read_records(path)
    if not records:
        raise DataError(f"{path}: no records")
    total = len(records) if args.count is None else min(args.count, len(records))
    schema = None
    if path.suffix.lower() == ".csv":  # free-text columns are sent as strings too: no category limit here
        schema = Schema.load(args.schema) if args.schema else infer_schema_from_file(path, max_categories=sys.maxsize)

    def gen() -> Iterator[Message]:
        for i, record in enumerate(records[:total]):
            try:
                yield record_value(record, schema), [], 1
            except (DataError, RecordError) as exc:
                raise DataError(f"{path}: record {i + 1}: {exc}") from None

    return gen(), total


def message_source(args: argparse.Namespace) -> tuple[Iterator[Message], int]:
    """The messages to send, and the rows they carry in all: typed records, or vectors (:func:`row_source`)."""
    if args.file and reads_records(args.file, args.schema):
        return record_source(args)
    if args.schema:
        raise DataError("--schema types the cells of a file of records (.csv with a header, .jsonl)")
    chunks, total = row_source(args)
    messages = (msg for rows in chunks for msg in encode_records(rows, args.format, args.batch_rows))
    return messages, total


def row_source(args: argparse.Namespace) -> tuple[Iterator[np.ndarray], int]:
    """Chunks of rows to send, and their total."""
    if args.file:
        data = load_data(args.file)
        total = data.shape[0] if args.count is None else min(args.count, data.shape[0])
        return (data[i : min(i + CHUNK_ROWS, total)] for i in range(0, total, CHUNK_ROWS)), total
    total = 100_000 if args.count is None else args.count
    rng = np.random.default_rng(args.seed)

    def gen() -> Iterator[np.ndarray]:
        left = total
        while left > 0:
            k = min(CHUNK_ROWS, left)
            yield make_dataset(args.dataset, k, seed=int(rng.integers(2**63)))
            left -= k

    return gen(), total


def cmd_produce(args: argparse.Namespace) -> int:
    if args.batch_rows < 1 or args.partitions < 1 or (args.count is not None and args.count < 0):
        raise DataError("--batch-rows and --partitions must be >= 1 and --count >= 0")
    if args.rate is not None and not args.rate > 0:
        raise DataError(f"--rate must be > 0, got {args.rate}")
    conn = Connections.from_args(args)
    messages, total = message_source(args)
    ensure_topic(conn.kafka, args.topic, args.partitions, conn.kafka_security)
    producer = record_producer(conn.kafka, conn.kafka_security, PRODUCE_SETTINGS)
    sent = 0
    start = time.monotonic()
    try:
        with tqdm(total=total, unit="rows", desc=f"producing to {args.topic}", disable=None) as bar:
            for value, headers, n in messages:
                producer.send(args.topic, value=value, headers=headers)
                sent += n
                bar.update(n)
                if args.rate:
                    ahead = sent / args.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        producer.flush(timeout=60)
    except KafkaError as exc:
        raise SketchgenError(f"producing to {args.topic} failed: {exc}") from None
    finally:
        producer.close(timeout=10)
    elapsed = time.monotonic() - start
    print(json.dumps({"topic": args.topic, "rows": sent, "seconds": round(elapsed, 3)}))
    return 0
