"""Coordinate bounds: pure merging, sketch files, and their fold into Redis beside the sum (a real server)."""

from __future__ import annotations

import numpy as np
import pytest

from sketch_store.bounds import Bounds, merge_bounds
from sketch_store.errors import SpecError, SpecMismatchError
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import CorruptStoreError
from sketch_store.sketch import Sketch, load_sketch, save_sketch
from tests.store_helpers import delta, make_spec


def test_bounds_refuse_what_is_not_bounds():
    with pytest.raises(SpecError, match="above"):
        Bounds(np.array([1.0]), np.array([0.0]))
    with pytest.raises(SpecError, match="NaN"):
        Bounds(np.array([np.nan]), np.array([0.0]))
    with pytest.raises(SpecError, match="non-empty"):
        Bounds.of(np.empty((0, 2)))
    with pytest.raises(SpecError, match="bytes"):
        Bounds.from_bytes(b"\0" * 8, b"\0" * 8, d=2)
    with pytest.raises(SpecError, match="merge"):
        Bounds.of(np.zeros((1, 2))).merge(Bounds.of(np.zeros((1, 3))))


def test_merge_keeps_bounds_only_when_they_cover_every_row():
    a, b = Bounds.of(np.array([[0.0]])), Bounds.of(np.array([[3.0]]))
    assert merge_bounds(a, 1, b, 1).hi.tolist() == [3.0]
    assert merge_bounds(None, 0, b, 4) is b  # nothing before
    assert merge_bounds(a, 2, None, 0) is a  # an empty part adds nothing
    assert merge_bounds(a, 2, None, 5) is None  # rows of unknown bounds
    assert merge_bounds(None, 0, None, 0) is None


def test_sketch_merge_and_file_round_trip(tmp_path):
    spec = make_spec()
    x = np.random.default_rng(0).normal(size=(200, 2))
    whole = Sketch.from_data(spec, x)
    halves = Sketch.from_data(spec, x[:50]).merge(Sketch.from_data(spec, x[50:]))
    np.testing.assert_array_equal(halves.bounds.lo, x.min(axis=0))
    np.testing.assert_array_equal(halves.bounds.hi, whole.bounds.hi)
    assert Sketch.empty(spec).merge(whole).bounds is whole.bounds
    save_sketch(tmp_path / "s.npz", spec, whole)
    _, back = load_sketch(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.bounds.lo, whole.bounds.lo)
    save_sketch(tmp_path / "n.npz", spec, Sketch(whole.total, whole.count, whole.fingerprint))
    assert load_sketch(tmp_path / "n.npz")[1].bounds is None  # files without bounds read as before


def _rows(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)) * scale


def test_flushes_widen_a_partitions_bounds_and_a_replay_changes_nothing(store):
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    a, b = _rows(100, 1), _rows(50, 2, scale=5.0)
    da, db = Sketch.from_data(spec, a), Sketch.from_data(spec, b)
    assert store.flush("s", claim, 0, 100, da.total, da.count, bounds=da.bounds) == "ok"
    assert store.flush("s", claim, 0, 100, db.total, db.count, bounds=db.bounds) == "duplicate"
    assert store.flush("s", claim, 100, 150, db.total, db.count, bounds=db.bounds) == "ok"
    got = store.read_total("s").bounds
    both = np.vstack([a, b])
    np.testing.assert_array_equal(got.lo, both.min(axis=0))
    np.testing.assert_array_equal(got.hi, both.max(axis=0))
    # a second partition's rows widen the stream's bounds, not the first partition's
    other = store.claim("s", "t", 1)
    far = np.array([[100.0, -100.0]])
    dc = Sketch.from_data(spec, far)
    store.flush("s", other, 0, 1, dc.total, dc.count, bounds=dc.bounds)
    merged = store.read_total("s").bounds
    assert merged.hi[0] == 100.0 and merged.lo[1] == -100.0
    light = store.bounds("s")  # the read of the bound fields alone agrees with the full state's
    np.testing.assert_array_equal(light.lo, merged.lo)
    np.testing.assert_array_equal(light.hi, merged.hi)
    assert store.client.hstrlen(StreamKeys("s").partition("t", 0), "lo") == 16
    hi0 = np.frombuffer(store.client.hget(StreamKeys("s").partition("t", 0), "hi"), "<f8")
    np.testing.assert_array_equal(hi0, both.max(axis=0))


def test_rows_without_bounds_make_the_streams_unknown(store):
    spec = make_spec()
    store.create_stream(spec)
    old = delta(spec, 10, 0)  # a delta flushed without bounds (a worker that did not track them)
    store.flush("s", store.claim("s", "t", 0), 0, 10, old.total, old.count)
    claim = store.claim("s", "t", 0)
    new = delta(spec, 10, 1)
    store.flush("s", claim, 10, 20, new.total, new.count, bounds=new.bounds)
    assert store.read_total("s").bounds is None  # the first 10 rows are not covered
    # on a partition that keeps bounds, rows flushed without any delete them
    other = store.claim("s", "t", 1)
    store.flush("s", other, 0, 10, new.total, new.count, bounds=new.bounds)
    store.flush("s", other, 10, 20, old.total, old.count)
    assert not store.client.hexists(StreamKeys("s").partition("t", 1), "lo")
    # a delta of rejects only (no rows) leaves them as they are
    third = store.claim("s", "t", 2)
    store.flush("s", third, 0, 10, new.total, new.count, bounds=new.bounds)
    store.flush("s", third, 10, 15, np.zeros(2 * spec.m), 0)
    assert store.client.hexists(StreamKeys("s").partition("t", 2), "lo")


def test_rows_counted_past_the_bounds_make_them_stale_for_good(store):
    """A flush that raises the count without the bounds (a worker of a version that did not track them, running
    beside this one in a rolling upgrade) leaves stored bounds that no longer cover every row: never trusted again."""
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    d = delta(spec, 10, 0)
    store.flush("s", claim, 0, 10, d.total, d.count, bounds=d.bounds)
    key = StreamKeys("s").partition("t", 0)
    assert store.client.hget(key, "bounded") == b"10" and store.read_total("s").bounds is not None
    store.client.hincrby(key, "count", 5)  # what the older FLUSH does: sum and count, bounds untouched
    store.client.hset(key, "next_offset", 15)
    assert store.read_total("s").bounds is None and store.bounds("s") is None
    store.flush("s", claim, 15, 25, d.total, d.count, bounds=d.bounds)
    assert store.read_total("s").bounds is None
    assert not store.client.hexists(key, "lo") and not store.client.hexists(key, "bounded")


def test_bad_bounds_are_refused_before_anything_is_written(store):
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    d = delta(spec, 10, 0)
    with pytest.raises(SpecMismatchError, match="coordinates"):
        store.flush("s", claim, 0, 10, d.total, d.count, bounds=Bounds.of(np.zeros((1, 3))))
    store.flush("s", claim, 0, 10, d.total, d.count, bounds=d.bounds)
    key = StreamKeys("s").partition("t", 0)
    store.client.hset(key, "lo", b"\0" * 7)  # corrupted behind our back
    with pytest.raises(CorruptStoreError, match="bounds"):
        store.flush("s", claim, 10, 20, d.total, d.count, bounds=d.bounds)
    assert store.client.hget(key, "count") == b"10"  # the refused flush wrote nothing
    with pytest.raises(CorruptStoreError, match="bounds"):
        store.read_total("s")


def test_a_window_carries_the_all_time_bounds(store):
    spec = make_spec()
    store.create_stream(spec)
    d = delta(spec, 10, 0)
    store.flush("s", store.claim("s", "t", 0), 0, 10, d.total, d.count, bounds=d.bounds)
    window = Sketch(d.total, d.count, d.fingerprint)
    np.testing.assert_array_equal(store.with_bounds("s", window).bounds.hi, d.bounds.hi)
    assert store.with_bounds("s", Sketch.empty(spec)).bounds is None
