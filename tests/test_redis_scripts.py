"""The store's Lua scripts against a real Redis: each fails whole, and each declares every key it touches.

* A script that finds something it cannot use (a stored sum of the wrong length, a
  non-integer count, a key of the wrong type, malformed arguments) refuses before its first
  write: every key of the stream keeps its exact bytes (every field, member, score and expiry).
* Every key a script reads or writes is in its ``KEYS`` (Redis Cluster rules): checked by
  watching the server with ``MONITOR``, which shows each command a script runs, and asking
  the server itself (``COMMAND GETKEYS``) which arguments of that command are keys.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field

import pytest
import redis
from redis.crc import key_slot

from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_scripts import FLUSH, READ_BUCKETS, READ_PARTS
from sketch_store.redis_store import (
    BucketConfig,
    BucketDelta,
    CorruptStoreError,
    CorruptSumError,
    SketchStore,
    StoreScriptError,
    flush_call,
)
from sketch_store.spec import SketchSpec
from tests.store_helpers import delta, make_spec


def value_of(client: redis.Redis, key: bytes) -> object:
    """The full content of one key, comparable (a hash as a dict, a set as a set, a zset with scores)."""
    kind = client.type(key)
    if kind == b"hash":
        return client.hgetall(key)
    if kind == b"set":
        return client.smembers(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    return client.get(key)


def snapshot(client: redis.Redis, name: str) -> dict[bytes, tuple[bytes, object, int]]:
    """Every key of the stream: its type, full content, and absolute expiry (``PEXPIRETIME``)."""
    keys = sorted(client.scan_iter(match=StreamKeys(name).pattern, count=1000))
    return {k: (client.type(k), value_of(client, k), int(client.execute_command("PEXPIRETIME", k))) for k in keys}


def bucket_start(now: float) -> int:
    return int(now) // 10 * 10


def flushed_stream(store: SketchStore) -> tuple[SketchSpec, object, float]:
    """A stream ``s`` with one flush of 10 records into partition t:0 and one fine bucket."""
    spec = make_spec()
    store.create_stream(spec)
    claim = store.claim("s", "t", 0)
    now = float(int(time.time()))
    d = delta(spec, 10, 0)
    store.flush("s", claim, 0, 10, d.total, d.count, [BucketDelta("fine", bucket_start(now), d.total, 10)], now=now)
    return spec, claim, now


# -- failing whole ------------------------------------------------------------------------


def test_flush_into_a_bucket_with_a_corrupt_sum_changes_nothing(store):
    spec, claim, now = flushed_stream(store)
    bucket = StreamKeys("s").bucket("fine", bucket_start(now))
    store.client.hset(bucket, "sum", b"\x00" * 24)  # 3 doubles where 32 belong
    before = snapshot(store.client, "s")
    d = delta(spec, 5, 1)
    with pytest.raises(CorruptSumError, match=re.escape(f"corrupt sum in {bucket}: sum is 24 bytes, expected 256")):
        store.flush("s", claim, 10, 15, d.total, d.count, [BucketDelta("fine", bucket_start(now), d.total, 5)], now=now)
    assert snapshot(store.client, "s") == before


def test_flush_into_a_partition_with_a_corrupt_sum_changes_nothing(store):
    spec, claim, now = flushed_stream(store)
    part = StreamKeys("s").partition("t", 0)
    store.client.hset(part, "sum", b"\x00" * 40)
    before = snapshot(store.client, "s")
    d = delta(spec, 5, 1)
    with pytest.raises(CorruptSumError, match="corrupt sum in " + re.escape(part) + ".*changed nothing"):
        store.flush("s", claim, 10, 15, d.total, d.count, [BucketDelta("fine", bucket_start(now), d.total, 5)], now=now)
    assert snapshot(store.client, "s") == before


def test_flush_into_a_bucket_with_a_non_integer_count_changes_nothing(store):
    spec, claim, now = flushed_stream(store)
    bucket = StreamKeys("s").bucket("fine", bucket_start(now))
    store.client.hset(bucket, "count", "ten")
    before = snapshot(store.client, "s")
    d = delta(spec, 5, 1)
    with pytest.raises(CorruptStoreError, match=re.escape(bucket) + ": count is .*not an integer"):
        store.flush("s", claim, 10, 15, d.total, d.count, [BucketDelta("fine", bucket_start(now), d.total, 5)], now=now)
    assert snapshot(store.client, "s") == before


def test_flush_into_a_key_of_the_wrong_type_changes_nothing(store):
    spec, claim, now = flushed_stream(store)
    index = StreamKeys("s").bucket_index("coarse")
    store.client.set(index, "not a sorted set")
    before = snapshot(store.client, "s")
    d = delta(spec, 5, 1)
    buckets = [
        BucketDelta("fine", bucket_start(now), d.total, 5), BucketDelta("coarse", int(now) // 300 * 300, d.total, 5)
    ]
    with pytest.raises(CorruptStoreError, match=re.escape(index) + " is a string, expected a zset"):
        store.flush("s", claim, 10, 15, d.total, d.count, buckets, now=now)
    assert snapshot(store.client, "s") == before


def test_a_claim_over_a_corrupt_epoch_changes_nothing(store):
    flushed_stream(store)
    store.client.hset(StreamKeys("s").partition("t", 0), "epoch", "1.5")
    before = snapshot(store.client, "s")
    with pytest.raises(CorruptStoreError, match=r"epoch is .*not an integer"):
        store.claim("s", "t", 0)
    assert snapshot(store.client, "s") == before


def test_reads_refuse_a_corrupt_sum(store):
    _, _, now = flushed_stream(store)
    store.client.hset(StreamKeys("s").bucket("fine", bucket_start(now)), "sum", b"\x00" * 8)
    with pytest.raises(CorruptSumError, match="corrupt sum in bucket fine"):
        store.read_window("s", 60, now=now)
    store.client.hset(StreamKeys("s").partition("t", 0), "sum", b"\x00" * 8)
    with pytest.raises(CorruptSumError, match="corrupt sum in partition t:0"):
        store.state("s")


def _args_with(args: list[object], i: int, value: object) -> list[object]:
    return [*args[:i], value, *args[i + 1 :]]


#: Malformed FLUSH calls: (what, change to the valid KEYS and ARGV). ARGV indexes are 0-based here.
MALFORMED = {
    "bucket arguments missing": lambda k, a: (k, a[:-2]),
    "bucket keys without arguments": lambda k, a: ([*k, k[-2], k[-1]], a),
    "odd bucket keys": lambda k, a: (k[:-1], a),
    "epoch not a number": lambda k, a: (k, _args_with(a, 3, "x")),
    "count not an integer": lambda k, a: (k, _args_with(a, 8, "1.5")),
    "now not a number": lambda k, a: (k, _args_with(a, 6, "nan")),
    "offsets reversed": lambda k, a: (k, _args_with(a, 5, 9)),
    "delta not whole doubles": lambda k, a: (k, _args_with(a, 7, b"\x00" * 255)),
    "bucket delta of another length": lambda k, a: (k, _args_with(a, 12, b"\x00" * 248)),
    "bucket expiry not an integer": lambda k, a: (k, _args_with(a, 10, "soon")),
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
def test_the_flush_script_refuses_malformed_arguments_before_writing(store, what):
    spec, claim, now = flushed_stream(store)
    d = delta(spec, 5, 1)
    keys, args = flush_call(StreamKeys("s"), spec.fingerprint, claim, 10, 15, d.total, 5,
                            [BucketDelta("fine", bucket_start(now), d.total, 5)], BucketConfig(), now)
    assert store.client.register_script(FLUSH)(keys=keys, args=args) == [b"ok"]  # the valid call works
    keys, args = flush_call(StreamKeys("s"), spec.fingerprint, claim, 15, 20, d.total, 5,
                            [BucketDelta("fine", bucket_start(now), d.total, 5)], BucketConfig(), now)
    before = snapshot(store.client, "s")
    bad_keys, bad_args = MALFORMED[what](keys, args)
    reply = store.client.register_script(FLUSH)(keys=bad_keys, args=bad_args)
    assert reply[0] == b"badarg", reply
    assert snapshot(store.client, "s") == before


def test_reads_over_a_stale_listing_answer_retry_with_the_current_one(store):
    now = flushed_stream(store)[2]
    keys = StreamKeys("s")
    reply = store.client.register_script(READ_PARTS)(keys=[keys.meta, keys.parts], args=[])
    assert reply == [b"retry", b"t:0"]
    index = keys.bucket_index("fine")
    reply = store.client.register_script(READ_BUCKETS)(keys=[keys.meta, index], args=[0])
    assert reply == [b"retry", str(bucket_start(now)).encode()]
    # a key list that does not match the listing is refused, not read
    wrong = [keys.meta, keys.parts, keys.partition("t", 1)]
    assert store.client.register_script(READ_PARTS)(keys=wrong, args=["t:0"])[0] == b"badarg"


def test_a_listing_that_keeps_changing_gives_up_after_a_few_attempts():
    calls = []

    def run(listing):
        calls.append(listing)
        return [b"retry", str(len(calls)).encode()]

    with pytest.raises(StoreScriptError, match="kept changing"):
        SketchStore._listed(run, [], "partition set")
    assert calls[1:] == [[str(i).encode()] for i in range(1, len(calls))]
    assert SketchStore._listed(lambda listing: [b"ok", *listing], [b"a"], "x") == [b"ok", b"a"]


# -- every key in KEYS ------------------------------------------------------------------------

_LINE = re.compile(rb"^\d+\.\d+ \[\d+ ([^\]]*)\] (.*)$", re.S)
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("a"): b"\a", ord("b"): b"\b",
            ord("\\"): b"\\", ord('"'): b'"'}


def monitor_args(text: bytes) -> list[bytes]:
    """The arguments of one MONITOR line: double-quoted, with ``\\xHH`` and C escapes."""
    args, i = [], 0
    while i < len(text):
        assert text[i : i + 1] == b'"', text
        out, i = bytearray(), i + 1
        while text[i : i + 1] != b'"':
            if text[i : i + 1] == b"\\":
                nxt = text[i + 1]
                if nxt == ord("x"):
                    out += bytes([int(text[i + 2 : i + 4], 16)])
                    i += 4
                    continue
                out += _ESCAPES[nxt]
                i += 2
                continue
            out += text[i : i + 1]
            i += 1
        args.append(bytes(out))
        i += 2  # closing quote and the separating space
    return args


@dataclass
class ScriptRun:
    """One EVAL/EVALSHA as MONITOR showed it: the script's SHA (or text), declared keys, commands it ran."""

    script: bytes
    declared: list[bytes]
    commands: list[list[bytes]] = field(default_factory=list)


class KeyAudit:
    """Watches a Redis server with MONITOR; reports the keys each script touched without declaring them."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.monitor = self.client.monitor()
        self.monitor.__enter__()  # sends MONITOR and waits for its OK

    def runs(self) -> list[ScriptRun]:
        """Stop watching; every script run seen so far, with the commands it ran."""
        token = f"audit-end-{uuid.uuid4().hex}".encode()
        self.client.echo(token)
        runs: list[ScriptRun] = []
        while True:
            line = self.monitor.connection.read_response()
            source, rest = _LINE.match(line).groups()
            args = monitor_args(rest)
            if args == [b"ECHO", token] or args == [b"echo", token]:
                break
            if source == b"lua":
                runs[-1].commands.append(args)
            elif args[0].upper() in (b"EVAL", b"EVALSHA"):
                runs.append(ScriptRun(args[1], args[3 : 3 + int(args[2])]))
        self.monitor.__exit__()
        self.client.close()
        return runs

    def keys_of(self, command: list[bytes]) -> list[bytes]:
        """The key arguments of ``command``, as the server itself tells them apart (``COMMAND GETKEYS``)."""
        try:
            keys = self.client.execute_command("COMMAND GETKEYS", *command)
            return [k.encode() if isinstance(k, str) else k for k in keys]
        except redis.ResponseError:  # a command without key arguments (TIME, ...)
            return []

    def violations(self, runs: list[ScriptRun]) -> list[str]:
        """Undeclared keys touched, and declared key lists spanning several cluster slots."""
        found = []
        for run in runs:
            declared = set(run.declared)
            for command in run.commands:
                for key in self.keys_of(command):
                    if key not in declared:
                        found.append(f"{command[0].decode()} on undeclared key {key.decode()}")
            if len({key_slot(k) for k in declared}) > 1:
                found.append(f"declared keys in several slots: {sorted(declared)}")
        return found


@pytest.fixture
def audit(redis_server):
    watcher = KeyAudit(redis_server.url)
    yield watcher
    if watcher.monitor.connection is not None:
        watcher.monitor.__exit__()


#: The all-time and bucket reads as the store ran them before their keys were declared: they
#: build partition and bucket key names from a prefix. Kept to show that the audit catches them.
UNDECLARED_READ_PARTS = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
local upd = redis.call('HGET', KEYS[1], 'updated')
local out = {fp or false, upd or false}
local prefix = string.sub(KEYS[2], 1, #KEYS[2] - 5) .. 'part:'
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local h = redis.call('HMGET', prefix .. member, 'sum', 'count', 'next_offset', 'epoch', 'updated')
  table.insert(out, {member, h[1] or false, h[2] or false, h[3] or false, h[4] or false, h[5] or false})
end
return out
"""
UNDECLARED_READ_BUCKETS = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
local out = {fp or false}
for _, start in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')) do
  local h = redis.call('HMGET', ARGV[2] .. start, 'sum', 'count')
  if h[1] then table.insert(out, {start, h[1], h[2]}) end
end
return out
"""


def test_the_audit_catches_scripts_building_key_names(store, audit):
    now = flushed_stream(store)[2]
    keys = StreamKeys("s")
    store.client.register_script(UNDECLARED_READ_PARTS)(keys=[keys.meta, keys.parts])
    prefix = keys.bucket("fine", 0)[:-1]
    store.client.register_script(UNDECLARED_READ_BUCKETS)(keys=[keys.meta, keys.bucket_index("fine")],
                                                          args=[0, prefix])
    assert audit.violations(audit.runs()) == [
        f"HMGET on undeclared key {keys.partition('t', 0)}",
        f"HMGET on undeclared key {keys.bucket('fine', bucket_start(now))}",
    ]


def test_every_store_script_declares_every_key_it_touches(store, audit):
    spec, claim, now = flushed_stream(store)  # create, claim, flush with a bucket
    store.claim("s", "t", 1)
    d = delta(spec, 4, 2)
    coarse = int(now) // 300 * 300
    store.flush("s", claim, 10, 14, d.total, d.count,
                [BucketDelta("fine", bucket_start(now), d.total, 4), BucketDelta("coarse", coarse, d.total, 4)],
                now=now)
    assert store.state("s").sketch.count == 14
    assert store.read_window("s", 60, now=now).count == 14
    assert store.read_decayed("s", 30, now=now).count > 0
    assert store.read_range("s", 0, 7200, now=now).count == 4  # coarse level
    store.create_stream(make_spec(seed=1), replace=True)
    store.delete_stream("s")
    runs = audit.runs()
    touched = {bytes(c[1]) for r in runs for c in r.commands if len(c) > 1}
    keys = StreamKeys("s")
    for key in (keys.meta, keys.parts, keys.partition("t", 0), keys.bucket("fine", bucket_start(now)),
                keys.bucket_index("fine"), keys.bucket("coarse", coarse)):
        assert key.encode() in touched, f"no script touched {key}: the audit saw too little"
    assert audit.violations(runs) == []


def test_the_learner_lease_and_checkpoint_scripts_declare_their_keys(store, audit):
    from sketch_store.leadership import CheckpointStore, Lease

    store.create_stream(make_spec())
    lease = Lease(store.client, "s", holder="a", ttl=5.0)
    assert lease.acquire() and lease.acquire()  # the second one renews
    CheckpointStore(store.client, "s").save(lease, b"model", "fp", steps=1, sketch_count=1.0,
                                            incarnation=store.incarnation("s"))
    assert lease.release()
    runs = audit.runs()
    assert len(runs) >= 3
    assert audit.violations(runs) == []
