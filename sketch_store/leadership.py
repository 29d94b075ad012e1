"""One active learner per stream: a lease in Redis, and checkpoints only its holder may write.

* :class:`Lease` — ``{sg:NAME}:lease`` holds the holder's id with a time to live. The holder
  renews it well within the TTL; a standby that finds it free (the leader died, or let go)
  takes it, so a dead leader is replaced within one TTL. Renewal and release are Lua
  compare-and-set steps: a holder that lost the lease (paused past its TTL) cannot extend
  or delete the new holder's lease.
* :class:`CheckpointStore` — ``{sg:NAME}:checkpoint`` holds the latest model (safetensors
  bytes) with the spec fingerprint and sketch count it was trained on. A write is refused
  unless the writer holds the lease, in the same atomic step, so a deposed leader can never
  overwrite its successor's model.

Example (needs a server)::

    lease = Lease(client, "demo", holder="learner-a", ttl=10.0)
    if lease.acquire():
        CheckpointStore(client, "demo").save(lease, blob, fingerprint, steps=100, sketch_count=5000)
"""

from __future__ import annotations

import dataclasses
import time

import redis

from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.redis_keys import StreamKeys

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

#: KEYS: lease, checkpoint. ARGV: holder, model, fingerprint, steps, sketch_count, saved.
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'model', ARGV[2], 'fingerprint', ARGV[3], 'steps', ARGV[4],
           'sketch_count', ARGV[5], 'saved', ARGV[6], 'holder', ARGV[1])
return 1
"""


class LeaseLostError(SketchgenError):
    """A write needed the lease, and this process no longer holds it."""


def lease_key(stream: str) -> str:
    return f"{StreamKeys(stream).prefix}:lease"


class Lease:
    """A renewable, expiring lease on a stream's learner role (see module docstring)."""

    def __init__(self, client: redis.Redis, stream: str, holder: str, ttl: float = 10.0) -> None:
        if not ttl > 0:
            raise SketchgenError(f"lease TTL must be > 0 seconds, got {ttl}")
        self.client = client
        self.key = lease_key(stream)
        self.holder = holder
        self.ttl_ms = int(ttl * 1000)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if it is free (or renew it if we hold it); True if we hold it now."""
        if self.client.set(self.key, self.holder, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend our lease by one TTL; False if we no longer hold it."""
        return bool(self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> bool:
        """Give the lease up at once (a clean shutdown: the standby takes over without waiting)."""
        return bool(self._release(keys=[self.key], args=[self.holder]))

    def current_holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    """The latest checkpoint of a stream as stored in Redis."""

    model: bytes
    fingerprint: str
    steps: int
    sketch_count: float
    saved: float
    holder: str

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.time() - self.saved)


class CheckpointStore:
    """The latest model checkpoint of one stream (see module docstring)."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client = client
        self.keys = StreamKeys(stream)
        self._save = client.register_script(_SAVE)

    def save(self, lease: Lease, model: bytes, fingerprint: str, steps: int, sketch_count: float) -> None:
        """Store ``model`` as the stream's latest checkpoint, atomically checking that ``lease`` is ours."""
        ok = self._save(
            keys=[lease.key, self.keys.checkpoint],
            args=[lease.holder, model, fingerprint, int(steps), repr(float(sketch_count)), repr(time.time())],
        )
        if not ok:
            raise LeaseLostError(f"not writing the checkpoint: {lease.holder} no longer holds the learner lease")

    def saved_at(self) -> float | None:
        """When the latest checkpoint was written (Unix time), without reading the model; None if none."""
        raw = self.client.hget(self.keys.checkpoint, "saved")
        try:
            return float(raw) if raw else None
        except ValueError:
            raise CheckpointError(f"the checkpoint record of stream {self.keys.name!r} is malformed") from None

    def load(self) -> StoredCheckpoint | None:
        """The latest checkpoint, or None if the stream has none yet."""
        raw = self.client.hgetall(self.keys.checkpoint)
        if not raw:
            return None
        text = {k.decode(): v for k, v in raw.items()}
        try:
            return StoredCheckpoint(
                model=text["model"],
                fingerprint=text["fingerprint"].decode(),
                steps=int(text["steps"]),
                sketch_count=float(text["sketch_count"]),
                saved=float(text["saved"]),
                holder=text.get("holder", b"").decode(),
            )
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint record of stream {self.keys.name!r} is malformed: {exc}") from None
