"""Streams in Redis: spec, per-partition sums with offsets and epochs, time buckets.

:class:`SketchStore` is the one place that talks to Redis about sketches:

* :meth:`~SketchStore.create_stream` stores a spec (refusing to overwrite without ``replace``);
* :meth:`~SketchStore.claim` fences a partition: it gives the partition a new epoch, above
  every epoch the stream (or a deleted stream of the same name) ever handed out, and returns
  it with the stored next offset, where the new owner must resume, and the stream's
  incarnation;
* :meth:`~SketchStore.flush` adds a partition's delta (sum, count, new next offset) and its
  time-bucket deltas in one atomic Lua step, refused when the epoch is stale (the writer
  lost the partition) or the stream was recreated since the claim, and recognised as a
  duplicate when it was already applied (a retry after a lost reply), so every record is
  counted exactly once;
* :meth:`~SketchStore.delete_stream` first removes the stream's meta in one step (every
  later flush or claim of it then writes nothing), then its other keys;
* reads: all-time (:meth:`~SketchStore.read_total`), the last W seconds
  (:meth:`~SketchStore.read_window`), exponentially decayed with half-life H
  (:meth:`~SketchStore.read_decayed`), and :meth:`~SketchStore.status`.

Every script validates all it will touch before its first write and declares every key it
touches (docs/redis_scripts.md).

Buckets come in levels (:mod:`sketch_store.buckets`): by default ``fine`` (10 s kept 1 h), ``coarse``
(5 min kept 1 day) and ``long`` (1 h kept 7 days), streams created before the long level existed
keep their two (fine, coarse); each bucket holds the sum over all partitions of the records whose
timestamp falls in it, and expires by itself.

The client retries on connection errors with exponential backoff, so a worker rides out a
Redis restart (see :func:`connect`).

Example (needs a server)::

    store = SketchStore(connect("redis://localhost:6379/0"))
    store.create_stream(SketchSpec.create(d=2, m=100, seed=0).with_name("demo"))
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import redis
from redis.cluster import RedisCluster

from sketch_store.bounds import Bounds, merge_bounds
from sketch_store.buckets import DEFAULT_BUCKETS, BucketConfig
from sketch_store.buckets import LEVELS as LEVELS  # re-exported: every level name a stream may have
from sketch_store.errors import SketchgenError, SpecError, SpecMismatchError
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_scripts import CLAIM, CREATE, DROP, FLUSH, READ_BUCKETS, READ_CLAIMS, READ_PARTS
from sketch_store.replication import CLUSTER_IN_FAILOVER, ReplicaWaiter, check_durability
from sketch_store.sketch import Sketch, merge_all
from sketch_store.spec import SketchSpec

log = logging.getLogger(__name__)

#: Reads whose key list comes from a first plain read are tried this often when the listing
#: keeps changing under them (a partition's first flush, a new or pruned bucket).
LISTING_ATTEMPTS = 8


class StreamNotFoundError(SketchgenError):
    """The named stream does not exist in Redis."""


class StreamExistsError(SketchgenError):
    """Creating a stream that already exists, without ``replace``."""


class FencedError(SketchgenError):
    """A write was refused because another worker now owns the partition."""


class StreamRecreatedError(SketchgenError):
    """The stream was deleted and created again since the caller claimed a partition or read it."""


class CorruptStoreError(SketchgenError):
    """Redis holds a value the store cannot use (wrong key type, a non-integer count); nothing was written."""


class CorruptSumError(CorruptStoreError):
    """A stored sum has the wrong length for the stream's spec; nothing was written."""


class StoreScriptError(SketchgenError):
    """A store script refused its arguments, failed, or replied unexpectedly."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """Ownership of one partition: the epoch to write with and where to resume (None: nothing stored).

    ``incarnation`` is the stream's incarnation at the claim (see :meth:`SketchStore.incarnation`):
    flushes with this claim are refused once the stream has been recreated.
    """

    topic: str
    partition: int
    epoch: int
    next_offset: int | None
    incarnation: str = ""


@dataclasses.dataclass
class BucketDelta:
    """Feature sum and count of the records of one flush falling into one time bucket."""

    level: str
    start: int
    total: np.ndarray
    count: int


@dataclasses.dataclass(frozen=True)
class PartitionState:
    """What Redis holds for one partition."""

    topic: str
    partition: int
    count: int
    next_offset: int | None
    epoch: int
    updated: float | None


@dataclasses.dataclass(frozen=True)
class StreamState:
    """All-time sketch of a stream and its per-partition states."""

    spec: SketchSpec
    sketch: Sketch
    partitions: list[PartitionState]
    updated: float | None


def _to_bytes(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f8").tobytes()


def _from_bytes(raw: bytes, m: int, where: str) -> np.ndarray:
    if len(raw) != 16 * m:
        raise CorruptSumError(f"corrupt sum in {where}: {len(raw)} bytes, expected {16 * m}")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


def _bounds(lo: bytes | None, hi: bytes | None, bounded: bytes | None, count: int, d: int,
            member: str | None) -> Bounds | None:
    """A partition's stored bounds if they cover its ``count`` rows (``bounded`` = count), else None (not known:
    none stored, or stale); :class:`CorruptStoreError` if they are not valid."""
    if (not lo and not hi) or _text(bounded) != str(count):
        return None
    try:
        return Bounds.from_bytes(lo or b"", hi or b"", d)
    except SpecError as exc:
        raise CorruptStoreError(f"corrupt bounds in partition {member}: {exc}") from None


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def flush_call(
    keys: StreamKeys,
    fingerprint: str,
    claim: Claim,
    from_offset: int,
    next_offset: int,
    total: np.ndarray,
    count: int,
    buckets: Sequence[BucketDelta],
    cfg: BucketConfig,
    now: float,
    bounds: Bounds | None = None,
) -> tuple[list[str], list[object]]:
    """The KEYS and ARGV of one FLUSH run (layout in :data:`sketch_store.redis_scripts.FLUSH`).

    Bucket deltas whose bucket has outlived its retention at ``now`` are left out: they count in
    the all-time sum only. ``bounds`` are the delta rows' coordinate bounds (None: not known).
    """
    member = f"{claim.topic}:{claim.partition}"
    key_list = [keys.meta, keys.parts, keys.partition(claim.topic, claim.partition)]
    lo, hi = bounds.to_bytes() if bounds is not None else (b"", b"")
    args: list[object] = [
        fingerprint, claim.incarnation, member, claim.epoch, int(from_offset), int(next_offset), repr(float(now)),
        _to_bytes(total), int(count), lo, hi,
    ]
    for b in buckets:
        res, keep = cfg.resolution(b.level), cfg.keep(b.level)
        expire_at = b.start + res + keep
        if expire_at <= now:
            continue  # too old for any window: counted in the all-time sum only
        key_list += [keys.bucket(b.level, b.start), keys.bucket_index(b.level)]
        args += [int(b.start), math.ceil(expire_at), int(now - keep - res), _to_bytes(b.total), int(b.count)]
    return key_list, args


class SketchStore:
    """Sketches of named streams in one Redis database (see module docstring)."""

    def __init__(self, client: redis.Redis | RedisCluster, durability: str = "claims") -> None:
        """``durability``: which writes wait for the primary's replicas (:mod:`sketch_store.replication`):
        ``claims`` (default: a claim counts once its replicas have it, so a failover cannot hand out
        its epoch again), ``replicated`` (also every flush) or ``none``."""
        self.client = client
        self.durability = check_durability(durability)
        self._waiter = ReplicaWaiter(client)
        self._create = client.register_script(CREATE)
        self._drop = client.register_script(DROP)
        self._claim = client.register_script(CLAIM)
        self._flush = client.register_script(FLUSH)
        self._read_parts = client.register_script(READ_PARTS)
        self._read_buckets = client.register_script(READ_BUCKETS)
        self._read_claims = client.register_script(READ_CLAIMS)
        self._specs: dict[str, SketchSpec] = {}
        self._bucket_cfgs: dict[str, BucketConfig] = {}

    # -- running scripts -----------------------------------------------------

    @staticmethod
    def _run(script: Callable[..., object], keys: list[str], args: list[object], what: str) -> list[object]:
        """Run one store script; a server-side script error becomes a :class:`StoreScriptError`."""
        try:
            reply = script(keys=keys, args=args)
        except CLUSTER_IN_FAILOVER as exc:
            raise redis.ConnectionError(f"Redis Cluster is failing over ({exc!r})") from exc
        except redis.ResponseError as exc:
            raise StoreScriptError(f"Redis refused the {what} script: {exc}") from None
        return reply if isinstance(reply, list) else [reply]

    def _run_durable(
        self, script: Callable[..., object], keys: list[str], args: list[object], what: str, wait: bool
    ) -> list[object]:
        """:meth:`_run`, and with ``wait`` a ``WAIT`` for the primary's replicas on the same connection.

        A write the replicas did not acknowledge in time is applied all the same (a replica down must
        not stop ingest); it is logged, since a failover now could lose it (docs/design.md §3, "Failover").
        """
        if not wait:
            return self._run(script, keys, args, what)
        try:
            reply, ack = self._waiter.run(keys[0], script, keys, args)
        except CLUSTER_IN_FAILOVER as exc:
            raise redis.ConnectionError(f"Redis Cluster is failing over ({exc!r})") from exc
        except redis.ResponseError as exc:
            raise StoreScriptError(f"Redis refused the {what} script: {exc}") from None
        if not ack.ok:
            log.warning("the %s on %s is acknowledged by %d of %d replicas after %d ms; a failover now could "
                        "lose it", what, keys[0], ack.acked, ack.wanted, self._waiter.timeout_ms)
        return reply if isinstance(reply, list) else [reply]

    @staticmethod
    def _listed(
        run: Callable[[list[bytes]], list[object]], listing: list[bytes], what: str
    ) -> list[object]:
        """Run a script over the keys of ``listing``; while it answers 'retry', again with the listing it sent."""
        for _ in range(LISTING_ATTEMPTS):
            reply = run(listing)
            if _text(reply[0]) != "retry":
                return reply
            listing = [bytes(x) for x in reply[1:]]
        raise StoreScriptError(f"the {what} kept changing during {LISTING_ATTEMPTS} attempts to read it; try again")

    def _refuse(self, name: str, reply: list[object], what: str, recreated: str = "") -> None:
        """Raise the error a refusal reply stands for (stream gone or changed, corrupt data, bad arguments)."""
        status = _text(reply[0]) if reply else None
        if status == "missing":
            self._forget(name)
            raise StreamNotFoundError(f"stream {name!r} no longer exists in Redis")
        if status == "spec":
            self._forget(name)
            raise SpecMismatchError(f"stream {name!r} was recreated with another spec ({_text(reply[1])})")
        if status == "recreated":
            self._forget(name)
            raise StreamRecreatedError(f"stream {name!r} was recreated since {recreated or 'it was read'}")
        if status == "corrupt":
            kind, key, detail = (_text(x) for x in reply[1:4])
            if kind == "type":
                raise CorruptStoreError(f"corrupt data in Redis: {key} {detail}; the {what} changed nothing")
            cls, noun = (CorruptSumError, "sum") if kind == "sum" else (CorruptStoreError, "data")
            raise cls(f"corrupt {noun} in {key}: {detail}; the {what} changed nothing")
        if status == "badarg":
            raise StoreScriptError(f"the {what} script refused its arguments: {_text(reply[1])}")
        raise StoreScriptError(f"unexpected reply from the {what} script: {reply!r}")

    def _forget(self, name: str) -> None:
        self._specs.pop(name, None)
        self._bucket_cfgs.pop(name, None)

    # -- streams -----------------------------------------------------------

    def create_stream(self, spec: SketchSpec, buckets: BucketConfig | None = None, replace: bool = False) -> None:
        """Store ``spec`` under ``spec.name``; with ``replace``, first delete the old stream and its data.

        Each creation gets a new incarnation id, so writers that claimed partitions of a replaced
        stream are refused by its successor (even with the same spec).
        """
        keys = StreamKeys(spec.name)
        cfg = buckets or DEFAULT_BUCKETS
        for level in cfg.redundant():
            log.warning("stream %s: the %s bucket level is kept no longer than the level before it, so no read "
                        "uses it (it only costs memory)", spec.name, level.name)
        mapping = {
            "spec": spec.to_bytes(),
            "fingerprint": spec.fingerprint,
            "created": repr(time.time()),
            "buckets": cfg.to_json(),
            "incarnation": uuid.uuid4().hex,
        }
        if replace:
            self.delete_stream(spec.name)
        args = [item for pair in mapping.items() for item in pair]
        reply = self._run(self._create, [keys.meta], args, "create")
        if reply != [1]:
            if reply == [0]:
                raise StreamExistsError(f"stream {spec.name!r} already exists (use --replace to recreate it)")
            self._refuse(spec.name, reply, "create")
        self._specs[spec.name] = spec
        self._bucket_cfgs[spec.name] = cfg
        log.info("created stream %s (incarnation %s): %s", spec.name, mapping["incarnation"], spec.describe())

    def delete_stream(self, name: str) -> int:
        """Delete every key of stream ``name`` except its epoch counter; returns the number of keys removed.

        First the meta key goes, in one atomic step that also raises the epoch counter to every
        partition's epoch: from then on every flush and claim of the stream finds it missing and
        writes nothing, so the remaining keys can be deleted in as many round trips as needed.
        """
        keys = StreamKeys(name)
        try:
            members = list(self.client.smembers(keys.parts))
        except redis.ResponseError:  # not a set: DROP ignores it, the key is deleted below
            members = []

        def drop(listing: list[bytes]) -> list[object]:
            part_keys = [keys.part_of(_text(m) or "") for m in listing]
            return self._run(self._drop, [keys.meta, keys.parts, keys.epoch_counter, *part_keys], listing, "delete")

        reply = self._listed(drop, members, "partition set")
        if _text(reply[0]) != "ok":
            self._refuse(name, reply, "delete")
        removed = int(reply[1])
        counter = keys.epoch_counter.encode()
        doomed = [k for k in self._scan_stream(keys) if k != counter]
        for i in range(0, len(doomed), 1000):
            removed += int(self.client.delete(*doomed[i : i + 1000]))
        self._forget(name)
        log.info("deleted stream %s: %d keys (epoch counter kept at %s)", name, removed, _text(reply[2]))
        return removed

    def _scan_stream(self, keys: StreamKeys) -> Iterator[bytes]:
        """Every key of the stream (``SCAN``); on a cluster only the primary owning the stream's slot is scanned."""
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(keys.meta)
            return self.client.scan_iter(match=keys.pattern, count=1000, target_nodes=node)
        return self.client.scan_iter(match=keys.pattern, count=1000)

    def exists(self, name: str) -> bool:
        return bool(self.client.exists(StreamKeys(name).meta))

    def get_spec(self, name: str, refresh: bool = False) -> SketchSpec:
        """The spec of stream ``name`` (cached; ``refresh`` re-reads it)."""
        if not refresh and name in self._specs:
            return self._specs[name]
        raw = self.client.hget(StreamKeys(name).meta, "spec")
        if raw is None:
            raise StreamNotFoundError(f"no stream named {name!r} in Redis (create it with `sketchgen create`)")
        spec = SketchSpec.from_bytes(raw).with_name(name)
        self._specs[name] = spec
        return spec

    def incarnation(self, name: str) -> str:
        """The id of this creation of stream ``name``: a new one each time it is (re)created.

        Two streams of one name and spec differ by it, so writers of a deleted or replaced
        stream can be told apart from writers of its successor ("" for a stream created
        before incarnations were recorded).
        """
        raw = self.client.hget(StreamKeys(name).meta, "incarnation")
        if raw is None and not self.exists(name):
            raise StreamNotFoundError(f"no stream named {name!r} in Redis (create it with `sketchgen create`)")
        return _text(raw) or ""

    def bucket_config(self, name: str) -> BucketConfig:
        """The stream's stored bucket levels (a stream without a stored config has the two-level layout)."""
        raw = self.client.hget(StreamKeys(name).meta, "buckets")
        return BucketConfig.from_json(raw) if raw else BucketConfig()

    # -- writes (ingest) ---------------------------------------------------

    def claim(self, name: str, topic: str, partition: int, incarnation: str | None = None) -> Claim:
        """Take ownership of a partition: give it a new epoch; return it with the stored next offset.

        The epoch is above every epoch the stream's partitions ever had, also before a deletion
        or replace of the stream. With ``incarnation`` (from :meth:`incarnation` or an earlier
        claim), the claim is refused with :class:`StreamRecreatedError` if the stream has been
        recreated since; the returned :class:`Claim` carries the stream's incarnation either way.
        """
        spec = self.get_spec(name)
        keys = StreamKeys(name)
        args = [spec.fingerprint] + ([] if incarnation is None else [incarnation])
        reply = self._run_durable(
            self._claim, [keys.meta, keys.partition(topic, partition), keys.epoch_counter], args, "claim",
            self.durability != "none",
        )
        if _text(reply[0]) != "ok":
            self._refuse(name, reply, "claim", recreated="this process read it")
        nxt = _text(reply[2])
        return Claim(topic, int(partition), int(reply[1]), int(nxt) if nxt else None, _text(reply[3]) or "")

    def flush(
        self,
        name: str,
        claim: Claim,
        from_offset: int,
        next_offset: int,
        total: np.ndarray,
        count: int,
        buckets: list[BucketDelta] = (),  # type: ignore[assignment]
        now: float | None = None,
        bounds: Bounds | None = None,
    ) -> str:
        """Atomically add one partition's delta covering offsets [from_offset, next_offset).

        ``bounds`` (the delta rows' coordinate bounds) widen the partition's; a delta of rows without
        them leaves the partition's bounds unknown from then on (docs/design.md §1).

        Returns ``"ok"`` or ``"duplicate"`` (already applied: a retry after a lost reply).
        Raises :class:`FencedError` when the partition now belongs to someone else,
        :class:`StreamRecreatedError` when the stream was recreated since the claim (same spec),
        :class:`SpecMismatchError` when it was recreated with another spec,
        :class:`StreamNotFoundError` when it was deleted, and :class:`CorruptSumError` /
        :class:`CorruptStoreError` when a stored value cannot be updated. Unless it returns
        ``"ok"``, nothing in Redis changed.
        """
        spec = self.get_spec(name)
        for label, vec in [("delta", total), *((f"{b.level} bucket {b.start} delta", b.total) for b in buckets)]:
            if vec.shape != (2 * spec.m,):
                raise SpecMismatchError(f"{label} has shape {vec.shape}, stream {name!r} expects ({2 * spec.m},)")
        cfg = self.bucket_config_cached(name)
        for b in buckets:
            if b.level not in cfg.names:
                raise SketchgenError(f"unknown bucket level {b.level!r} for stream {name!r} "
                                     f"(expected one of {', '.join(cfg.names)})")
        if bounds is not None and bounds.d != spec.d:
            raise SpecMismatchError(f"bounds have {bounds.d} coordinates, stream {name!r} has d = {spec.d}")
        now = time.time() if now is None else now
        key_list, args = flush_call(
            StreamKeys(name), spec.fingerprint, claim, from_offset, next_offset, total, count, buckets,
            cfg, now, bounds,
        )
        reply = self._run_durable(self._flush, key_list, args, "flush", self.durability == "replicated")
        status = _text(reply[0])
        member = f"{claim.topic}:{claim.partition}"
        if status in ("ok", "duplicate"):
            return status
        if status == "fenced":
            raise FencedError(
                f"partition {member} of stream {name!r} was claimed by another worker "
                f"(epoch {_text(reply[1])}, ours {claim.epoch})"
            )
        if status == "offset":
            raise FencedError(
                f"partition {member} of stream {name!r} is at offset {_text(reply[1])}, not {from_offset}"
            )
        self._refuse(name, reply, "flush", recreated=f"this worker claimed partition {member}")
        raise AssertionError("unreachable")  # _refuse always raises

    def claims_held(self, name: str, claims: list[Claim]) -> list[bool]:
        """For each claim: does Redis still honour it (same epoch, and the stream not recreated since)?

        A read only (one script over the stream's keys, so also on a cluster); a worker calls it after
        a pause, before writing anything.
        """
        keys = StreamKeys(name)
        part_keys = [keys.partition(c.topic, c.partition) for c in claims]
        reply = self._run(self._read_claims, [keys.meta, *part_keys], [], "claims check")
        if _text(reply[0]) == "missing":
            return [False] * len(claims)
        if _text(reply[0]) != "ok":
            self._refuse(name, reply, "claims check")
        incarnation, *epochs = reply[1:]
        current = _text(incarnation) or ""
        return [
            _text(e) == str(c.epoch) and getattr(c, "incarnation", current) == current
            for c, e in zip(claims, epochs, strict=True)
        ]

    def bucket_config_cached(self, name: str) -> BucketConfig:
        if name not in self._bucket_cfgs:
            self._bucket_cfgs[name] = self.bucket_config(name)
        return self._bucket_cfgs[name]

    # -- reads ---------------------------------------------------------------

    def state(self, name: str) -> StreamState:
        """All-time sketch and per-partition states, read atomically."""
        spec = self.get_spec(name)
        keys = StreamKeys(name)
        try:
            members = list(self.client.smembers(keys.parts))
        except redis.ResponseError:  # not a set: the script reports it
            members = []

        def read(listing: list[bytes]) -> list[object]:
            part_keys = [keys.part_of(_text(m) or "") for m in listing]
            return self._run(self._read_parts, [keys.meta, keys.parts, *part_keys], listing, "read")

        reply = self._listed(read, members, "partition set")
        status = _text(reply[0])
        if status == "missing":
            raise StreamNotFoundError(f"no stream named {name!r} in Redis")
        if status != "ok":
            self._refuse(name, reply, "read")
        if _text(reply[1]) != spec.fingerprint:
            spec = self.get_spec(name, refresh=True)
        total = np.zeros(2 * spec.m)
        count = 0
        bounds: Bounds | None = None
        parts = []
        for member, raw_sum, raw_count, raw_next, raw_epoch, raw_updated, raw_lo, raw_hi, raw_bounded in reply[3:]:
            topic, _, p = _text(member).rpartition(":")
            c = int(raw_count or 0)
            if raw_sum:
                total += _from_bytes(raw_sum, spec.m, f"partition {_text(member)}")
            bounds = merge_bounds(bounds, count, _bounds(raw_lo, raw_hi, raw_bounded, c, spec.d, _text(member)), c)
            count += c
            parts.append(PartitionState(
                topic=topic, partition=int(p), count=c,
                next_offset=int(raw_next) if raw_next else None,
                epoch=int(raw_epoch or 0), updated=float(raw_updated) if raw_updated else None,
            ))
        parts.sort(key=lambda s: (s.topic, s.partition))
        updated = float(reply[2]) if reply[2] else None
        return StreamState(spec, Sketch(total, count, spec.fingerprint, bounds), parts, updated)

    def last_updated(self, name: str) -> float | None:
        """When the stream's sketch last changed (a flush), as a Unix time; None if never."""
        raw = self.client.hget(StreamKeys(name).meta, "updated")
        return float(raw) if raw else None

    def total_count(self, name: str) -> int:
        """Records in the all-time sketch (counts only; cheap enough for a metric)."""
        keys = StreamKeys(name)
        members = self.client.smembers(keys.parts)
        if not members:
            return 0
        with self.client.pipeline(transaction=False) as pipe:
            for member in members:
                topic, _, p = _text(member).rpartition(":")
                pipe.hget(keys.partition(topic, int(p)), "count")
            return sum(int(c or 0) for c in pipe.execute())

    def read_total(self, name: str) -> Sketch:
        """The all-time sketch of the stream (with its rows' bounds when every partition keeps them)."""
        return self.state(name).sketch

    def bounds(self, name: str) -> Bounds | None:
        """The stream's all-time coordinate bounds (None while not known), reading only the partitions' bound fields.

        Each partition's fields are read in one HMGET (so its bounds and count agree); partitions are read
        one after the other, which can only miss rows flushed meanwhile, and bounds only ever widen.
        """
        spec = self.get_spec(name)
        keys = StreamKeys(name)
        try:
            members = sorted(_text(m) or "" for m in self.client.smembers(keys.parts))
            with self.client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(keys.part_of(member), "count", "lo", "hi", "bounded")
                replies = pipe.execute()
        except redis.ResponseError as exc:  # WRONGTYPE: a key that is not what the store keeps there
            raise CorruptStoreError(f"stream {name!r}: cannot read its bounds: {exc}") from None
        bounds, count = None, 0
        for member, (raw_count, lo, hi, bounded) in zip(members, replies, strict=True):
            try:
                c = int(raw_count or 0)
            except ValueError:
                raise CorruptStoreError(f"partition {member} of stream {name!r}: count is not an integer") from None
            bounds, count = merge_bounds(bounds, count, _bounds(lo, hi, bounded, c, spec.d, member), c), count + c
        return bounds

    def with_bounds(self, name: str, sketch: Sketch) -> Sketch:
        """``sketch`` (say of a window) carrying the stream's all-time bounds, which cover its rows too."""
        bounds = self.bounds(name) if sketch.count else None
        return sketch if bounds is None else dataclasses.replace(sketch, bounds=bounds)

    def _buckets(self, name: str, level: str, since: float) -> list[tuple[int, np.ndarray, int]]:
        """(start, sum, count) of the live buckets of ``level`` starting at or after ``since``, read atomically."""
        spec = self.get_spec(name)
        keys = StreamKeys(name)
        index = keys.bucket_index(level)
        low = math.floor(since)
        try:
            starts = list(self.client.zrangebyscore(index, low, "+inf"))
        except redis.ResponseError:  # not a sorted set: the script reports it
            starts = []

        def read(listing: list[bytes]) -> list[object]:
            bucket_keys = [f"{keys.prefix}:bucket:{level}:{_text(s)}" for s in listing]
            return self._run(self._read_buckets, [keys.meta, index, *bucket_keys], [low, *listing], "read")

        reply = self._listed(read, starts, f"{level} bucket index")
        status = _text(reply[0])
        if status == "missing":
            raise StreamNotFoundError(f"no stream named {name!r} in Redis")
        if status != "ok":
            self._refuse(name, reply, "read")
        return [
            (int(start), _from_bytes(raw, spec.m, f"bucket {level}:{int(start)}"), int(c or 0))
            for start, raw, c in reply[2:]
        ]

    def _level_for(self, name: str, horizon: float) -> str:
        """The finest level whose retention covers ``horizon`` (:meth:`BucketConfig.level_for`)."""
        return self.bucket_config_cached(name).level_for(horizon).name

    def read_window(self, name: str, seconds: float, now: float | None = None) -> Sketch:
        """Sketch of the records whose timestamp lies in the last ``seconds`` (bucket-aligned)."""
        if not seconds > 0:
            raise SketchgenError(f"window must be > 0 seconds, got {seconds}")
        return self.read_range(name, 0.0, seconds, now)

    def read_range(self, name: str, newer_than: float, older_than: float, now: float | None = None) -> Sketch:
        """Sketch of the buckets whose start lies between ``older_than`` and ``newer_than`` seconds ago.

        ``read_range(name, 0, 60)`` is the last minute, ``read_range(name, 60, 660)`` the ten
        minutes before it (the drift monitor compares the two). A bucket straddling the far edge
        counts in full.
        """
        buckets = self.read_buckets(name, newer_than, older_than, now)
        return merge_all(buckets) if buckets else Sketch.empty(self.get_spec(name))

    def read_buckets(self, name: str, newer_than: float, older_than: float,
                     now: float | None = None) -> list[Sketch]:
        """The buckets :meth:`read_range` merges, one sketch each, newest first (read atomically).

        The drift monitor scans the recent window from its newest bucket back (docs/design.md §1, "Drift").
        """
        if not 0 <= newer_than < older_than:
            raise SketchgenError(f"need 0 <= newer_than < older_than, got {newer_than}, {older_than}")
        now = time.time() if now is None else now
        level = self._level_for(name, older_than)
        res = self.bucket_config_cached(name).resolution(level)
        fingerprint = self.get_spec(name).fingerprint
        kept = [(start, vec, c) for start, vec, c in self._buckets(name, level, now - older_than - res + 1)
                if not (newer_than > 0 and start > now - newer_than - res)]
        kept.sort(key=lambda b: b[0], reverse=True)
        return [Sketch(vec, c, fingerprint) for _, vec, c in kept]

    def read_decayed(self, name: str, halflife: float, now: float | None = None) -> Sketch:
        """Exponentially decayed sketch: bucket b weighs ``2^(−age_b / H)``, age at the bucket's middle.

        The count is the decayed count ``Σ_b w_b n_b`` (not an integer), so ``mean()`` is the
        decayed mean of the features. Each level serves half-lives up to an eighth of its
        retention (the finest such level), the one kept longest the longer ones.
        """
        if not halflife > 0:
            raise SketchgenError(f"half-life must be > 0 seconds, got {halflife}")
        now = time.time() if now is None else now
        level = self._level_for(name, 8 * halflife)
        cfg = self.bucket_config_cached(name)
        res = cfg.resolution(level)
        spec = self.get_spec(name)
        total = np.zeros(2 * spec.m)
        count = 0.0
        for start, vec, c in self._buckets(name, level, now - cfg.keep(level) - res):
            w = 2.0 ** (-max(now - (start + res / 2.0), 0.0) / halflife)
            total += w * vec
            count += w * c
        return Sketch(total, count, spec.fingerprint)

    def memory_bytes(self, name: str) -> int:
        """Redis memory used by all keys of the stream (``MEMORY USAGE``, summed)."""
        keys = StreamKeys(name)
        total = 0
        for key in self._scan_stream(keys):
            total += int(self.client.memory_usage(key, samples=0) or 0)
        return total

    def bucket_span(self, name: str, level: str) -> tuple[int, int, int] | None:
        """(first start, last start, number of buckets) of a level, or None when empty."""
        idx = StreamKeys(name).bucket_index(level)
        first = self.client.zrange(idx, 0, 0, withscores=True)
        last = self.client.zrange(idx, -1, -1, withscores=True)
        if not first:
            return None
        return int(first[0][1]), int(last[0][1]), int(self.client.zcard(idx))
