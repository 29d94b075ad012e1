"""One active learner per stream: a lease in Redis, and checkpoints only its holder may write.

* :class:`Lease` — ``{sg:NAME}:lease`` holds the holder's id with a time to live. The holder
  renews it well within the TTL; a standby that finds it free (the leader died, or let go)
  takes it, so a dead leader is replaced within one TTL. Renewal and release are Lua
  compare-and-set steps: a holder that lost the lease (paused past its TTL) cannot extend
  or delete the new holder's lease.
* :class:`CheckpointStore` — ``{sg:NAME}:checkpoint`` holds the latest model (safetensors
  bytes) with the spec fingerprint, sketch count and stream incarnation it was trained for.
  A write is refused unless, in the same atomic step, the writer holds the lease and the
  stream's current incarnation (``{sg:NAME}:meta`` field ``incarnation``, set anew each time
  the stream is created) is the one the model's trainer was built for: a deposed leader can
  never overwrite its successor's model, and a trainer of a deleted or replaced stream can
  never write into its successor. Reading checks every field of the record: a missing or
  malformed one is a :class:`CheckpointRecordError` (a :class:`CheckpointError`).

Example (needs a server)::

    lease = Lease(client, "demo", holder="learner-a", ttl=10.0)
    if lease.acquire():
        CheckpointStore(client, "demo").save(lease, blob, fingerprint, steps=100, sketch_count=5000,
                                             incarnation=store.incarnation("demo"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable

from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.redis_connect import RedisClient
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import StreamNotFoundError
from sketch_store.replication import ReplicaWaiter

log = logging.getLogger(__name__)

#: KEYS: lease. ARGV: holder, TTL in ms. Takes the lease if it is free, extends it if the holder has it.
#: Returns 1 if the holder holds it now, 0 if another does.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: lease, checkpoint, stream meta. ARGV: holder, model, fingerprint, steps, sketch_count, saved, incarnation.
#: Replies {'ok'}, {'lease'} (the writer does not hold the lease), {'missing'} (no such stream) or
#: {'incarnation', current} (the stream was recreated since the model's trainer was built).
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease'} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {'missing'} end
local current = redis.call('HGET', KEYS[3], 'incarnation') or ''
if current ~= ARGV[7] then return {'incarnation', current} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'model', ARGV[2], 'fingerprint', ARGV[3], 'steps', ARGV[4],
           'sketch_count', ARGV[5], 'saved', ARGV[6], 'holder', ARGV[1], 'incarnation', ARGV[7])
return {'ok'}
"""


class LeaseLostError(SketchgenError):
    """A write needed the lease, and this process no longer holds it."""


def lease_key(stream: str) -> str:
    return f"{StreamKeys(stream).prefix}:lease"


class Lease:
    """A renewable, expiring lease on a stream's learner role (see module docstring)."""

    def __init__(
        self, client: RedisClient, stream: str, holder: str, ttl: float = 10.0, wait_for_replicas: bool = True
    ) -> None:
        if not ttl > 0:
            raise SketchgenError(f"lease TTL must be > 0 seconds, got {ttl}")
        self.client = client
        self.key = lease_key(stream)
        self.holder = holder
        self.ttl_ms = int(ttl * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._waiter = ReplicaWaiter(client, timeout_s=min(2.0, ttl / 4)) if wait_for_replicas else None
        self._valid_until = 0.0  # time.monotonic() before which our last successful take or renewal holds

    def acquire(self) -> bool:
        """Take the lease if it is free (or renew it if we hold it); True if we hold it now."""
        return self._hold(self._acquire, "acquired")

    def renew(self) -> bool:
        """Extend our lease by one TTL; False if we no longer hold it."""
        return self._hold(self._renew, "renewed")

    @property
    def renewed_at(self) -> float:
        """``time.monotonic()`` at the start of our last successful take or renewal (``-inf`` if none holds)."""
        return self._valid_until - self.ttl_ms / 1000.0 if self._valid_until else float("-inf")

    @property
    def held(self) -> bool:
        """True until one TTL after the start of our last successful take or renewal (by our clock).

        Redis holds the lease at least that long, so a holder that cannot reach Redis (an outage, a
        failover) knows when it must stop acting as leader, before anybody else can take the lease.
        """
        return time.monotonic() < self._valid_until

    def _hold(self, script: Callable[..., object], what: str) -> bool:
        """Run the take or renew script (waiting for the primary's replicas); on success the lease holds for one TTL.

        A lease the replicas did not acknowledge in time is held all the same, and logged: a failover
        now could lose it (docs/design.md §3, "Failover").
        """
        started = time.monotonic()
        if self._waiter is None:
            reply = script(keys=[self.key], args=[self.holder, self.ttl_ms])
        else:
            reply, ack = self._waiter.run(self.key, script, [self.key], [self.holder, self.ttl_ms])
            if not ack.ok:
                log.warning("lease %s %s, but acknowledged by %d of %d replicas; a failover now could lose it",
                            self.key, what, ack.acked, ack.wanted)
        if reply:
            self._valid_until = started + self.ttl_ms / 1000.0
            return True
        self._valid_until = 0.0
        return False

    def release(self) -> bool:
        """Give the lease up at once (a clean shutdown: the standby takes over without waiting)."""
        self._valid_until = 0.0
        return bool(self._release(keys=[self.key], args=[self.holder]))

    def current_holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    """The latest checkpoint of a stream as stored in Redis, every field checked.

    ``incarnation`` is the stream incarnation the model was trained for ("" in a record
    written before incarnations were recorded); ``record_id`` identifies this exact record
    (a hash of all its fields), so a reader can tell a new checkpoint from one it already saw.
    """

    model: bytes
    fingerprint: str
    steps: int
    sketch_count: float
    saved: float
    holder: str
    incarnation: str = ""
    record_id: str = ""

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.time() - self.saved)


class CheckpointRecordError(CheckpointError):
    """The checkpoint hash of a stream has a missing or malformed field; ``record_id`` names the record."""

    def __init__(self, message: str, record_id: str) -> None:
        super().__init__(message)
        self.record_id = record_id


class StaleIncarnationError(SketchgenError):
    """A checkpoint write was refused: the stream was recreated since the model's trainer was built."""


def record_id(raw: dict[bytes, bytes]) -> str:
    """A short hash of every field of a Redis hash (order-independent)."""
    h = hashlib.sha256()
    for key in sorted(raw):
        h.update(len(key).to_bytes(8, "little") + key + len(raw[key]).to_bytes(8, "little") + raw[key])
    return h.hexdigest()[:16]


def _field_text(raw: dict[bytes, bytes], name: str, required: bool = True) -> str:
    value = raw.get(name.encode())
    if value is None:
        if required:
            raise ValueError(f"no {name!r} field")
        return ""
    text = value.decode("utf-8")
    if len(text) > 10_000:
        raise ValueError(f"{name!r} is {len(text)} characters long")
    return text


def _field_number(raw: dict[bytes, bytes], name: str) -> float:
    value = float(_field_text(raw, name))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name!r} must be a finite number >= 0, got {value}")
    return value


def parse_record(raw: dict[bytes, bytes]) -> StoredCheckpoint:
    """The fields of a checkpoint hash, each checked; :class:`CheckpointRecordError` on any bad one."""
    rid = record_id(raw)
    try:
        model = raw.get(b"model")
        if not model:
            raise ValueError("no 'model' field")
        fingerprint = _field_text(raw, "fingerprint")
        if not fingerprint:
            raise ValueError("an empty 'fingerprint'")
        steps = int(_field_text(raw, "steps"))
        if not 0 <= steps < 1 << 62:
            raise ValueError(f"'steps' out of range: {steps}")
        return StoredCheckpoint(
            model=model, fingerprint=fingerprint, steps=steps, sketch_count=_field_number(raw, "sketch_count"),
            saved=_field_number(raw, "saved"), holder=_field_text(raw, "holder", required=False),
            incarnation=_field_text(raw, "incarnation", required=False), record_id=rid,
        )
    except ValueError as exc:  # UnicodeDecodeError included
        raise CheckpointRecordError(f"the checkpoint record is malformed: {' '.join(str(exc).split())[:200]}",
                                        rid) from None


class CheckpointStore:
    """The latest model checkpoint of one stream (see module docstring)."""

    def __init__(self, client: RedisClient, stream: str) -> None:
        self.client = client
        self.keys = StreamKeys(stream)
        self._save = client.register_script(_SAVE)

    def save(self, lease: Lease, model: bytes, fingerprint: str, steps: int, sketch_count: float, *,
             incarnation: str) -> None:
        """Store ``model`` as the stream's latest checkpoint, in one atomic step that checks the writer.

        Refused unless ``lease`` is held (:class:`LeaseLostError`), the stream exists
        (:class:`~sketch_store.redis_store.StreamNotFoundError`) and its incarnation is still
        ``incarnation``, the one the model's trainer was built for (:class:`StaleIncarnationError`).
        The record replaces the previous one entirely.
        """
        reply = self._save(
            keys=[lease.key, self.keys.checkpoint, self.keys.meta],
            args=[lease.holder, model, fingerprint, int(steps), repr(float(sketch_count)), repr(time.time()),
                  incarnation],
        )
        status = _text(reply[0])
        if status == "ok":
            return
        if status == "lease":
            raise LeaseLostError(f"not writing the checkpoint: {lease.holder} no longer holds the learner lease")
        if status == "missing":
            raise StreamNotFoundError(f"not writing the checkpoint: stream {self.keys.name!r} no longer exists")
        if status == "incarnation":
            raise StaleIncarnationError(
                f"not writing the checkpoint: stream {self.keys.name!r} was recreated (incarnation "
                f"{_text(reply[1]) or '(none)'}, the model's {incarnation or '(none)'})"
            )
        raise SketchgenError(f"unexpected reply from the checkpoint script: {reply!r}")

    def saved_at(self) -> float | None:
        """When the latest checkpoint was written (Unix time), without reading the model; None if none."""
        raw = self.client.hget(self.keys.checkpoint, "saved")
        if raw is None:
            return None
        try:
            return _field_number({b"saved": raw}, "saved")
        except ValueError as exc:
            raise CheckpointRecordError(f"the checkpoint record is malformed: {exc}",
                                            record_id({b"saved": raw})) from None

    def load(self) -> StoredCheckpoint | None:
        """The latest checkpoint, or None if the stream has none yet (:class:`CheckpointRecordError` if bad)."""
        raw = self.client.hgetall(self.keys.checkpoint)
        if not raw:
            return None
        return parse_record({_bytes(k): _bytes(v) for k, v in raw.items()})


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
