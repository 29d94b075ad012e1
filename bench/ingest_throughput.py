"""Ingest throughput: the full worker (Kafka → features → Redis) against raw kafka-python consumption.

For two kinds of records on a 4-partition topic of the embedded Tansu broker:

* ``json``: one 2-D vector per record, JSON (``[x, y]``);
* ``f32``: 1000 rows per record, little-endian float32 (``content-type: application/x-float32``);

it measures, in the same run and on the same topic:

1. **raw**: a kafka-python consumer (same fetch settings as the worker) reading every record,
   touching each value, nothing else — the client's ceiling;
2. **worker**: :class:`ingest.worker.IngestWorker` folding the topic into a stream in Redis,
   from its first fetched record until Redis holds every row (flushes included);
3. the pieces on their own: decoding the values, and the feature kernel (``FeatureMap``)
   on the same rows.

Rates exclude the consumer-group join (a few seconds on Tansu, the same for both).

Run: ``.venv/bin/python bench/ingest_throughput.py [--json-records 200000] [--f32-records 1000] [--m 1000]``
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import markdown_table, write_report
from ingest.decode import F32_CONTENT_TYPE, decode_json_vectors, decode_value
from ingest.worker import IngestConfig, IngestWorker
from sketch_store.features import FeatureMap
from sketch_store.redis_store import SketchStore, connect
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import LocalStack
from sketchgen.produce import ensure_topic

PARTITIONS = 4


def fill_topic(bootstrap: str, topic: str, values: list[bytes], headers: list[tuple[str, bytes]]) -> None:
    ensure_topic(bootstrap, topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1)
    for i, v in enumerate(values):
        producer.send(topic, v, headers=headers, partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def raw_consume(bootstrap: str, topic: str, n_records: int) -> float:
    """Seconds from the first fetched record to the last, reading every value."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"raw-{topic}", auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=100, max_poll_records=10_000,
        max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20, session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    seen, nbytes, start = 0, 0, None
    while seen < n_records:
        for records in consumer.poll(timeout_ms=100, max_records=10_000).values():
            if start is None:
                start = time.perf_counter()
            for r in records:
                nbytes += len(r.value)
            seen += len(records)
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def worker_consume(store: SketchStore, bootstrap: str, stream: str, topic: str, n_rows: int) -> float:
    """Seconds from the worker's first fetched record until Redis holds all ``n_rows``."""
    worker = IngestWorker(IngestConfig(stream=stream, topic=topic, kafka=bootstrap), store)
    first: list[float] = []
    decode = worker._decode

    def timed(tp, records):  # note the first fetch, then do the real work
        if records and not first:
            first.append(time.perf_counter())
        return decode(tp, records)

    worker._decode = timed  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while store.total_count(stream) < n_rows:
        time.sleep(0.02)
    done = time.perf_counter()
    worker.stop_event.set()
    thread.join(30)
    return done - first[0]


def best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-records", type=int, default=200_000)
    parser.add_argument("--f32-records", type=int, default=1000)
    parser.add_argument("--rows-per-record", type=int, default=1000)
    parser.add_argument("--m", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = []
    x_json = rng.normal(size=(args.json_records, 2))
    cases.append(("json, 1 row/record", [json.dumps(r.tolist()).encode() for r in x_json], [], 1, x_json))
    x_f32 = rng.normal(size=(args.f32_records * args.rows_per_record, 2)).astype("<f4")
    f32_values = [x_f32[i : i + args.rows_per_record].tobytes() for i in range(0, len(x_f32), args.rows_per_record)]
    cases.append((f"f32, {args.rows_per_record} rows/record", f32_values, [("content-type", F32_CONTENT_TYPE.encode())],
                  args.rows_per_record, x_f32.astype(np.float64)))
    rows_out = []
    with LocalStack() as stack:
        store = SketchStore(connect(stack.redis_url))
        for i, (label, values, headers, k, x) in enumerate(cases):
            topic, stream = f"bench{i}", f"bench{i}"
            spec = SketchSpec.create(d=2, m=args.m, law="adapted-radius", sigma=0.5, seed=0, name=stream)
            store.create_stream(spec, replace=True)
            fill_topic(stack.bootstrap, topic, values, headers)
            n_rec, n_rows = len(values), x.shape[0]
            raw_s = raw_consume(stack.bootstrap, topic, n_rec)
            worker_s = worker_consume(store, stack.bootstrap, stream, topic, n_rows)
            fmap = FeatureMap(spec)
            kernel_s = best_of(lambda fm=fmap, xx=x: fm.feature_sum(xx, validate=False))
            if k == 1:
                decode_s = best_of(lambda v=values: [decode_json_vectors(v[j : j + 10_000], 2)
                                                     for j in range(0, len(v), 10_000)])
            else:
                decode_s = best_of(lambda v=values, h=headers: [decode_value(b, h, 2) for b in v])
            rows_out.append([
                label, f"{n_rec:,}", f"{n_rows:,}", f"{n_rec / raw_s:,.0f}", f"{n_rec / worker_s:,.0f}",
                f"{n_rows / worker_s:,.0f}", f"{raw_s / worker_s:.2f}", f"{n_rows / kernel_s:,.0f}",
                f"{(n_rows / worker_s) / (n_rows / kernel_s):.2f}", f"{n_rows / decode_s:,.0f}",
            ])
        store.client.close()
    body = markdown_table(
        ["records", "N records", "N rows", "raw kafka-python (records/s)", "worker (records/s)", "worker (rows/s)",
         "worker / raw", "feature kernel alone (rows/s)", "worker / kernel (rows)", "decode alone (rows/s)"],
        rows_out,
    ) + f"\n\nm = {args.m}, d = 2, {PARTITIONS} partitions, one worker, flush every 500 ms."
    write_report("ingest_throughput", "Ingest throughput", body, "python bench/ingest_throughput.py")


if __name__ == "__main__":
    main()
