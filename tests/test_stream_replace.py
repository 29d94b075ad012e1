"""Recreating a stream fences every writer of the old one (real Redis).

A worker that claimed a partition of a stream, which is then replaced by a stream of the
same spec (same fingerprint), must not write into the new stream: the new stream's claims
take epochs above every old one, flushes and claims check the stream's incarnation, and
the deletion first removes the stream's meta in one step, so no flush can write while the
remaining keys are being deleted.
"""

from __future__ import annotations

import threading
import time

import pytest

from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_scripts import DROP
from sketch_store.redis_store import (
    BucketConfig,
    BucketDelta,
    SketchStore,
    StreamNotFoundError,
    StreamRecreatedError,
)
from sketch_store.spec import SketchSpec
from tests.store_helpers import delta, make_spec


def data_keys(store: SketchStore) -> list[bytes]:
    """Keys holding sketch data of stream ``s``: partitions, buckets and their indexes, the member set."""
    keys = StreamKeys("s")
    found = []
    for pattern in (":part:*", ":parts", ":bucket:*", ":buckets:*"):
        found += store.client.scan_iter(match=keys.pattern[:-2] + pattern, count=1000)
    return sorted(found)


def test_an_old_claim_cannot_write_into_the_replacement_stream(store):
    spec = make_spec()
    store.create_stream(spec)
    old = store.claim("s", "t", 0)
    d = delta(spec, 10, 0)
    assert store.flush("s", old, 0, 10, d.total, d.count) == "ok"
    SketchStore(store.client).create_stream(spec, replace=True)  # same spec, same fingerprint
    new = SketchStore(store.client).claim("s", "t", 0)  # the new stream's worker takes the partition
    with pytest.raises(StreamRecreatedError, match="stream 's' was recreated since this worker claimed partition t:0"):
        store.flush("s", old, 0, 10, d.total, d.count)
    assert store.read_total("s").count == 0
    assert store.client.hget(StreamKeys("s").partition("t", 0), "next_offset") is None
    assert new.next_offset is None and new.epoch > old.epoch
    assert new.incarnation == store.incarnation("s") != old.incarnation
    assert store.flush("s", new, 0, 10, d.total, d.count) == "ok"  # the new owner writes as usual


def test_a_flush_with_a_claim_of_the_old_stream_is_refused_before_any_new_claim(store):
    spec = make_spec()
    store.create_stream(spec)
    old = store.claim("s", "t", 0)
    store.create_stream(spec, replace=True)
    d = delta(spec, 10, 0)
    with pytest.raises(StreamRecreatedError):
        store.flush("s", old, 0, 10, d.total, d.count)
    assert data_keys(store) == []


def test_a_claim_expecting_the_old_incarnation_is_refused(store):
    spec = make_spec()
    store.create_stream(spec)
    first = store.claim("s", "t", 0)
    assert store.claim("s", "t", 1, incarnation=first.incarnation).incarnation == first.incarnation
    store.create_stream(spec, replace=True)
    before = store.client.hgetall(StreamKeys("s").partition("t", 0))
    with pytest.raises(StreamRecreatedError, match="recreated since this process read it"):
        store.claim("s", "t", 0, incarnation=first.incarnation)
    assert store.client.hgetall(StreamKeys("s").partition("t", 0)) == before == {}


def test_between_dropping_the_meta_and_deleting_the_rest_nothing_can_be_written(store):
    """The first step of a deletion alone: old writers find the stream missing and write nothing."""
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    d = delta(spec, 10, 0)
    now = 1_000_000_000.0
    bucket = [BucketDelta("fine", 999_999_990, d.total, 10)]
    store.flush("s", claim, 0, 10, d.total, d.count, bucket, now=now)
    keys = StreamKeys("s")
    drop = store.client.register_script(DROP)
    assert drop(keys=[keys.meta, keys.parts, keys.epoch_counter, keys.partition("t", 0)], args=["t:0"])[0] == b"ok"
    before = {k: store.client.dump(k) for k in store.client.scan_iter(match=keys.pattern)}
    with pytest.raises(StreamNotFoundError):
        store.flush("s", claim, 10, 20, d.total, d.count, [BucketDelta("fine", 999_999_980, d.total, 10)], now=now)
    with pytest.raises(StreamNotFoundError):
        SketchStore(store.client).claim("s", "t", 1)
    after = {k: store.client.dump(k) for k in store.client.scan_iter(match=keys.pattern)}
    assert after == before and keys.meta.encode() not in after


def test_a_deletion_raises_the_epoch_counter_to_partitions_it_had_not_seen(store):
    """Partition epochs stored without the counter (older data) still bound the successor's epochs."""
    spec = make_spec()
    store.create_stream(spec)
    d = delta(spec, 1, 0)
    store.flush("s", store.claim("s", "t", 0), 0, 1, d.total, 1)
    store.client.hset(StreamKeys("s").partition("t", 0), "epoch", 41)
    store.client.delete(StreamKeys("s").epoch_counter)
    assert store.claim("s", "t", 1).epoch == 1
    store.create_stream(spec, replace=True)
    assert store.client.get(StreamKeys("s").epoch_counter) == b"41"
    assert store.claim("s", "t", 0).epoch == 42


def test_epochs_never_go_backwards_across_a_replace(store):
    spec = make_spec()
    store.create_stream(spec)
    old = [store.claim("s", "t", p).epoch for p in (0, 0, 0, 1)]
    store.create_stream(spec, replace=True)
    new = [store.claim("s", "t", p).epoch for p in (0, 1, 2)]
    assert min(new) > max(old), (old, new)
    store.delete_stream("s")
    store.create_stream(spec)
    assert store.claim("s", "t", 0).epoch > max(new)


def hammer(store: SketchStore, claim, spec: SketchSpec, stop: threading.Event, outcomes: list[str]) -> None:
    """Flush with ``claim`` as fast as possible, each flush into a bucket of its own, until ``stop``."""
    d = delta(spec, 1, 0)
    offset, bucket = 0, 1_000_000_000
    while not stop.is_set():
        bucket += 10
        try:
            store.flush("s", claim, offset, offset + 1, d.total, 1, [BucketDelta("fine", bucket, d.total, 1)],
                        now=float(bucket))
            offset += 1
            outcomes.append("ok")
        except SketchgenError as exc:  # missing, recreated, fenced: the old claim is dead
            outcomes.append(type(exc).__name__)


@pytest.mark.parametrize("run", range(4))
def test_a_replace_racing_an_old_flusher_leaves_the_new_stream_empty(redis_server, store, run):
    spec = make_spec()
    keep = 10**9  # buckets of any age are kept, so every flush writes a bucket key
    buckets = BucketConfig(fine_seconds=10, fine_keep=keep, coarse_seconds=300, coarse_keep=keep)
    store.create_stream(spec, buckets=buckets)
    # many keys, so deleting them takes many round trips, during which the flusher runs
    with store.client.pipeline(transaction=False) as pipe:
        for i in range(20_000):
            pipe.hset(StreamKeys("s").bucket("coarse", 300 * i), "count", 0)
        pipe.execute()
    writer = SketchStore(connect(redis_server.url))
    claim = writer.claim("s", "t", 0)
    stop, outcomes = threading.Event(), []
    thread = threading.Thread(target=hammer, args=(writer, claim, spec, stop, outcomes))
    thread.start()
    try:
        while outcomes.count("ok") < 50:
            time.sleep(0.005)
        store.create_stream(spec, buckets=buckets, replace=True)
        n_before = len(outcomes)
        while len(outcomes) < n_before + 50:
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(10)
        writer.client.close()
    assert outcomes.count("ok") >= 50 and outcomes[-1] != "ok", outcomes[-5:]
    assert data_keys(store) == []
    state = store.state("s")
    assert state.sketch.count == 0 and state.partitions == []
    assert store.read_window("s", 10**9, now=2e9).count == 0
