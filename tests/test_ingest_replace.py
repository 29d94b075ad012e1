"""`create --replace` with the same spec while a worker runs: the old worker can no longer write.

The replacement stream has the same name and spec (the same fingerprint), so only the stream's
incarnation and the never-decreasing epochs tell the two apart. The old worker must stop with
one clear line and write nothing into the new stream; a worker started for the new stream
then folds the topic into it from the beginning, exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaProducer

from sketch_store.features import FeatureMap
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.produce import ensure_topic
from tests.processes import Proc, wait_for

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sketchgen", *args], capture_output=True, text=True, timeout=120)


def test_a_worker_of_a_replaced_stream_stops_and_writes_nothing_into_its_successor(tmp_path, kafka_server,
                                                                                   redis_server):
    name = f"rep-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    store = SketchStore(connect(redis_server.url))
    create = ["create", name, "--dim", "2", "--m", "32", "--sigma", "1", "--seed", "4", "--redis", redis_server.url]
    assert _cli(*create).returncode == 0
    ensure_topic(kafka_server.bootstrap, topic, 2)
    rows = np.random.default_rng(3).normal(size=(6000, 2))
    stop = threading.Event()

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=5)
        for i, row in enumerate(rows):
            producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % 2)
            if i % 200 == 0:
                time.sleep(0.1)  # a live stream: ~2000 rows/s
            if stop.is_set():
                break
        producer.flush()
        producer.close()

    thread = threading.Thread(target=produce)
    thread.start()
    old = Proc(tmp_path, "old", ["ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                 "--redis", redis_server.url, "--flush-ms", "100"])
    try:
        wait_for(lambda: store.read_total(name).count > 500, 60, "the old worker to fold some rows")
        epochs_before = [p.epoch for p in store.state(name).partitions]
        replaced = _cli(*create, "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert old.proc.wait(60) == 2, old.tail()
        assert "recreated" in old.tail(), old.tail()
        assert "Traceback" not in old.tail(), old.tail()
        time.sleep(1)
        assert store.read_total(name).count == 0  # nothing of the old worker reached the new stream
        thread.join(120)
        new = Proc(tmp_path, "new", ["ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                     "--redis", redis_server.url, "--flush-ms", "100"])
        try:
            wait_for(lambda: store.read_total(name).count >= len(rows), 90, "the new worker to fold the topic")
            time.sleep(1)
        finally:
            new.stop()
    finally:
        stop.set()
        old.stop()
        thread.join(30)
    state = store.state(name)
    assert state.sketch.count == len(rows)
    assert min(p.epoch for p in state.partitions) > max(epochs_before)  # epochs never went backwards
    spec = SketchSpec.create(d=2, m=32, sigma=1.0, seed=4, name=name)
    expected, _ = FeatureMap(spec).feature_sum(rows)
    assert np.linalg.norm(state.sketch.total - expected) / np.linalg.norm(expected) <= 1e-9
