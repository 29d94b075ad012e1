"""Exactly-once ingestion against real Kafka-protocol (Tansu) and Redis servers.

Workers run as real `sketchgen ingest` processes; they are SIGKILLed at random moments and
restarted, and the group is scaled 1 → 3 → 1 while a producer keeps writing. At the end the
sketch in Redis must hold every valid record once: the count equals the number of valid
records produced, and the sum equals the offline sketch of the same records.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from sketch_store.features import FeatureMap
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.produce import ensure_topic

pytestmark = pytest.mark.slow

PARTITIONS = 4


class Workers:
    """`sketchgen ingest` subprocesses of one group, with logs in a folder."""

    def __init__(self, tmp: Path, kafka: str, redis_url: str, stream: str, topic: str) -> None:
        self.tmp = tmp
        self.cmd = [sys.executable, "-m", "sketchgen", "ingest", stream, "--topic", topic, "--kafka", kafka,
                    "--redis", redis_url, "--flush-ms", "200"]
        self.procs: list[subprocess.Popen] = []
        self.started = 0

    def start(self) -> subprocess.Popen:
        self.started += 1
        log = open(self.tmp / f"worker{self.started}.log", "wb")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def owns_partitions(self, proc: subprocess.Popen) -> bool:
        """Whether the worker has taken partitions (so killing it loses unflushed work)."""
        index = self.procs.index(proc) + 1
        return "took " in (self.tmp / f"worker{index}.log").read_text(errors="replace")

    def kill_one(self, rng: random.Random) -> bool:
        """SIGKILL a random worker, preferring one that owns partitions; True if it did."""
        alive = self.alive()
        owners = [p for p in alive if self.owns_partitions(p)]
        victim = rng.choice(owners or alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        return bool(owners)

    def stop_one(self) -> None:
        victim = self.alive()[0]
        victim.send_signal(signal.SIGTERM)
        assert victim.wait(60) == 0, "a worker did not stop cleanly on SIGTERM"

    def close(self) -> None:
        for p in self.alive():
            p.kill()
            p.wait(10)

    def logs(self) -> str:
        files = sorted(self.tmp.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in files)


def produce(kafka: str, topic: str, rows: np.ndarray, bad_every: int, stop: threading.Event) -> list[int]:
    """Send rows one per record (JSON), plus a malformed record every ``bad_every`` rows; returns bad indices."""
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5, acks="all")
    bad = []
    for i, row in enumerate(rows):
        producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % PARTITIONS)
        if i % bad_every == 0:
            producer.send(topic, b'{"x": "not numbers"}', partition=(i // bad_every) % PARTITIONS)
            bad.append(i)
        if i % 100 == 0:
            time.sleep(0.15)  # ~650 rows/s: keep the stream live while workers come and go
        if stop.is_set():
            break
    producer.flush()
    producer.close()
    return bad


def test_exactly_once_through_kills_restarts_and_scaling(tmp_path, kafka_server, redis_server):
    name, topic = "eo", "eo-events"
    client = connect(redis_server.url)
    client.flushdb()
    store = SketchStore(client)
    spec = SketchSpec.create(d=2, m=64, law="adapted-radius", sigma=0.5, seed=3, name=name)
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, PARTITIONS)

    rng = np.random.default_rng(42)
    rows = rng.normal(size=(15_000, 2))
    workers = Workers(tmp_path, kafka_server.bootstrap, redis_server.url, name, topic)
    stop = threading.Event()
    result: dict[str, list[int]] = {}
    producer = threading.Thread(
        target=lambda: result.setdefault("bad", produce(kafka_server.bootstrap, topic, rows, 997, stop))
    )
    chaos = random.Random(7)
    try:
        workers.start()
        producer.start()
        time.sleep(4)
        workers.start()
        workers.start()  # scaled to 3
        owners_killed = 0
        for _ in range(4):  # SIGKILL at random moments, restart
            time.sleep(chaos.uniform(3.0, 6.0))
            owners_killed += workers.kill_one(chaos)
            workers.start()
        assert owners_killed >= 2, "the chaos never hit a worker that owned partitions"
        producer.join(120)
        assert not producer.is_alive(), "producer stuck"
        while len(workers.alive()) > 1:  # scale back to 1 (clean stops)
            workers.stop_one()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and store.read_total(name).count < len(rows):
            time.sleep(1)
        time.sleep(2)  # anything extra that would still land
        state = store.state(name)
        assert state.sketch.count == len(rows), workers.logs()
        expected, _ = FeatureMap(spec).feature_sum(rows)
        rel = np.linalg.norm(state.sketch.total - expected) / np.linalg.norm(expected)
        assert rel <= 1e-9, rel
        assert sum(p.count for p in state.partitions) == len(rows)
        assert {p.partition for p in state.partitions} == set(range(PARTITIONS))
        # partitions really changed hands: each claim bumps the epoch
        assert sum(p.epoch for p in state.partitions) >= 2 * PARTITIONS, [p.epoch for p in state.partitions]
    finally:
        stop.set()
        workers.close()

    # every malformed record reached the dead-letter topic with its reason (at least once)
    dlq = KafkaConsumer(
        f"{topic}.dlq", bootstrap_servers=kafka_server.bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=5000, fetch_max_wait_ms=100, group_id=None,
    )
    reasons = [dict(r.headers).get("sketchgen-reject-reason") for r in dlq]
    dlq.close()
    assert len(reasons) >= len(result["bad"])
    assert set(reasons) == {b"bad_structure"}
