"""Redis dies mid-stream (SIGKILL, AOF with appendfsync always) and comes back on the same data:
nothing acknowledged is lost, the worker reconnects by itself, and the final sketch is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from kafka import KafkaProducer

from sketch_store.features import FeatureMap
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import RedisServer
from sketchgen.produce import ensure_topic

pytestmark = pytest.mark.slow


def test_worker_rides_out_redis_crash_and_restart(tmp_path, kafka_server):
    name, topic = "rr", "rr-events"
    rows = np.random.default_rng(5).normal(size=(6000, 2))
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        store = SketchStore(connect(server.url))
        spec = SketchSpec.create(d=2, m=48, law="adapted-radius", sigma=0.7, seed=1, name=name)
        store.create_stream(spec)
        ensure_topic(kafka_server.bootstrap, topic, 2)

        crashed = threading.Event()  # the second half is produced only once Redis is down

        def produce() -> None:
            producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=5)
            for i, row in enumerate(rows):
                if i == len(rows) // 3:
                    producer.flush()
                    crashed.wait(120)
                producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % 2)
                if i % 100 == 0:
                    time.sleep(0.1)  # ~1000 rows/s
            producer.flush()
            producer.close()

        log = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "sketchgen", "ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
             "--redis", server.url, "--flush-ms", "100"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        producing = threading.Thread(target=produce)
        producing.start()
        try:
            deadline = time.monotonic() + 60
            while store.total_count(name) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            before = store.total_count(name)
            assert 0 < before <= len(rows) // 3, before  # the crash comes mid-stream
            server.kill()  # SIGKILL mid-stream: acknowledged flushes are in the AOF
            crashed.set()  # records keep arriving while Redis is down
            time.sleep(3)
            assert worker.poll() is None, "the worker died with Redis"
            server.start()
            assert store.total_count(name) >= before, "acknowledged records were lost"
            producing.join(60)
            server.restart()  # and a clean restart too
            deadline = time.monotonic() + 90
            while store.total_count(name) < len(rows) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.5)
            state = store.state(name)
            text = (tmp_path / "worker.log").read_text(errors="replace")
            assert state.sketch.count == len(rows), text[-4000:]
            expected, _ = FeatureMap(spec).feature_sum(rows)
            rel = np.linalg.norm(state.sketch.total - expected) / np.linalg.norm(expected)
            assert rel <= 1e-9, rel
            assert worker.poll() is None
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        finally:
            crashed.set()
            if worker.poll() is None:
                worker.kill()
            log.close()
            store.client.close()
