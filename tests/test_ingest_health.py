"""The ingest worker's /healthz and /readyz: real workers (subprocesses) on a real Tansu broker and real Redis.

* a healthy worker: both 200, /readyz lists the partitions it holds, /metrics still served beside them;
* its Redis SIGKILLed (its own server, never the session's): /readyz 503 naming Redis while /healthz
  stays 200 and the process lives, through a flush retried across the outage; back to 200 after the
  restart, with every record counted exactly once;
* its stream deleted: /readyz 503 naming the stream while idle; on the next flush the worker exits
  (status 2, one line), and nothing is lost: a recreated stream gets every record from Kafka;
* the verdicts themselves (wedged loop, order of reasons) on a fake clock, served over real HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from ingest.health import WorkerHealth
from ingest.http_api import serve
from ingest.metrics import IngestMetrics
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import RedisServer, free_port
from sketchgen.produce import ensure_topic
from tests.processes import fetch, wait_for
from tests.processes import get as get_json


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict | str]:
    """``(status, JSON body or, for an answered /metrics, its text)``; status 0 when nothing answers."""
    if path == "/metrics":
        code, body = fetch(port, path, timeout)
        return (code, body.decode()) if code == 200 else (code, json.loads(body or b"{}"))
    return get_json(port, path, timeout)


class Worker:
    """A `sketchgen ingest` subprocess serving its HTTP endpoints on a free port, its log in a file."""

    def __init__(self, tmp: Path, label: str, name: str, topic: str, kafka: str, redis_url: str) -> None:
        self.port = free_port()
        self.log_path = tmp / f"{label}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sketchgen", "ingest", name, "--topic", topic, "--kafka", kafka, "--redis",
             redis_url, "--flush-ms", "100", "--metrics-port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def get(self, path: str) -> tuple[int, dict | str]:
        return get(self.port, path)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


def produce(bootstrap: str, topic: str, rows: np.ndarray, partitions: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    for i, row in enumerate(rows):
        producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % partitions)
    producer.flush()
    producer.close()


def ready(worker: Worker) -> dict | None:
    code, body = worker.get("/readyz")
    return body if code == 200 else None  # type: ignore[return-value]


def not_ready(worker: Worker, words: str) -> dict | None:
    code, body = worker.get("/readyz")
    return body if code == 503 and words in body.get("reason", "") else None  # type: ignore[union-attr]


def new_stream(store: SketchStore, name: str) -> SketchSpec:
    spec = SketchSpec.create(d=2, m=32, law="adapted-radius", sigma=0.7, seed=3, name=name)
    store.create_stream(spec)
    return spec


# -- the verdicts on a fake clock, over real HTTP ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def healthy(clock: Clock) -> WorkerHealth:
    health = WorkerHealth(stall_timeout_s=120.0, member_ttl_s=6.0, clock=clock)
    health.connected()
    health.probed(None, None, None)
    health.member()
    health.partitions(4, {0, 2}, {0, 2})
    return health


def test_liveness_turns_503_only_when_the_loop_stalls_past_the_timeout():
    clock = Clock()
    health = healthy(clock)
    clock.now += 119.0
    assert health.liveness()[0] is True
    clock.now += 2.0
    alive, body = health.liveness()
    assert alive is False and "121 s" in body["reason"] and body["ok"] is False
    health.beat()
    assert health.liveness() == (True, {"ok": True, "loop_idle_seconds": 0.0})


@pytest.mark.parametrize(("breakage", "reason"), [
    (lambda h, c: h.probed("ConnectionError: refused", None, None), "Redis: ConnectionError"),
    (lambda h, c: h.probed(None, "stream 's' does not exist in Redis", None), "does not exist"),
    (lambda h, c: h.probed(None, None, "cannot reach Kafka at x:1"), "Kafka: cannot reach"),
    (lambda h, c: setattr(c, "now", c.now + 7.0), "not a live member"),
    (lambda h, c: h.partitions(0, set(), set()), "no partitions"),
    (lambda h, c: h.partitions(4, {0, 2}, {0}), "partitions [2] are assigned"),
    (lambda h, c: h.owned({2}), "partitions [0] are assigned"),
    (lambda h, c: h.stopping(), "stopping"),
])
def test_readiness_names_what_is_wrong(breakage, reason):
    clock = Clock()
    health = healthy(clock)
    assert health.readiness() == (True, {"ready": True, "partitions": 4, "owned": [0, 2], "assigned": [0, 2]})
    breakage(health, clock)
    ok, body = health.readiness()
    assert not ok and reason in body["reason"], body


def test_not_ready_before_connecting_or_probing():
    health = WorkerHealth(clock=Clock())
    assert "starting" in health.readiness()[1]["reason"]
    health.connected()
    assert "not probed yet" in health.readiness()[1]["reason"]


def test_http_endpoints_answer_json_with_the_verdicts():
    clock = Clock()
    health = healthy(clock)
    metrics = IngestMetrics("s")
    server = serve(metrics.registry, health, 0, host="127.0.0.1")
    port = server.server_port
    try:
        assert get(port, "/healthz")[0] == 200 and get(port, "/readyz")[0] == 200
        code, text = get(port, "/metrics")
        assert code == 200 and "sketchgen_ingest_records_total" in text
        clock.now += 500.0  # the loop wedged: no beat, no membership heartbeat
        code, body = get(port, "/healthz")
        assert code == 503 and "500 s" in body["reason"]
        code, body = get(port, "/readyz")
        assert code == 503 and "not a live member" in body["reason"]
        assert get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


# -- real workers ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_readyz_follows_redis_down_and_back_while_healthz_stays_up(tmp_path, kafka_server):
    name = f"hz-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    rng = np.random.default_rng(11)
    first, during, after = (rng.normal(size=(n, 2)) for n in (300, 200, 300))
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        store = SketchStore(connect(server.url))
        new_stream(store, name)
        ensure_topic(kafka_server.bootstrap, topic, 2)
        worker = Worker(tmp_path, "worker", name, topic, kafka_server.bootstrap, server.url)
        try:
            body = wait_for(lambda: ready(worker), 90, "/readyz 200 on a healthy worker")
            assert body["owned"] == [0, 1] and body["assigned"] == [0, 1] and body["partitions"] == 2
            assert worker.get("/healthz")[0] == 200
            code, text = worker.get("/metrics")
            assert code == 200 and f'sketchgen_ingest_records_total{{stream="{name}"}}' in text
            produce(kafka_server.bootstrap, topic, first, 2)
            wait_for(lambda: store.total_count(name) == len(first), 60, "the first rows in Redis")

            server.kill()  # SIGKILL: the worker's Redis is gone
            body = wait_for(lambda: not_ready(worker, "Redis"), 30, "/readyz 503 naming Redis")
            produce(kafka_server.bootstrap, topic, during, 2)  # the worker now retries a flush through the outage
            for _ in range(10):
                code, health = worker.get("/healthz")
                assert code == 200 and health["ok"], health
                assert worker.alive(), worker.tail()
                assert worker.get("/readyz")[0] == 503
                time.sleep(1.0)

            server.start()  # same port, same AOF
            wait_for(lambda: ready(worker), 120, "/readyz 200 again after Redis is back")
            produce(kafka_server.bootstrap, topic, after, 2)
            total = len(first) + len(during) + len(after)
            wait_for(lambda: store.total_count(name) == total, 120, f"all {total} rows counted")
            time.sleep(1.0)
            assert store.total_count(name) == total, "a record was counted twice"
            assert worker.get("/healthz")[0] == 200
        finally:
            code = worker.stop()
            store.client.close()
        assert code == 0, worker.tail()


@pytest.mark.slow
def test_a_deleted_stream_turns_readyz_503_then_the_worker_exits_without_losing_data(
    tmp_path, kafka_server, redis_server
):
    name = f"hzdel-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    rng = np.random.default_rng(12)
    before, after = rng.normal(size=(200, 2)), rng.normal(size=(100, 2))
    store = SketchStore(connect(redis_server.url))
    new_stream(store, name)
    ensure_topic(kafka_server.bootstrap, topic, 1)
    worker = Worker(tmp_path, "worker", name, topic, kafka_server.bootstrap, redis_server.url)
    try:
        wait_for(lambda: ready(worker), 90, "/readyz 200")
        produce(kafka_server.bootstrap, topic, before, 1)
        wait_for(lambda: store.total_count(name) == len(before), 60, "the first rows in Redis")

        store.delete_stream(name)
        body = wait_for(lambda: not_ready(worker, "does not exist"), 30, "/readyz 503 naming the stream")
        assert name in body["reason"]
        assert worker.get("/healthz")[0] == 200 and worker.alive()

        produce(kafka_server.bootstrap, topic, after, 1)  # the next flush finds no stream: the worker stops
        assert worker.proc.wait(60) == 2, worker.tail()
        assert f"sketchgen: error: stream {name!r} no longer exists" in worker.tail()
    finally:
        worker.stop()

    new_stream(store, name)  # recreated: a new worker folds every record still in Kafka
    again = Worker(tmp_path, "again", name, topic, kafka_server.bootstrap, redis_server.url)
    try:
        total = len(before) + len(after)
        wait_for(lambda: store.total_count(name) == total, 90, f"all {total} rows in the recreated stream")
        wait_for(lambda: ready(again), 60, "/readyz 200 on the new worker")
    finally:
        code = again.stop()
        store.delete_stream(name)
        store.client.close()
    assert code == 0, again.tail()


@pytest.mark.slow
def test_readyz_503_while_kafka_is_unreachable_and_the_worker_stays_alive(tmp_path, redis_server):
    from sketchgen.local_stack import KafkaBroker

    name = f"hzk-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    store = SketchStore(connect(redis_server.url))
    new_stream(store, name)
    with KafkaBroker(tmp_path / "kafka") as broker:  # its own broker: this test kills it
        ensure_topic(broker.bootstrap, topic, 1)
        worker = Worker(tmp_path, "worker", name, topic, broker.bootstrap, redis_server.url)
        try:
            wait_for(lambda: ready(worker), 90, "/readyz 200")
            broker.kill()
            body = wait_for(lambda: not_ready(worker, "Kafka"), 30, "/readyz 503 naming Kafka")
            assert broker.bootstrap in body["reason"]
            for _ in range(5):
                assert worker.get("/healthz")[0] == 200 and worker.alive(), worker.tail()
                time.sleep(1.0)
        finally:
            worker.stop()
            store.delete_stream(name)
            store.client.close()


@pytest.mark.slow
def test_readyz_503_until_the_topic_exists(tmp_path, kafka_server, redis_server):
    name = f"hzt-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"  # not created yet
    store = SketchStore(connect(redis_server.url))
    new_stream(store, name)
    worker = Worker(tmp_path, "worker", name, topic, kafka_server.bootstrap, redis_server.url)
    try:
        wait_for(lambda: not_ready(worker, "no partitions"), 60, "/readyz 503: the topic has no partitions")
        assert worker.get("/healthz")[0] == 200
        ensure_topic(kafka_server.bootstrap, topic, 3)
        body = wait_for(lambda: ready(worker), 120, "/readyz 200 once the topic exists")
        assert body["owned"] == [0, 1, 2] and body["partitions"] == 3
    finally:
        code = worker.stop()
        store.delete_stream(name)
        store.client.close()
    assert code == 0, worker.tail()
