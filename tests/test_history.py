"""The learner's history ring buffer: bounded in memory and in its ``/history`` payload.

Unit tests of :class:`learner.history.History`, then a real learner (in this process, on the
session's throwaway Redis, answering over a real socket) running many more rounds than its
history holds: ``/history`` keeps exactly ``history_size`` points, the newest, and its payload
stops growing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from learner.generator import GeneratorConfig
from learner.history import History, HistoryPoint
from learner.http_api import serve
from learner.service import LearnConfig, LearnerService
from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec
from tests.processes import fetch

#: A generous upper bound of one point's JSON size (a full point is about 200 bytes).
POINT_BYTES = 400


def point(t: float, records: float = 0.0, **kw) -> HistoryPoint:
    return HistoryPoint(time=t, records=records, leader=True, **kw)


def test_ring_buffer_keeps_the_newest_maxlen_points():
    h = History(maxlen=50)
    for i in range(1000):
        h.record(point(float(i), loss=1.0, floor=0.1, drift=0.5, threshold=5.0, round=i, steps=10 * i))
        assert len(h) == min(i + 1, 50)
    times = [p["time"] for p in h.points()]
    assert times == [float(i) for i in range(950, 1000)]
    assert [p["time"] for p in h.points(since=997.0)] == [998.0, 999.0]
    assert h.points(since=5000.0) == []


def test_payload_size_is_bounded_by_maxlen():
    h = History(maxlen=100)
    sizes = []
    for i in range(2000):
        h.record(point(time.time() + i, records=1e9 + i, loss=0.123456789, floor=0.0123456789, drift=1.23456789,
                       threshold=5.0, round=10**6 + i, steps=10**8 + i))
        if i % 500 == 499:
            sizes.append(len(json.dumps(h.points())))
    assert sizes[0] <= 100 * POINT_BYTES
    assert max(sizes) - min(sizes) <= 100  # full from the first measure on: the size no longer grows


def test_rate_is_records_per_second_over_the_span():
    h = History(maxlen=100)
    assert h.rate() is None
    h.record(point(0.0, records=0.0))
    assert h.rate() is None  # one point: no rate
    for t in range(1, 31):
        h.record(point(float(t), records=250.0 * t))
    assert h.rate(span=10.0) == pytest.approx(250.0)
    h.record(point(31.0, records=0.0))  # the stream was recreated: the count went down
    assert h.rate(span=10.0) is None


def test_non_finite_values_become_null_and_bad_sizes_are_refused():
    h = History(maxlen=2)
    h.record(point(1.0, loss=math.nan, drift=math.inf))
    text = json.dumps(h.points(), allow_nan=False)  # raises on NaN / Infinity
    assert json.loads(text)[0]["loss"] is None and json.loads(text)[0]["drift"] is None
    with pytest.raises(ValueError):
        History(maxlen=0)
    with pytest.raises(SketchgenError):
        LearnConfig(stream="s", history_size=0)


def test_learn_refuses_a_bad_history_size():
    proc = subprocess.run([sys.executable, "-m", "sketchgen", "learn", "s", "--history-size", "0", "--redis",
                           "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "history size must be at least 1" in proc.stderr, proc.stderr


def feed(store: SketchStore, name: str, x: np.ndarray) -> None:
    """Fold ``x`` into stream ``name`` the way an ingest worker does (a claimed partition, one flush)."""
    spec = store.get_spec(name)
    sketch = Sketch.from_data(spec, x)
    claim = store.claim(name, "t", 0)
    store.flush(name, claim, 0, len(x), sketch.total, sketch.count)


@pytest.mark.slow
def test_history_endpoint_stays_at_maxlen_over_many_rounds(redis_server):
    name = f"hist-{uuid.uuid4().hex[:8]}"
    store = SketchStore(connect(redis_server.url))
    store.create_stream(SketchSpec.create(d=2, m=64, law="gaussian", sigma=1.0, seed=0, name=name))
    feed(store, name, np.random.default_rng(0).normal(size=(500, 2)))
    maxlen = 15
    config = LearnConfig(stream=name, steps_per_round=2, checkpoint_every=3600, lease_ttl=10, history_size=maxlen,
                         generator=GeneratorConfig(latent=2, hidden=(8,), output=2), device="cpu")
    service = LearnerService(config, store)
    server = serve(service, 0, host="127.0.0.1")
    port = server.server_port
    loop = threading.Thread(target=service.run, daemon=True)
    loop.start()
    try:
        sizes = []
        for rounds in (3 * maxlen, 6 * maxlen):
            deadline = time.monotonic() + 120
            while service.rounds < rounds and time.monotonic() < deadline and loop.is_alive():
                time.sleep(0.2)
            assert service.rounds >= rounds, f"only {service.rounds} rounds"
            code, body = fetch(port, "/history", timeout=30)
            assert code == 200
            hist = json.loads(body)
            points = hist["points"]
            assert len(points) == maxlen == hist["maxlen"] == len(service.history)
            assert all(p["leader"] for p in points) and hist["leader"] is True
            assert [p["round"] for p in points] == sorted(p["round"] for p in points)
            assert points[-1]["round"] >= rounds - 1  # the newest are kept, the oldest dropped
            assert points[0]["round"] >= rounds - maxlen - 5
            assert points[-1]["records"] == 500 and points[-1]["loss"] > 0 and points[-1]["floor"] > 0
            assert hist["spec"]["d"] == 2 and hist["spec"]["m"] == 64 and hist["spec"]["law"] == "gaussian"
            sizes.append(len(body))
        assert max(sizes) <= maxlen * POINT_BYTES + 2000
        assert abs(sizes[1] - sizes[0]) <= 200, sizes  # twice the rounds, the same payload
        # incremental reads: only points newer than `since`
        newest = hist["points"][-1]["time"]
        code, body = fetch(port, f"/history?since={newest}", timeout=30)
        assert code == 200 and all(p["time"] > newest for p in json.loads(body)["points"])
        assert fetch(port, "/history?since=yesterday", timeout=30)[0] == 400
        assert_standby_history(store, config)
    finally:
        service.stop_event.set()
        loop.join(30)
        server.shutdown()
        server.server_close()
    assert not loop.is_alive()


def assert_standby_history(store: SketchStore, config: LearnConfig) -> None:
    """A second replica of the same stream stands by; its history has points too (records, no loss)."""
    standby = LearnerService(config, store)
    loop = threading.Thread(target=standby.run, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while len(standby.history) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        hist = standby.history_payload()
        assert len(hist["points"]) >= 3 and hist["leader"] is False
        assert all(p["leader"] is False and p["loss"] is None and p["records"] == 500 for p in hist["points"])
    finally:
        standby.stop_event.set()
        loop.join(30)
