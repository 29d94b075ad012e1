"""A worker paused past its membership TTL notices, when it wakes, that it lost its partitions.

Two `sketchgen ingest` workers share a 2-partition topic carrying a live stream. One is stopped
with SIGSTOP for longer than the member TTL (as a CPU-throttled pod or a long GC pause would
be), so the other takes its partition over; then it is resumed with SIGCONT. Before writing
anything it must find out (its heartbeat reports the lapse, by Redis's clock), drop what it held,
and say so in a log line and in ``sketchgen_ingest_pauses_total`` /
``sketchgen_ingest_claims_lost_total``. The sketch stays exact.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import free_port
from sketchgen.produce import ensure_topic
from tests.processes import Proc, fetch, wait_for
from tests.store_helpers import assert_exact

pytestmark = pytest.mark.slow


def _counter(port: int, name: str) -> float:
    code, body = fetch(port, "/metrics", timeout=10)
    assert code == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no metric {name}")


def test_a_paused_worker_drops_what_it_held_and_says_so(tmp_path, kafka_server, redis_server):
    name = f"pause-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    store = SketchStore(connect(redis_server.url))
    spec = SketchSpec.create(d=2, m=16, sigma=1.0, seed=6, name=name)
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, 2)
    rows = np.random.default_rng(8).normal(size=(12_000, 2))
    common = ["ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap, "--redis", redis_server.url,
              "--flush-ms", "300"]
    port = free_port()
    paused = Proc(tmp_path, "paused", [*common, "--metrics-port", str(port)])
    wait_for(lambda: "took " in paused.tail(), 60, "the first worker to take partitions")
    other = Proc(tmp_path, "other", common)
    done = threading.Event()

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=5)
        for i, row in enumerate(rows):
            producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % 2)
            if i % 100 == 0:
                time.sleep(0.06)  # ~1500 rows/s, for ~8 s
        producer.flush()
        producer.close()
        done.set()

    try:
        wait_for(lambda: "took " in other.tail() and "handed over" in paused.tail(), 60, "the partitions to split")
        thread = threading.Thread(target=produce)
        thread.start()
        wait_for(lambda: store.read_total(name).count > 1000, 60, "rows to flow")
        paused.proc.send_signal(signal.SIGSTOP)
        time.sleep(10)  # longer than the member TTL (6 s): the other worker takes its partition
        paused.proc.send_signal(signal.SIGCONT)
        thread.join(120)
        wait_for(lambda: store.read_total(name).count >= len(rows), 90, "every row folded")
        time.sleep(2)  # anything extra that would still land
        wait_for(lambda: _counter(port, "sketchgen_ingest_pauses_total") >= 1, 30, "the pause to be counted")
        assert _counter(port, "sketchgen_ingest_claims_lost_total") >= 1, paused.tail()
        assert paused.proc.poll() is None and other.proc.poll() is None
    finally:
        paused.proc.send_signal(signal.SIGCONT)
        paused.stop()
        other.stop()
    assert "was paused or stalled" in paused.tail(), paused.tail()
    assert "lost " in paused.tail(), paused.tail()
    assert_exact(store.read_total(name), spec, rows)
