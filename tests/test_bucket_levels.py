"""Bucket levels against a real Redis: the default three levels, streams stored with the old two, validation."""

from __future__ import annotations

import json

import pytest

from ingest.partition_buffer import PartitionBuffer
from sketch_store.buckets import DEFAULT_BUCKETS, BucketConfig
from sketch_store.errors import SketchgenError
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import BucketDelta
from sketchgen.cli import build_parser
from sketchgen.streaming import buckets_from_args
from tests.store_helpers import delta, make_spec

DAY = 86400
#: The ``buckets`` field a stream created before the long level existed holds (json.dumps of the old dataclass).
OLD_JSON = json.dumps({"fine_seconds": 10, "fine_keep": 3600, "coarse_seconds": 300, "coarse_keep": 7 * DAY})


def flush_rows(store, name: str, timestamps: list[float], now: float) -> None:
    """One row per timestamp, through a PartitionBuffer (as the worker does), in one flush."""
    spec = store.get_spec(name)
    buf = PartitionBuffer(0, spec.m, store.bucket_config(name))
    for i, ts in enumerate(timestamps):
        d = delta(spec, 1, i)
        buf.add(d.total, 1, ts)
    buf.advance(len(timestamps))
    claim = store.claim(name, "t", 0)
    assert store.flush(name, claim, 0, len(timestamps), buf.total, buf.count, buf.bucket_deltas(), now=now) == "ok"


def test_a_new_stream_has_three_levels_and_long_windows_read_the_long_level(store):
    store.create_stream(make_spec())
    assert store.bucket_config("s") == DEFAULT_BUCKETS
    now = 1_800_000_000.0
    flush_rows(store, "s", [now - 30, now - 2 * 3600, now - 3 * DAY], now)
    spans = {level: store.bucket_span("s", level) for level in ("fine", "coarse", "long")}
    assert [s[2] for s in spans.values()] == [1, 2, 3]  # the 3-day-old row is past the coarse retention
    assert store.read_window("s", 60, now=now).count == 1  # fine
    assert store.read_window("s", 3 * 3600, now=now).count == 2  # coarse (1 day covers it)
    assert store.read_window("s", 4 * DAY, now=now).count == 3  # long
    assert store.read_range("s", DAY, 7 * DAY, now=now).count == 1
    keys = StreamKeys("s")
    ttl = store.client.ttl(keys.bucket("long", int(now - 3 * DAY) // 3600 * 3600))
    assert ttl > 0  # expires by itself (EXPIREAT in real time, far ahead of this test's fake clock)


def test_a_stream_stored_with_the_old_two_levels_loads_and_reads_as_before(store):
    store.create_stream(make_spec())
    store.client.hset(StreamKeys("s").meta, "buckets", OLD_JSON)  # as a release before the long level wrote it
    store._forget("s")
    cfg = store.bucket_config("s")
    assert cfg.names == ("fine", "coarse") and cfg == BucketConfig()
    assert cfg.to_json() == OLD_JSON
    now = 1_800_000_000.0
    flush_rows(store, "s", [now - 30, now - 3 * DAY], now)
    assert store.bucket_span("s", "long") is None
    assert store.read_window("s", 4 * DAY, now=now).count == 2  # coarse, kept 7 days
    with pytest.raises(SketchgenError, match="unknown bucket level 'long'"):
        d = delta(make_spec(), 1, 0)
        store.flush("s", store.claim("s", "t", 1), 0, 1, d.total, 1, [BucketDelta("long", 0, d.total, 1)], now=now)


@pytest.mark.parametrize("fields, message", [
    (dict(fine_seconds=0), "must be positive"),
    (dict(coarse_seconds=25), "coarse bucket resolution .25 s. must be a multiple of the fine one .10 s."),
    (dict(long_seconds=3600), "needs both a resolution and a retention"),
    (dict(long_seconds=1000, long_keep=7 * DAY), "long bucket resolution .1000 s. must be a multiple"),
    (dict(coarse_keep=600), "coarse bucket retention .600 s. must be at least the fine one .3600 s."),
    (dict(long_seconds=3600, long_keep=DAY), "long bucket retention .86400 s. must be at least the coarse"),
])
def test_invalid_bucket_configs_are_refused_in_one_line(fields, message):
    with pytest.raises(SketchgenError, match=message):
        BucketConfig(**fields)


def create_args(*flags: str):
    return build_parser().parse_args(["create", "s", "--dim", "2", *flags])


def test_create_flags_set_every_level_and_can_drop_the_long_one():
    assert buckets_from_args(create_args()) == DEFAULT_BUCKETS
    cfg = buckets_from_args(create_args("--fine-bucket", "5", "--coarse-keep", "7200", "--long-bucket", "1800",
                                        "--long-keep", "86400"))
    assert [(lv.name, lv.seconds, lv.keep) for lv in cfg.levels] == [
        ("fine", 5, 3600), ("coarse", 300, 7200), ("long", 1800, 86400)]
    old = buckets_from_args(create_args("--coarse-keep", str(7 * DAY), "--long-bucket", "0"))
    assert old == BucketConfig()  # the two levels of older releases
    with pytest.raises(SketchgenError, match="no read would use it: raise --long-keep or drop it"):
        buckets_from_args(create_args("--coarse-keep", str(7 * DAY)))
