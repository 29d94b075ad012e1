"""Exactly-once ingestion through primary failovers, on a real Redis Cluster and a real Sentinel setup.

The chaos runs (tests/chaos.py) stream about 15 000 valid records mixed with malformed ones into four
partitions while workers are killed, paused past their TTL and rescaled, and the primary holding the
stream's slot is SIGKILLed three times (a replica takes over; the killed node rejoins as a replica).
The final count and sum must equal the offline sketch of the valid rows, every malformed record must
be in the dead-letter topic, and a monitor checks twice a second that every partition's stored count
equals the valid rows below its stored offset.

A failover with asynchronous replication may lose the primary's last writes. With SIGKILL on loopback
that is rare, so :func:`test_a_tail_lost_in_a_failover_is_read_again_from_kafka` makes it certain:
the replica is stopped and its link dropped while a worker flushes, then the primary is killed and
the replica, resumed, is promoted without those flushes. The worker's next flush is refused (Redis's offset is
older than its own), it claims the partition again at Redis's offset and reads the lost tail again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import redis
from kafka import KafkaProducer

from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec
from sketchgen.produce import ensure_topic
from tests import redis_topology
from tests.chaos import ChaosConfig, ChaosRun, FailoverRedis, Fault

pytestmark = pytest.mark.slow

redis_cluster = redis_topology.redis_cluster
redis_sentinel = redis_topology.redis_sentinel


def failover_plan() -> list[Fault]:
    """Kills, pauses past the TTL, rescales, and three failovers at least 14 s apart; over by ~62 s."""
    rng = random.Random(5)
    plan = [
        Fault(rng.uniform(3.0, 5.0), "kill"),
        Fault(8.0, "scale", target=3),
        Fault(14.0, "failover"),
        Fault(30.0, "failover"),
        Fault(46.0, "failover"),
        Fault(60.0, "scale", target=1),
    ]
    for i in range(3):
        plan.append(Fault(rng.uniform(12.0 + 14.0 * i, 22.0 + 14.0 * i), "pause", hold=rng.uniform(8.0, 10.0)))
        plan.append(Fault(rng.uniform(18.0 + 12.0 * i, 26.0 + 12.0 * i), "kill"))
    return sorted(plan)


def _chaos(tmp_path, kafka, backend: FailoverRedis) -> None:
    config = ChaosConfig(
        valid_records=15_000, rate=260.0, bad_fraction=0.03, partitions=4, initial_workers=1, fault_skewed=False,
        seed=5, settle_timeout_s=60.0, dlq_timeout_s=30.0, run_timeout_s=150.0,
    )
    result = ChaosRun(config, tmp_path, kafka, redis_backend=backend).execute(failover_plan())
    (tmp_path / "events.log").write_text(result.events.text())
    report = result.report()
    print(report)
    caused = result.caused
    minimums = {
        "completed failovers": (caused["failover"], 2),
        "SIGKILLed workers": (caused["kill"], 3),
        "pauses longer than the TTL": (caused["pause"], 2),
        "scale-ups": (caused["scale up"], 1),
        "scale-downs": (caused["scale down"], 1),
        "valid records": (result.facts["valid records"], 15_000),
    }
    failures = result.failures(minimums)
    assert not failures, "\n".join([*failures, "", report])


def test_ingest_exact_through_cluster_failovers(tmp_path, kafka_server, redis_cluster):
    _chaos(tmp_path, kafka_server.bootstrap, FailoverRedis(redis_cluster.url, redis_cluster.fail_over_key))


def test_ingest_exact_through_sentinel_failovers(tmp_path, kafka_server, redis_sentinel):
    _chaos(tmp_path, kafka_server.bootstrap, FailoverRedis(redis_sentinel.url, lambda _key: redis_sentinel.fail_over()))


def _produce(bootstrap: str, topic: str, rows: np.ndarray) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, row in enumerate(rows):
        producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % 2)
    producer.flush()
    producer.close()


def _count_on(server, name: str) -> int:
    """The stream's total count as ``server`` itself holds it (no Sentinel in between)."""
    store = SketchStore(redis.Redis(host=server.host, port=server.port, socket_timeout=5))
    try:
        return int(store.total_count(name))
    finally:
        store.client.close()


def _wait(what: str, check, timeout: float = 60.0, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()[-4000:]}" if log else ""))
        time.sleep(0.2)


def test_a_tail_lost_in_a_failover_is_read_again_from_kafka(tmp_path, kafka_server, redis_sentinel):
    name, topic = "lost-tail", "lost-tail-events"
    rows = np.random.default_rng(8).normal(size=(3000, 2))
    first, second, third = rows[:1000], rows[1000:2000], rows[2000:]
    store = SketchStore(connect(redis_sentinel.url))
    spec = SketchSpec.create(d=2, m=32, law="adapted-radius", sigma=0.7, seed=2, name=name)
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, 2)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "sketchgen", "ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
             "--redis", redis_sentinel.url, "--flush-ms", "100"],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    text = lambda: log_path.read_text(errors="replace")  # noqa: E731
    old = redis_sentinel.primary()
    (new,) = redis_sentinel.replicas()
    try:
        _produce(kafka_server.bootstrap, topic, first)
        _wait("the first rows on both nodes", lambda: _count_on(old, name) == _count_on(new, name) == len(first),
              log=text)
        # the replica stops, and the primary drops its link: what follows is on the primary only (the
        # replica cannot reconnect while stopped, and nothing is left in flight on a closed socket)
        os.kill(new.pid, signal.SIGSTOP)
        try:
            redis_topology.node_command(old, "CLIENT", "KILL", "TYPE", "replica")
            _wait("the primary to have no replica", lambda: redis_topology.info_fields(old, "replication").get(
                "connected_slaves") == "0")
            _produce(kafka_server.bootstrap, topic, second)
            _wait("the second rows on the primary", lambda: _count_on(old, name) == len(first) + len(second),
                  log=text)
            old.kill()
        finally:
            os.kill(new.pid, signal.SIGCONT)
        redis_topology.wait_until("the sentinels to promote the replica", lambda: redis_topology.node_command(
            new, "ROLE")[0] == "master" and redis_sentinel.primary() is new, 60.0, redis_sentinel.servers())
        promoted = _count_on(new, name)
        assert promoted == len(first), f"the failover kept {promoted} rows; the test needs it to lose the tail"
        _produce(kafka_server.bootstrap, topic, third)
        _wait("every row counted once on the new primary", lambda: store.total_count(name) == len(rows), 90.0,
              log=text)
        time.sleep(1.5)  # nothing more may arrive
        state = store.state(name)
        assert state.sketch.count == len(rows), text()[-4000:]
        expected = Sketch.from_data(spec, rows)
        rel = np.linalg.norm(state.sketch.total - expected.total) / np.linalg.norm(expected.total)
        assert rel <= 1e-9, rel
        assert "is at offset" in text(), "the worker's flush after the failover was not refused for its offset"
        assert worker.poll() is None, text()[-4000:]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        if not old.running:
            old.extra_args = ("--replicaof", redis_topology.LOOPBACK, str(new.port))
            old.start()
            redis_sentinel.wait_replicas_in_sync()
        store.client.close()
