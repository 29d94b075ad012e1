"""A learner never crash-loops on a bad checkpoint, and never mixes the incarnations of a stream.

Real Redis (the session's), real :class:`LearnerService` loops on threads, real HTTP. Malformed
checkpoint records are written straight into the stream's checkpoint hash
(``StreamKeys(name).checkpoint``): the leader trains anyway (from scratch), a standby keeps the
model it has, each distinct bad record is reported once (a log line, a counter, ``/status``).
A stream replaced with the same spec (a new incarnation) restarts training from scratch; the
old trainer's checkpoint is refused by Redis, and a checkpoint of the old incarnation is never
restored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid

import numpy as np
import pytest

from learner.checkpoint import checkpoint_bytes, load_checkpoint
from learner.generator import GeneratorConfig
from learner.http_api import serve
from learner.service import LearnConfig, LearnerService
from learner.trainer import Trainer
from sketch_store.leadership import CheckpointStore, Lease
from sketch_store.pilot import spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import Sketch
from sketchgen.datasets import make_dataset
from tests.processes import fetch, get, wait_for

pytestmark = pytest.mark.slow

GCONF = GeneratorConfig(latent=4, hidden=(32, 32), output=2)
REFUSED = "refusing the stored checkpoint"


def new_stream(redis_url: str, prefix: str) -> tuple[SketchStore, str]:
    """A circle stream of 5000 records flushed straight into Redis: (its store, its name)."""
    store = SketchStore(connect(redis_url))
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    data = make_dataset("circle", 5000, seed=3)
    store.create_stream(spec_from_pilot(data, m=64, seed=0, name=name))
    feed(store, name, data)
    return store, name


def feed(store: SketchStore, name: str, data: np.ndarray) -> None:
    sketch = Sketch.from_data(store.get_spec(name), data)
    store.flush(name, store.claim(name, "t", 0), 0, len(data), sketch.total, sketch.count, bounds=sketch.bounds)


@contextlib.contextmanager
def running(redis_url: str, name: str, **settings):
    """A LearnerService of ``name`` on a thread (its own Redis client) with its HTTP API: (service, port, thread)."""
    options = {"steps_per_round": 40, "checkpoint_every": 3600.0, "lease_ttl": 5.0, "device": "cpu",
               "generator": GCONF, **settings}
    service = LearnerService(LearnConfig(stream=name, **options), SketchStore(connect(redis_url)))
    server = serve(service, 0, host="127.0.0.1")
    loop = threading.Thread(target=service.run, daemon=True, name=f"learner-{name}")
    loop.start()
    try:
        yield service, server.server_port, loop
    finally:
        service.stop_event.set()
        loop.join(30)
        server.shutdown()
        server.server_close()
    assert not loop.is_alive()


def metric(port: int, name: str) -> float | None:
    """The value of the first sample of metric ``name`` scraped from ``/metrics`` (None if absent)."""
    code, body = fetch(port, "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]


def steps_advance(service: LearnerService, loop: threading.Thread, by: int, timeout: float = 60) -> int:
    """Wait until the service has trained ``by`` more steps (its loop alive throughout); returns the count."""
    start = service.status()["steps"] or 0
    return wait_for(lambda: loop.is_alive() and (service.status()["steps"] or 0) >= start + by and
                    service.status()["steps"], timeout, f"{by} more training steps")


def blob_for(store: SketchStore, name: str, incarnation: str | None, steps: int = 0) -> bytes:
    trainer = Trainer(store.get_spec(name), GCONF)
    trainer.steps = steps
    return checkpoint_bytes(trainer, incarnation=incarnation)


def tampered(blob: bytes) -> bytes:
    """``blob`` with one metadata digit changed (the digest no longer matches)."""
    marker = b'steps\\":'  # the metadata is JSON inside the header's JSON: its quotes are escaped
    position = blob.index(marker) + len(marker)
    return blob[:position] + (b"7" if blob[position:position + 1] != b"7" else b"8") + blob[position + 1:]


def good_record(store: SketchStore, name: str, **fields) -> dict[str, bytes]:
    spec, incarnation = store.get_spec(name), store.incarnation(name)
    record = {"model": blob_for(store, name, incarnation), "fingerprint": spec.fingerprint.encode(), "steps": b"0",
              "sketch_count": b"5000.0", "saved": repr(time.time()).encode(), "holder": b"someone",
              "incarnation": incarnation.encode()}
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def write_record(store: SketchStore, name: str, record: dict[str, bytes]) -> None:
    key = StreamKeys(name).checkpoint
    store.client.delete(key)
    store.client.hset(key, mapping=record)


BAD = {
    "no steps field": lambda store, name: good_record(store, name, steps=None),
    "steps not a number": lambda store, name: good_record(store, name, steps=b"lots"),
    "no model field": lambda store, name: good_record(store, name, model=None),
    "garbage model": lambda store, name: good_record(store, name, model=b"\x00" * 64),
    "tampered metadata": lambda store, name: good_record(store, name, model=tampered(
        blob_for(store, name, store.incarnation(name)))),
    "another incarnation": lambda store, name: good_record(store, name, incarnation=b"not-this-one"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_leader_starting_on_a_bad_checkpoint_trains_afresh_and_reports_it_once(redis_server, caplog, case):
    caplog.set_level(logging.INFO)
    store, name = new_stream(redis_server.url, "badstart")
    write_record(store, name, BAD[case](store, name))
    with running(redis_server.url, name) as (service, port, loop):
        steps_advance(service, loop, by=200)  # several rounds: it trains, from scratch
        assert service.is_leader and service.rounds >= 5
        code, status = get(port, "/status")
        assert code == 200 and status["leader"] is True and status["steps"] >= 200
        error = status["checkpoint_error"]
        assert error is not None and error["reason"] and abs(error["time"] - time.time()) < 120, status
        assert metric(port, "sketchgen_learner_checkpoint_rejected_total") == 1.0
        assert len(refusals(caplog)) == 1, refusals(caplog)  # one line, not one per loop
        assert get(port, "/readyz")[0] == 200 and get(port, "/sample?n=10")[0] == 200


def test_a_malformed_saved_time_never_stops_the_leader(redis_server, caplog):
    caplog.set_level(logging.INFO)
    store, name = new_stream(redis_server.url, "badsaved")
    with running(redis_server.url, name) as (service, port, loop):
        steps_advance(service, loop, by=40)
        store.client.hset(StreamKeys(name).checkpoint, mapping={"saved": b"not a time"})
        steps_advance(service, loop, by=200)
        assert loop.is_alive() and metric(port, "sketchgen_learner_checkpoint_rejected_total") == 1.0
        assert len(refusals(caplog)) == 1, refusals(caplog)
        assert get(port, "/status")[1]["checkpoint_error"]["reason"]


def test_a_standby_keeps_its_model_and_reports_each_distinct_bad_record_once(redis_server, caplog):
    caplog.set_level(logging.INFO)
    store, name = new_stream(redis_server.url, "badstandby")
    leader = Lease(store.client, name, "the-test-leads", ttl=120)  # the test holds the lease: the service stands by
    assert leader.acquire()
    CheckpointStore(store.client, name).save(leader, blob_for(store, name, store.incarnation(name), steps=123),
                                             store.get_spec(name).fingerprint, 123, 5000,
                                             incarnation=store.incarnation(name))
    with running(redis_server.url, name) as (service, port, loop):
        wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "the standby serving the checkpoint")
        first = np.array(get(port, "/sample?n=2000")[1]["samples"])
        cases = sorted(BAD)
        for count, case in enumerate(cases, start=1):
            write_record(store, name, BAD[case](store, name))
            wait_for(lambda count=count: metric(port, "sketchgen_learner_checkpoint_rejected_total") == count, 15,
                     f"the refusal of {case}")
        time.sleep(3)  # several more looks at the last bad record
        assert metric(port, "sketchgen_learner_checkpoint_rejected_total") == len(cases)
        assert len(refusals(caplog)) == len(cases), refusals(caplog)
        assert loop.is_alive() and not service.is_leader
        code, body = get(port, "/sample?n=2000")
        assert code == 200 and get(port, "/readyz")[0] == 200  # still serving the model it had
        assert abs(np.array(body["samples"]).std() - first.std()) < 0.2 * first.std()
        status = get(port, "/status")[1]
        assert status["checkpoint_error"]["reason"] and status["leader"] is False
        # a good checkpoint again: accepted, the error cleared
        CheckpointStore(store.client, name).save(leader, blob_for(store, name, store.incarnation(name), steps=456),
                                                 store.get_spec(name).fingerprint, 456, 5000,
                                                 incarnation=store.incarnation(name))
        wait_for(lambda: get(port, "/status")[1]["checkpoint_error"] is None, 15, "the error to clear")
        assert service.model.steps == 456


def test_a_standby_drops_the_model_of_a_replaced_stream(redis_server):
    store, name = new_stream(redis_server.url, "standbyinc")
    leader = Lease(store.client, name, "the-test-leads", ttl=120)
    assert leader.acquire()
    CheckpointStore(store.client, name).save(leader, blob_for(store, name, store.incarnation(name)),
                                             store.get_spec(name).fingerprint, 0, 5000,
                                             incarnation=store.incarnation(name))
    with running(redis_server.url, name) as (_service, port, loop):
        wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "the standby serving the checkpoint")
        store.create_stream(store.get_spec(name), replace=True)  # the same spec: only the incarnation changes
        assert Lease(store.client, name, "the-test-leads-again", ttl=120).acquire()
        wait_for(lambda: get(port, "/readyz")[0] == 503, 15, "the old model dropped")
        code, body = get(port, "/sample?n=5")
        assert code == 503 and body["error"]
        assert loop.is_alive()


def test_replacing_a_stream_with_the_same_spec_restarts_training_and_fences_the_old_trainer(redis_server, caplog):
    caplog.set_level(logging.INFO)
    store, name = new_stream(redis_server.url, "reincarnate")
    first = store.incarnation(name)
    records = CheckpointStore(store.client, name)
    with running(redis_server.url, name, checkpoint_every=0.05, lease_ttl=30.0) as (service, _port, loop):
        steps_advance(service, loop, by=400)
        old = records.load()
        assert old is not None and old.incarnation == first and old.steps >= 200
        with service.lock:  # the leader pauses between two slices of a round
            before, replaced_at = service.trainer.steps, time.time()
            store.create_stream(store.get_spec(name), replace=True)  # same spec, new incarnation, no data
            second = store.incarnation(name)
            assert second != first
            feed(store, name, make_dataset("circle", 5000, seed=4))
            write_record(store, name, {"model": old.model, "fingerprint": old.fingerprint.encode(),  # a stale copy
                                       "steps": str(old.steps).encode(), "sketch_count": b"5000.0",
                                       "saved": repr(time.time()).encode(), "holder": b"old",
                                       "incarnation": first.encode()})
            assert service.lease.acquire()  # the replace deleted the lease: the old trainer holds a new one
        # the old trainer ends its round: its checkpoint is refused by Redis, not written into the new stream (or,
        # when the lock fell between two rounds, the next round sees the new incarnation before any write)
        def refused() -> bool:
            return any("was recreated" in r.getMessage() and "not writing" in r.getMessage() for r in caplog.records)

        wait_for(lambda: refused() or service.trained_for == (store.get_spec(name).fingerprint, second), 90,
                 "the refused write of the old trainer, or a new trainer")
        # training restarts from scratch, not from the old model nor the stale copy of its checkpoint
        wait_for(lambda: service.trained_for == (store.get_spec(name).fingerprint, second), 90, "a new trainer")
        steps_advance(service, loop, by=80)
        restarted = min(p["steps"] for p in service.history.points(since=replaced_at) if p["steps"] is not None)
        assert restarted <= 2 * 40 < before, (restarted, before)  # one round or two, from 0
        assert any("training restarts from scratch" in r.getMessage() for r in caplog.records)
        if refused():
            assert any("another incarnation" in m for m in refusals(caplog)), refusals(caplog)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # every checkpoint from now on is of the new incarnation
            record = records.load()
            assert record is not None
            if record.holder != "old":
                assert record.incarnation == second, (record.incarnation, record.steps)
                assert load_checkpoint(record.model).incarnation == second
            time.sleep(0.1)
        assert records.load().incarnation == second


def test_status_and_metrics_show_no_error_without_refusals(redis_server):
    _store, name = new_stream(redis_server.url, "noerror")
    with running(redis_server.url, name, checkpoint_every=0.5) as (service, port, loop):
        steps_advance(service, loop, by=80)
        wait_for(lambda: get(port, "/status")[1]["checkpoint_age_seconds"] is not None, 15, "a checkpoint")
        status = get(port, "/status")[1]
        assert status["checkpoint_error"] is None
        assert metric(port, "sketchgen_learner_checkpoint_rejected_total") == 0.0
        assert json.loads(fetch(port, "/readyz")[1])["ready"] is True
