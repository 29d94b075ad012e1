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

Rates are steady-state: measured between 20 % and 80 % of the rows, so start-up (the first
fetch, ownership) and the last flush interval count for neither. The worker's progress moves in
whole fetched batches (up to ~700 float32 records at once), so the float32 topic holds 10 000
records: with 1000, one batch crossed both marks and the rate came out 0.

Run: ``.venv/bin/python bench/ingest_throughput.py [--json-records 200000] [--f32-records 10000] [--m 1000]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import LocalStack
from sketchgen.produce import ensure_topic

PARTITIONS = 4
CPU_COLUMNS = ("client", "fold process", "broker", "redis")


def fill_topic(bootstrap: str, topic: str, values: list[bytes], headers: list[tuple[str, bytes]]) -> None:
    ensure_topic(bootstrap, topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1)
    for i, v in enumerate(values):
        producer.send(topic, v, headers=headers, partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def raw_consume(bootstrap: str, topic: str, n_records: int, cpu: CpuMeter) -> float:
    """Records/s of a plain consumer reading every value, between 20 % and 80 % of the topic."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"raw-{topic}", auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=100, max_poll_records=10_000,
        max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20, session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    marks: dict[float, tuple[float, int]] = {}
    seen, nbytes = 0, 0
    while seen < n_records:
        for records in consumer.poll(timeout_ms=100, max_records=10_000).values():
            for r in records:
                nbytes += len(r.value)
            seen += len(records)
        for q in (0.2, 0.8):
            if q not in marks and seen >= q * n_records:
                marks[q] = (time.perf_counter(), seen)
                cpu.start() if q == 0.2 else cpu.usage.update(cpu.stop())
    consumer.close()
    return rate_between(marks)


def rate_between(marks: dict[float, tuple[float, int]]) -> float:
    (t0, n0), (t1, n1) = marks[0.2], marks[0.8]
    return (n1 - n0) / (t1 - t0)


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far; this process when ``pid`` is None."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.usage: dict[str, float] = {}

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        return {name: (cpu_seconds(pid) - self.c0[name]) / elapsed for name, pid in self.pids.items()}


def worker_consume(
    store: SketchStore, bootstrap: str, stream: str, topic: str, n_rows: int, cpu: CpuMeter
) -> float:
    """Rows/s folded by the worker between 20 % and 80 % of the rows (flushed plus buffered)."""
    worker = IngestWorker(IngestConfig(stream=stream, topic=topic, kafka=bootstrap), store)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    cpu.pids["fold process"] = next(iter(worker._folder._pool._processes))  # type: ignore[attr-defined]
    marks: dict[float, tuple[float, int]] = {}
    while len(marks) < 2:
        done = int(worker.metrics.records._value.get()) + sum(o.buffer.count for o in worker.ownership.all())
        for q in (0.2, 0.8):
            if q not in marks and done >= q * n_rows:
                marks[q] = (time.perf_counter(), done)
                cpu.start() if q == 0.2 else cpu.usage.update(cpu.stop())
        time.sleep(0.005)
    while store.total_count(stream) < n_rows:  # and it all lands in Redis
        time.sleep(0.05)
    worker.stop_event.set()
    thread.join(30)
    return rate_between(marks)


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
    parser.add_argument("--f32-records", type=int, default=10_000)
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
    rows_out, cpu_rows = [], []
    with LocalStack() as stack:
        store = SketchStore(connect(stack.redis_url))
        for i, (label, values, headers, k, x) in enumerate(cases):
            topic, stream = f"bench{i}", f"bench{i}"
            spec = SketchSpec.create(d=2, m=args.m, law="adapted-radius", sigma=0.5, seed=0, name=stream)
            store.create_stream(spec, replace=True)
            fill_topic(stack.bootstrap, topic, values, headers)
            n_rec, n_rows = len(values), x.shape[0]
            raw_cpu = CpuMeter({"client": None, "broker": stack.kafka.pid, "redis": stack.redis.pid})
            raw_rate = raw_consume(stack.bootstrap, topic, n_rec, raw_cpu)  # records/s
            worker_cpu = CpuMeter({"client": None, "broker": stack.kafka.pid, "redis": stack.redis.pid})
            worker_rate = worker_consume(store, stack.bootstrap, stream, topic, n_rows, worker_cpu) / k
            cpu_rows.append([label, "raw kafka-python", *(f"{raw_cpu.usage.get(c, 0.0):.2f}" for c in CPU_COLUMNS)])
            cpu_rows.append([label, "worker", *(f"{worker_cpu.usage.get(c, 0.0):.2f}" for c in CPU_COLUMNS)])
            fmap = FeatureMap(spec)
            kernel_s = best_of(lambda fm=fmap, xx=x: fm.feature_sum(xx, validate=False))
            if k == 1:
                decode_s = best_of(lambda v=values: [decode_json_vectors(v[j : j + 10_000], 2)
                                                     for j in range(0, len(v), 10_000)])
            else:
                decode_s = best_of(lambda v=values, h=headers: [decode_value(b, h, 2) for b in v])
            rows_out.append([
                label, f"{n_rec:,}", f"{n_rows:,}", f"{raw_rate:,.0f}", f"{worker_rate:,.0f}",
                f"{worker_rate * k:,.0f}", f"{worker_rate / raw_rate:.2f}", f"{n_rows / kernel_s:,.0f}",
                f"{worker_rate * k / (n_rows / kernel_s):.2f}", f"{n_rows / decode_s:,.0f}",
            ])
        store.client.close()
    body = markdown_table(
        ["records", "N records", "N rows", "raw kafka-python (records/s)", "worker (records/s)", "worker (rows/s)",
         "worker / raw", "feature kernel alone (rows/s)", "worker / kernel (rows)", "decode alone (rows/s)"],
        rows_out,
    ) + f"\n\nm = {args.m}, d = 2, {PARTITIONS} partitions, one worker, flush every 500 ms.\n\n"
    body += "Where the CPU goes (cores busy, steady state; the machine has 2):\n\n" + markdown_table(
        ["records", "consumer", *CPU_COLUMNS], cpu_rows
    )
    write_report("ingest_throughput", "Ingest throughput", body, "python bench/ingest_throughput.py")


if __name__ == "__main__":
    main()
