"""Dead letters are confirmed by the broker before a flush moves the offset past them.

A real Tansu broker refuses the worker's dead letters: its schema registry demands JSON objects
on the dead-letter topic, and the rejected records are not. The worker must hold the partition's
offset before the bad record (so nothing past it is committed), keep running, and say why on
``/readyz``. A worker started afterwards with a dead-letter topic that takes records re-reads
the held records from Redis's offset: the bad record reaches it and the count is exact. A worker
that ignored the failed sends would move the offset past the bad record and lose it.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import KafkaBroker, free_port
from sketchgen.produce import ensure_topic
from tests.processes import Proc, get, wait_for
from tests.store_helpers import assert_exact

pytestmark = pytest.mark.slow

#: Only JSON objects with an integer "never" field may be written to a guarded topic.
GUARD = {"type": "object", "properties": {"value": {"type": "object", "required": ["never"],
                                                    "properties": {"never": {"type": "integer"}}}},
         "required": ["value"]}


class GuardedBroker(KafkaBroker):
    """Tansu with a schema registry (``schemas/`` of its data directory, where it runs)."""

    def command(self) -> list[str]:
        return [*super().command(), "--schema-registry", "file://./schemas"]


@pytest.fixture
def guarded(tmp_path):
    """A broker whose topic ``guarded.dlq`` refuses anything but the GUARD schema."""
    (tmp_path / "kafka" / "schemas").mkdir(parents=True)
    (tmp_path / "kafka" / "schemas" / "guarded.dlq.json").write_text(json.dumps(GUARD))
    with GuardedBroker(tmp_path / "kafka") as broker:
        yield broker


def _sources(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                             consumer_timeout_ms=4000, fetch_max_wait_ms=100)
    out = [(dict(r.headers)["sketchgen-source"].decode(), dict(r.headers)["sketchgen-reject-reason"].decode())
           for r in consumer]
    consumer.close()
    return out


def test_an_unwritable_dead_letter_topic_holds_the_offset_and_loses_nothing(tmp_path, guarded, redis_server):
    name, topic = f"dlq-{uuid.uuid4().hex[:6]}", "guarded"
    store = SketchStore(connect(redis_server.url))
    spec = SketchSpec.create(d=2, m=16, sigma=1.0, seed=0, name=name)
    store.create_stream(spec)
    ensure_topic(guarded.bootstrap, topic, 1)
    rows = np.random.default_rng(1).normal(size=(200, 2))
    producer = KafkaProducer(bootstrap_servers=guarded.bootstrap, acks="all")
    for i, row in enumerate(rows):
        if i == 100:
            producer.send(topic, b"{not json", partition=0)  # offset 100
        producer.send(topic, json.dumps(row.tolist()).encode(), partition=0)
    producer.flush()
    producer.close()

    port = free_port()
    common = ["ingest", name, "--topic", topic, "--kafka", guarded.bootstrap, "--redis", redis_server.url,
              "--metrics-port", str(port), "--flush-ms", "200"]
    first = Proc(tmp_path, "held", [*common, "--dlq", "guarded.dlq"])
    try:
        _, body = wait_for(lambda: (r := get(port, "/readyz"))[0] == 503 and "dead-letter" in
                              r[1].get("reason", "") and r, 60, "/readyz to name the dead-letter topic")
        assert "guarded.dlq" in body["reason"], body
        for _ in range(3):  # the offset stays before the bad record while the worker retries
            state = store.state(name)
            assert not state.partitions or (state.partitions[0].next_offset or 0) <= 100, state.partitions
            assert first.proc.poll() is None, first.tail()
            time.sleep(1)
        assert store.read_total(name).count <= 100
        assert first.stop(signal.SIGTERM) == 0, first.tail()
    finally:
        first.stop(signal.SIGKILL)

    second = Proc(tmp_path, "retry", [*common, "--dlq", "open.dlq"])
    try:
        wait_for(lambda: store.read_total(name).count >= len(rows), 60, "every row folded")
        wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "ready once dead letters are confirmed")
    finally:
        second.stop()
    assert_exact(store.read_total(name), spec, rows)
    assert (f"{topic}:0:100", "invalid_json") in _sources(guarded.bootstrap, "open.dlq")
