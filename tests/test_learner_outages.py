"""The learner through outages: its stream deleted, and its Redis killed and restarted.

A replica that cannot reach its stream stays alive (``/healthz``), says it is not ready
(``/readyz`` 503, so Kubernetes stops routing to it without restarting it), keeps serving
the model it has, and recovers by itself when the stream or the server is back.
"""

from __future__ import annotations

import contextlib
import signal
import uuid

import pytest

from sketch_store.pilot import spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import Sketch
from sketchgen.datasets import make_dataset
from sketchgen.local_stack import RedisServer, free_port
from tests.processes import get, wait_for
from tests.test_learner_service import learner

pytestmark = pytest.mark.slow


def seeded_stream(store: SketchStore, name: str) -> None:
    """A small circle stream with 5000 records flushed straight into Redis (no Kafka needed here)."""
    data = make_dataset("circle", 5000, seed=3)
    spec = spec_from_pilot(data, m=200, seed=0, name=name)
    store.create_stream(spec)
    sketch = Sketch.from_data(spec, data)
    store.flush(name, store.claim(name, "t", 0), 0, 5000, sketch.total, sketch.count)


@contextlib.contextmanager
def leader_and_standby(tmp_path, label: str, name: str, redis_url: str, exit_codes: list[int | None]):
    """Two `sketchgen learn` replicas (lease TTL 3 s), both ready: (leader port, standby port, leader, standby).

    On exit both get SIGTERM; their exit codes are appended to ``exit_codes``.
    """
    pa, pb = free_port(), free_port()
    a = learner(tmp_path, f"{label}-a", name, redis_url, pa, ttl=3.0)
    b = None
    try:
        wait_for(lambda: get(pa, "/readyz")[0] == 200, 60, "the leader's first model")
        b = learner(tmp_path, f"{label}-b", name, redis_url, pb, ttl=3.0)
        wait_for(lambda: get(pb, "/readyz")[0] == 200, 60, "a ready standby")
        yield pa, pb, a, b
    finally:
        for proc in (a, b):
            if proc is not None:
                exit_codes.append(proc.stop(signal.SIGTERM))
                if exit_codes[-1] != 0:
                    print(proc.tail())


def test_a_deleted_stream_makes_both_replicas_unready_not_dead(tmp_path, redis_server):
    store = SketchStore(connect(redis_server.url))
    name = f"gone-{uuid.uuid4().hex[:8]}"
    seeded_stream(store, name)
    codes: list[int | None] = []
    with leader_and_standby(tmp_path, "gone", name, redis_server.url, codes) as (pa, pb, a, b):
        store.delete_stream(name)
        for port in (pa, pb):
            wait_for(lambda port=port: get(port, "/readyz")[0] == 503, 20, f"/readyz 503 on :{port}")
        assert a.proc.poll() is None and b.proc.poll() is None, (a.tail(), b.tail())
        assert get(pa, "/healthz")[0] == 200 and get(pb, "/healthz")[0] == 200
        assert "stream" in a.tail() and "not found" in a.tail().lower()
        seeded_stream(store, name)  # recreated: one leads again, the other stands by
        for port in (pa, pb):
            wait_for(lambda port=port: get(port, "/readyz")[0] == 200, 60, f"/readyz 200 again on :{port}")
        leaders = [get(p, "/status")[1]["leader"] for p in (pa, pb)]
        assert sorted(leaders) == [False, True], leaders
    assert codes == [0, 0], codes


def test_redis_killed_and_restarted(tmp_path):
    with RedisServer(tmp_path / "redis") as server:  # its own server: killing the session's would hurt others
        store = SketchStore(connect(server.url))
        name = f"outage-{uuid.uuid4().hex[:8]}"
        seeded_stream(store, name)
        with leader_and_standby(tmp_path, "outage", name, server.url, []) as (pa, pb, a, b):
            wait_for(lambda: get(pb, "/sample?n=5")[0] == 200, 30, "the standby serving the checkpoint")
            server.kill()
            for port in (pa, pb):
                wait_for(lambda port=port: get(port, "/readyz")[0] == 503, 90, f"/readyz 503 on :{port}")
            # alive, and still serving the model each had
            assert a.proc.poll() is None and b.proc.poll() is None, (a.tail(), b.tail())
            for port in (pa, pb):
                assert get(port, "/healthz")[0] == 200
                code, body = get(port, "/sample?n=10")
                assert code == 200 and len(body["samples"]) == 10
            assert "redis" in a.tail().lower()
            server.restart()  # AOF on: the stream, its checkpoint and the lease's key come back
            for port in (pa, pb):
                wait_for(lambda port=port: get(port, "/readyz")[0] == 200, 90, f"/readyz 200 again on :{port}")
            leaders = wait_for(
                lambda: (lambda ls: ls if sorted(ls) == [False, True] else None)(
                    [get(p, "/status")[1].get("leader") for p in (pa, pb)]),
                30, "exactly one leader")
            assert sorted(leaders) == [False, True]
