"""Membership must not depend on the workers' clocks agreeing.

Two `sketchgen ingest` workers share a 4-partition topic; one runs under Debian's ``faketime``
with its clock 90 s ahead. If liveness were judged by each worker's own clock, the skewed one
would evict the other at every heartbeat (its "now" lies past everybody's expiry) and the
partitions would change hands, with fencing, every second or two. Judged by Redis's clock the
assignment settles at two partitions each and stays there; the count stays exact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaProducer

from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.produce import ensure_topic
from tests.chaos import skew_env
from tests.processes import wait_for
from tests.store_helpers import assert_exact

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("faketime") is None, reason="Debian's faketime is not installed"),
]

#: The skewed worker's clock offset (s). libfaketime is preloaded into the worker itself (tests.chaos.skew_env),
#: not run through the ``faketime`` wrapper: the wrapper forks, so stopping it left the worker running.
SKEW = 90.0
TAKE = re.compile(r"took \S+:\d+ at")


def _takes(log) -> int:
    return len(TAKE.findall(log.read_text(errors="replace")))


def test_a_worker_with_a_skewed_clock_neither_evicts_nor_fences_the_others(tmp_path, kafka_server, redis_server):
    name = f"skew-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-events"
    store = SketchStore(connect(redis_server.url))
    spec = SketchSpec.create(d=2, m=16, sigma=1.0, seed=2, name=name)
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, 4)
    cmd = [sys.executable, "-m", "sketchgen", "ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
           "--redis", redis_server.url, "--flush-ms", "200"]
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], capture_output=True,
                           text=True, timeout=30, env={**os.environ, **skew_env(SKEW)})
    assert float(probe.stdout) - time.time() > 60, "faketime did not skew Python's clock"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / "plain.log", tmp_path / "skewed.log"]
    procs = [
        subprocess.Popen(cmd, stdout=open(logs[0], "wb"), stderr=subprocess.STDOUT, env=env),
        subprocess.Popen(cmd, stdout=open(logs[1], "wb"), stderr=subprocess.STDOUT, env={**env, **skew_env(SKEW)}),
    ]
    rows = np.random.default_rng(0).normal(size=(3000, 2))
    try:
        wait_for(lambda: all(_takes(log) >= 2 for log in logs), 60, "both workers to hold partitions")
        time.sleep(8)  # past one member TTL: any eviction would have happened
        settled = [_takes(log) for log in logs]
        producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=5)
        for i, row in enumerate(rows):
            producer.send(topic, json.dumps(row.tolist()).encode(), partition=i % 4)
            if i % 100 == 0:
                time.sleep(0.05)
        producer.flush()
        producer.close()
        time.sleep(6)
        wait_for(lambda: store.read_total(name).count >= len(rows), 60, "every row folded")
        later = [_takes(log) for log in logs]
        assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    text = "\n".join(log.read_text(errors="replace")[-3000:] for log in logs)
    assert later == settled, f"partitions kept changing hands: takes {settled} -> {later}\n{text}"
    assert "claimed by another worker" not in text
    assert_exact(store.read_total(name), spec, rows)
