"""The ownership invariant: what is read under one claim of a partition is never flushed under another.

A real worker (in this process, against the session's Tansu and Redis) is driven step by step.
Its fold child is stopped with SIGSTOP so that a polled batch stays *in flight* while another
claim of the partition takes over (another worker's, simulated by a claim in Redis), exactly
as a pause, a rebalance or a fence would leave it. When the batch lands afterwards it must not
reach the later claim's buffer (which would count its rows twice or skip others), and its
rejected records must not be sent to the dead-letter topic by a worker that no longer owns
the partition.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from ingest.worker import IngestConfig, IngestWorker
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.produce import ensure_topic
from tests.store_helpers import assert_exact

pytestmark = pytest.mark.slow

ROWS = 4000
BAD_EVERY = 25  # a malformed record after every 25th row (batches of 40 hold one or two)


def _produce(bootstrap: str, topic: str, rows: np.ndarray) -> list[int]:
    """One partition: rows as JSON, a malformed record after every BAD_EVERY-th; returns the bad offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    offset, bad = 0, []
    for i, row in enumerate(rows):
        producer.send(topic, json.dumps(row.tolist()).encode(), partition=0)
        offset += 1
        if i % BAD_EVERY == BAD_EVERY - 1:
            producer.send(topic, b"[1, 2", partition=0)
            bad.append(offset)
            offset += 1
    producer.flush()
    producer.close()
    return bad


def _fold_child(worker: IngestWorker) -> int:
    (pid,) = worker._folder._pool._processes  # the one fold process
    return pid


def _poll_until(worker: IngestWorker, predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        worker._poll_once()


def _dead_letter_sources(bootstrap: str, topic: str) -> list[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                             consumer_timeout_ms=4000, fetch_max_wait_ms=100)
    sources = [dict(r.headers)["sketchgen-source"].decode() for r in consumer]
    consumer.close()
    return sources


@pytest.fixture
def setup(kafka_server, redis_server):
    name = f"own-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    store = SketchStore(connect(redis_server.url))
    spec = SketchSpec.create(d=2, m=32, sigma=1.0, seed=1, name=name)
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, 1)
    rows = np.random.default_rng(5).normal(size=(ROWS, 2))
    bad = _produce(kafka_server.bootstrap, topic, rows)
    return name, topic, store, spec, rows, bad


def _worker(kafka_server, store: SketchStore, name: str, topic: str, cooldown: float) -> IngestWorker:
    config = IngestConfig(stream=name, topic=topic, kafka=kafka_server.bootstrap, poll_records=40,
                          rebalance_interval_s=0.0, fenced_cooldown_s=cooldown)
    worker = IngestWorker(config, store)
    worker._connect()
    worker._rebalance()  # the only member: takes partition 0 at the beginning
    return worker


def _in_flight_batch_then_fence(worker: IngestWorker, store: SketchStore, name: str, topic: str) -> int:
    """Flush a first part; apply a second; stop the fold child with a third in flight; fence the claim.

    Returns the first offset of the batches left in flight.
    """
    _poll_until(worker, lambda: worker._pending_rows > 0, "a first batch")
    worker._drain()
    worker.flush()  # Redis now holds a prefix of the partition
    _poll_until(worker, lambda: worker._pending_rows > 0, "a second batch")
    worker._drain()  # applied, not flushed: the claim is dirty
    child = _fold_child(worker)
    os.kill(child, signal.SIGSTOP)
    try:
        _poll_until(worker, lambda: bool(worker._inflight), "a batch in flight")
        first_in_flight = min(batch[1][0].offset for _, pending in worker._inflight for batch in pending)
        store.claim(name, topic, 0)  # another worker takes the partition: the claim is fenced
        worker.flush()  # refused by Redis: the worker drops its claim
    finally:
        os.kill(child, signal.SIGCONT)
    return first_in_flight


def test_a_batch_read_under_a_fenced_claim_never_reaches_a_later_claim(setup, kafka_server):
    """Fails if in-flight rows of the fenced claim are added to the buffer of the worker's next claim."""
    name, topic, store, spec, rows, _ = setup
    worker = _worker(kafka_server, store, name, topic, cooldown=0.0)
    try:
        _in_flight_batch_then_fence(worker, store, name, topic)
        worker._rebalance()  # takes the partition again at once: a new claim at the offset Redis holds
        worker._drain()  # the old claim's batch lands now
        deadline = time.monotonic() + 60
        while store.read_total(name).count < ROWS and time.monotonic() < deadline:
            worker._poll_once()
            worker._drain()
            worker.flush()
        for _ in range(5):  # anything extra that would still land
            worker._poll_once()
            worker._drain()
            worker.flush()
    finally:
        worker.stop_event.set()
        worker._folder.close()
        worker._close()
    assert_exact(store.read_total(name), spec, rows)


def test_rejects_of_a_claim_that_ended_are_not_sent(setup, kafka_server):
    """Fails if the worker sends the dead letters of a batch read under a claim it has lost."""
    name, topic, store, _, _, bad = setup
    worker = _worker(kafka_server, store, name, topic, cooldown=3600.0)  # never takes it back
    try:
        first_in_flight = _in_flight_batch_then_fence(worker, store, name, topic)
        worker._drain()  # the lost claim's batch lands now
        worker.producer.flush(10)
    finally:
        worker.stop_event.set()
        worker._folder.close()
        worker._close()
    sent = {int(s.rpartition(":")[2]) for s in _dead_letter_sources(kafka_server.bootstrap, f"{topic}.dlq")}
    assert sent, "the worker sent no dead letters at all: the scenario did not run"
    assert any(first_in_flight <= b < first_in_flight + 40 for b in bad), "no bad record in the batch in flight"
    stale = sorted(o for o in sent if o >= first_in_flight)
    assert not stale, f"dead letters of offsets {stale} were sent after the claim they were read under was lost"
