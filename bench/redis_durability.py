"""The cost of waiting for replicas (``--redis-durability``): flush and claim latency, ingest throughput.

On one machine: a Redis primary with one replica (both ``redis-server``, AOF ``everysec``) and the
embedded Tansu broker. Measured in one run, modes interleaved round by round so that drift of a
shared machine hits both alike:

1. **flush latency**: :meth:`SketchStore.flush` of one partition's delta with one bucket per level,
   at several m, with ``claims`` (the default: flushes do not wait) and ``replicated`` (each flush
   followed by ``WAIT`` for the replica on the same connection);
2. **claim latency**: :meth:`SketchStore.claim` with ``none`` and ``claims``;
3. **ingest throughput**: the full worker (:class:`ingest.worker.IngestWorker`) folding a topic of
   JSON records into a stream, rows/s from 10 % of the rows read until Redis holds all of them,
   ``claims`` against ``replicated``.

Ratios are replicated / claims (latency) and claims / none (claims); for throughput, replicated /
claims. Writes ``docs/bench/redis_durability.md``.

Run: ``.venv/bin/python bench/redis_durability.py [--flushes 300] [--records 200000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import markdown_table, write_report
from ingest.worker import IngestConfig, IngestWorker
from sketch_store.buckets import DEFAULT_BUCKETS
from sketch_store.redis_connect import connect
from sketch_store.redis_store import BucketDelta, SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import KafkaBroker, RedisServer
from sketchgen.produce import ensure_topic

PARTITIONS = 4


def replicated_pair(folder: Path) -> tuple[RedisServer, RedisServer]:
    """A started primary and a replica in sync with it."""
    primary = RedisServer(folder / "primary").start()
    replica = RedisServer(folder / "replica", extra_args=("--replicaof", primary.host, str(primary.port))).start()
    client = redis.Redis(host=replica.host, port=replica.port)
    deadline = time.monotonic() + 30
    while client.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not sync within 30 s")
        time.sleep(0.1)
    client.close()
    return primary, replica


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.array(seconds) * 1000.0, q))


def flush_latencies(url: str, mode: str, m: int, flushes: int, seed: int) -> list[float]:
    """Seconds of each of ``flushes`` flushes (one bucket per level) under ``mode``, on a fresh stream."""
    store = SketchStore(connect(url), durability=mode)
    name = f"lat-{mode}-{m}-{seed}"
    spec = SketchSpec.create(d=4, m=m, law="gaussian", seed=seed, name=name)
    store.create_stream(spec, DEFAULT_BUCKETS, replace=True)
    claim = store.claim(name, "t", 0)
    rng = np.random.default_rng(seed)
    total = rng.normal(size=2 * m)
    now = time.time()
    out = []
    for i in range(flushes):
        buckets = [BucketDelta(level, int(now // res) * res, total, 10)
                   for level, res in ((lv.name, lv.seconds) for lv in DEFAULT_BUCKETS.levels)]
        t = time.perf_counter()
        store.flush(name, claim, 10 * i, 10 * (i + 1), total, 10, buckets, now=now)
        out.append(time.perf_counter() - t)
    store.delete_stream(name)
    store.client.close()
    return out


def claim_latencies(url: str, mode: str, claims: int, seed: int) -> list[float]:
    store = SketchStore(connect(url), durability=mode)
    name = f"claim-{mode}-{seed}"
    store.create_stream(SketchSpec.create(d=2, m=16, law="gaussian", seed=seed, name=name), replace=True)
    out = []
    for i in range(claims):
        t = time.perf_counter()
        store.claim(name, "t", i % 8)
        out.append(time.perf_counter() - t)
    store.delete_stream(name)
    store.client.close()
    return out


def fill_topic(bootstrap: str, topic: str, n: int, seed: int) -> None:
    ensure_topic(bootstrap, topic, PARTITIONS)
    rows = np.random.default_rng(seed).normal(size=(n, 2))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1)
    for i, row in enumerate(rows):
        producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def ingest_rate(url: str, bootstrap: str, mode: str, topic: str, n: int, round_no: int) -> float:
    """Rows/s under ``mode``: from the moment the worker has read 10 % of the rows until Redis holds them all
    (the last 90 %, flushes included; a fetched batch moves the progress by hundreds of rows at once, so
    shorter marks are not measurable)."""
    store = SketchStore(connect(url), durability=mode)
    name = f"ingest-{mode}-{round_no}"
    store.create_stream(SketchSpec.create(d=2, m=1000, law="gaussian", seed=round_no, name=name), replace=True)
    worker = IngestWorker(IngestConfig(stream=name, topic=topic, kafka=bootstrap), store)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while int(worker.metrics.records._value.get()) + sum(o.buffer.count for o in worker.ownership.all()) < 0.1 * n:
        time.sleep(0.002)
    t0 = time.perf_counter()
    while store.total_count(name) < n:
        time.sleep(0.01)
    rate = 0.9 * n / (time.perf_counter() - t0)
    worker.stop_event.set()
    thread.join(30)
    store.delete_stream(name)
    store.client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=300, help="flushes per mode, m and round (default 300)")
    parser.add_argument("--claims", type=int, default=200, help="claims per mode and round (default 200)")
    parser.add_argument("--records", type=int, default=200_000, help="JSON records to ingest (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--m", type=int, nargs="+", default=[500, 3000], help="frequencies of the flush test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        primary, replica = replicated_pair(Path(tmp))
        broker = KafkaBroker(Path(tmp) / "kafka").start()
        try:
            body = run(primary.url, broker.bootstrap, args)
        finally:
            broker.stop()
            replica.stop()
            primary.stop()
    command = "python bench/redis_durability.py " + " ".join(sys.argv[1:])
    write_report("redis_durability", "Waiting for replicas: what --redis-durability costs", body, command.strip())


def run(url: str, bootstrap: str, args: argparse.Namespace) -> str:
    flush: dict[tuple[str, int], list[float]] = {}
    claims: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    topic = "durability-bench"
    fill_topic(bootstrap, topic, args.records, seed=0)
    for r in range(args.rounds):
        for m in args.m:
            for mode in ("claims", "replicated") if r % 2 == 0 else ("replicated", "claims"):
                flush.setdefault((mode, m), []).extend(flush_latencies(url, mode, m, args.flushes, seed=r))
        for mode in ("none", "claims") if r % 2 == 0 else ("claims", "none"):
            claims.setdefault(mode, []).extend(claim_latencies(url, mode, args.claims, seed=r))
        for mode in ("claims", "replicated") if r % 2 == 0 else ("replicated", "claims"):
            rates.setdefault(mode, []).append(ingest_rate(url, bootstrap, mode, topic, args.records, r))
        print(f"round {r + 1}/{args.rounds}: ingest rows/s {({k: round(v[-1]) for k, v in rates.items()})}",
              flush=True)
    rows = []
    for m in args.m:
        base, rep = flush[("claims", m)], flush[("replicated", m)]
        rows.append([f"flush, m = {m}", f"{percentile_ms(base, 50):.2f}", f"{percentile_ms(rep, 50):.2f}",
                     f"{percentile_ms(rep, 50) / percentile_ms(base, 50):.2f}",
                     f"{percentile_ms(base, 99):.2f}", f"{percentile_ms(rep, 99):.2f}"])
    rows.append(["claim (none → claims)", f"{percentile_ms(claims['none'], 50):.2f}",
                 f"{percentile_ms(claims['claims'], 50):.2f}",
                 f"{percentile_ms(claims['claims'], 50) / percentile_ms(claims['none'], 50):.2f}",
                 f"{percentile_ms(claims['none'], 99):.2f}", f"{percentile_ms(claims['claims'], 99):.2f}"])
    latency = markdown_table(["operation", "p50 ms (baseline)", "p50 ms (waiting)", "ratio", "p99 ms (baseline)",
                              "p99 ms (waiting)"], rows)
    base, rep = float(np.median(rates["claims"])), float(np.median(rates["replicated"]))
    throughput = markdown_table(
        ["durability", "rows/s (median)", "runs", "ratio to claims"],
        [["claims (default)", f"{base:,.0f}", ", ".join(f"{v:,.0f}" for v in rates["claims"]), "1.00"],
         ["replicated", f"{rep:,.0f}", ", ".join(f"{v:,.0f}" for v in rates["replicated"]), f"{rep / base:.2f}"]],
    )
    return (f"A primary and one replica on loopback; {args.rounds} interleaved rounds of {args.flushes} flushes "
            f"per mode and m (one bucket per level), {args.claims} claims per mode, and one worker run per mode "
            f"on {args.records:,} JSON records (d = 2, m = 1000).\n\n## Latency\n\nBaseline: flushes under `claims` "
            "(they do not wait), claims under `none`.\n\n"
            f"{latency}\n\n## Ingest throughput\n\n{throughput}\n")


if __name__ == "__main__":
    main()
