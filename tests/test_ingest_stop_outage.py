"""A worker stopped (SIGTERM) while Redis is down keeps retrying its final flush until ``--stop-timeout``.

The worker has read every record of the topic and flushed none of them (``--flush-ms`` far away), so
everything it read is in its final flush. Redis is SIGKILLed (AOF with ``appendfsync always``), then
the worker gets SIGTERM:

* Redis comes back ~6 s later on the same port and AOF (a restart or a failover during a rolling
  update): the worker must ride it out, exit 0, and the stored sketch must be exact;
* Redis stays down with ``--stop-timeout 2``: the worker gives up about 2 s after the stop began and
  exits 2 with one line ``sketchgen: error: cannot flush to Redis while stopping: …``. Nothing is lost:
  a worker started once Redis is back re-reads the records from the offsets stored in Redis.

The stop timeout itself: flag, then ``SKETCHGEN_STOP_TIMEOUT``, then 20 s; it must be a positive number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from ingest.worker import DEFAULT_STOP_TIMEOUT_S, IngestConfig, resolve_stop_timeout
from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import RedisServer, free_port
from sketchgen.produce import ensure_topic
from tests.processes import Proc, fetch, wait_for
from tests.store_helpers import assert_exact

ROWS = 4000
STOP_ERROR = "sketchgen: error: cannot flush to Redis while stopping: "


def _lags(port: int) -> dict[str, float]:
    """The worker's ``sketchgen_ingest_lag_records`` per partition (empty while it has not measured any)."""
    code, body = fetch(port, "/metrics", timeout=10)
    if code != 200:
        return {}
    return {s.labels["partition"]: s.value for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == "sketchgen_ingest_lag_records"}


class Setup:
    """Own Redis (so it can be killed), a fresh stream and a 2-partition topic already holding ``ROWS`` rows."""

    def __init__(self, tmp_path, kafka_server) -> None:
        self.tmp_path, self.kafka = tmp_path, kafka_server.bootstrap
        self.name = f"stop-{uuid.uuid4().hex[:6]}"
        self.topic = f"{self.name}-events"
        self.redis = RedisServer(tmp_path / "redis", appendfsync="always").start()
        self.store = SketchStore(connect(self.redis.url))
        self.spec = SketchSpec.create(d=2, m=16, sigma=1.0, seed=3, name=self.name)
        self.store.create_stream(self.spec)
        ensure_topic(self.kafka, self.topic, 2)
        self.rows = np.random.default_rng(11).normal(size=(ROWS, 2))
        producer = KafkaProducer(bootstrap_servers=self.kafka, linger_ms=5)
        for i, row in enumerate(self.rows):
            producer.send(self.topic, json.dumps(row.tolist()).encode(), partition=i % 2)
        producer.flush()
        producer.close()

    def worker(self, label: str, *extra: str) -> Proc:
        return Proc(self.tmp_path, label, ["ingest", self.name, "--topic", self.topic, "--kafka", self.kafka,
                                           "--redis", self.redis.url, *extra])

    def holding_everything(self, *extra: str) -> tuple[Proc, int]:
        """A worker that has read every row and flushed none (its flush is 10 minutes away)."""
        port = free_port()
        proc = self.worker("stopped", "--flush-ms", "600000", "--flush-records", "1000000",
                           "--metrics-port", str(port), *extra)
        wait_for(lambda: proc.proc.poll() is not None or "took " in proc.tail(), 60, "the worker to take partitions")
        assert proc.proc.poll() is None, proc.tail()
        wait_for(lambda: (lags := _lags(port)) and set(lags) == {"0", "1"} and not any(lags.values()), 60,
                 "the worker to read the whole topic")
        assert self.store.total_count(self.name) == 0  # nothing flushed: all of it is in the final flush
        return proc, port

    def close(self) -> None:
        self.store.client.close()
        self.redis.stop()


@pytest.fixture
def setup(tmp_path, kafka_server):
    s = Setup(tmp_path, kafka_server)
    yield s
    s.close()


@pytest.mark.slow
def test_a_stop_during_a_short_redis_outage_waits_for_redis_and_exits_0(setup):
    proc, _ = setup.holding_everything()
    try:
        setup.redis.kill()
        down = time.monotonic()
        time.sleep(0.5)
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(max(0.0, 6.0 - (time.monotonic() - down)))
        assert proc.proc.poll() is None, f"the worker gave up while Redis was down:\n{proc.tail()}"
        setup.redis.start()  # same port, same AOF
        code = proc.proc.wait(60)
    finally:
        proc.stop(signal.SIGKILL)
    assert code == 0, proc.tail()
    assert "cannot flush" not in proc.tail()
    assert_exact(setup.store.read_total(setup.name), setup.spec, setup.rows)


@pytest.mark.slow
def test_a_stop_while_redis_stays_down_gives_up_at_the_stop_timeout_in_one_line(setup):
    proc, _ = setup.holding_everything("--stop-timeout", "2")
    try:
        setup.redis.kill()
        time.sleep(0.5)
        sent = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        try:
            code = proc.proc.wait(40)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 40 s after SIGTERM with --stop-timeout 2:\n{proc.tail()}") from None
        took = time.monotonic() - sent
    finally:
        proc.stop(signal.SIGKILL)
    text = proc.log_path.read_text(errors="replace")
    assert code == 2, text[-3000:]
    assert 1.9 <= took <= 15.0, (took, text[-3000:])
    errors = [line for line in text.splitlines() if line.startswith("sketchgen: error:")]
    assert len(errors) == 1 and errors[0].startswith(STOP_ERROR), text[-3000:]
    assert text.rstrip().splitlines()[-1] == errors[0]
    assert "Traceback" not in text
    # nothing lost: a worker started once Redis is back reads everything from the offsets stored in Redis
    setup.redis.start()
    assert setup.store.total_count(setup.name) == 0
    after = setup.worker("after", "--flush-ms", "200")
    try:
        wait_for(lambda: setup.store.total_count(setup.name) >= ROWS, 90, "the next worker to fold every row")
        time.sleep(1.0)  # anything extra that would still land
    finally:
        assert after.stop() == 0, after.tail()
    assert_exact(setup.store.read_total(setup.name), setup.spec, setup.rows)


def test_the_stop_timeout_comes_from_the_flag_then_the_environment_then_20_s():
    assert DEFAULT_STOP_TIMEOUT_S == 20.0
    assert resolve_stop_timeout(None, {}) == 20.0
    assert resolve_stop_timeout(None, {"SKETCHGEN_STOP_TIMEOUT": "7.5"}) == 7.5
    assert resolve_stop_timeout(3.0, {"SKETCHGEN_STOP_TIMEOUT": "7.5"}) == 3.0
    assert resolve_stop_timeout(None, {"SKETCHGEN_STOP_TIMEOUT": ""}) == 20.0
    with pytest.raises(SketchgenError, match="SKETCHGEN_STOP_TIMEOUT"):
        resolve_stop_timeout(None, {"SKETCHGEN_STOP_TIMEOUT": "soon"})
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SketchgenError, match="--stop-timeout"):
            IngestConfig(stream="s", topic="t", stop_timeout_s=bad)
    assert IngestConfig(stream="s", topic="t").stop_timeout_s == 20.0


@pytest.mark.parametrize("flag, env, message", [
    (["--stop-timeout", "0"], {}, "--stop-timeout must be a positive number of seconds"),
    ([], {"SKETCHGEN_STOP_TIMEOUT": "-3"}, "--stop-timeout must be a positive number of seconds"),
    ([], {"SKETCHGEN_STOP_TIMEOUT": "soon"}, "SKETCHGEN_STOP_TIMEOUT must be a number of seconds"),
])
def test_a_bad_stop_timeout_is_refused_in_one_line_before_connecting(flag, env, message):
    # nothing listens on port 1: the stop timeout is checked before Redis is reached
    result = subprocess.run(
        [sys.executable, "-m", "sketchgen", "ingest", "s", "--topic", "t", "--redis", "redis://127.0.0.1:1/0", *flag],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
