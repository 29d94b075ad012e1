"""Which worker owns which partition: live members in Redis and a deterministic assignment.

Workers of one group heartbeat into a sorted set ``{sg:NAME}:members:GROUP`` (score = the
time their membership expires, ``ttl`` seconds ahead). Both the expiry and the eviction of
expired members are computed from **Redis's clock** (``TIME`` inside the heartbeat script),
never from a worker's: a worker whose clock is off by minutes neither evicts live members
nor outlives its own death. The heartbeat also says whether this member's previous
membership had lapsed (a pause or a stall longer than the TTL): the worker must then check
that it still holds its partitions before it writes anything (:mod:`ingest.ownership`). Every worker reads the same live
member list and computes the same assignment with :func:`assign`: partition ``p`` (in
sorted order) goes to member ``i mod k``. Ownership changes hands through
:meth:`sketch_store.redis_store.SketchStore.claim`, whose epoch fences the previous owner,
so even two workers that briefly disagree can never both write a partition: exactly-once
does not depend on the membership view, only the amount of re-read work does.

Why not Kafka's group protocol: the embedded broker (Tansu 0.6) can wedge a group for good
when a member is SIGKILLed while a rebalance is in progress (every later JoinGroup/SyncGroup
round fails with REBALANCE_IN_PROGRESS); coordinating in Redis, which the workers need
anyway, behaves the same on every broker. Offsets are still committed to Kafka under the
group id, so lag-based autoscaling (KEDA) keeps working.

Example
-------
>>> assign(["t:0", "t:1", "t:2", "t:3"], ["a", "b", "c"], "b")
['t:1']
>>> assign(["t:0", "t:1", "t:2", "t:3"], ["a", "b", "c"], "a")
['t:0', 't:3']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from sketch_store.redis_connect import RedisClient
from sketch_store.redis_keys import StreamKeys

T = TypeVar("T")

#: KEYS: members zset. ARGV: member id, ttl (ms).
#: Drops the members whose expiry (Redis time, ms) has passed, then renews ARGV[1] to now + ttl.
#: Returns {1 if ARGV[1] was a live member before this call else 0, live members...}.
HEARTBEAT = """
local ttl = tonumber(ARGV[2])
if not ttl or ttl <= 0 then return redis.error_reply('ttl must be a positive number of ms') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local was = redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 10 * ttl + 1000)
local out = redis.call('ZRANGE', KEYS[1], 0, -1)
table.insert(out, 1, was)
return out
"""


def assign(partitions: Sequence[T], members: Sequence[str], me: str) -> list[T]:
    """The partitions ``me`` owns when ``partitions`` are dealt round-robin to sorted ``members``."""
    ordered = sorted(members)
    if me not in ordered:
        return []
    k, i = len(ordered), ordered.index(me)
    return [p for j, p in enumerate(sorted(partitions)) if j % k == i]


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """The group as one heartbeat saw it: live members (sorted) and whether ours had lapsed."""

    members: list[str]
    lapsed: bool


class Membership:
    """One worker's membership in a group, heartbeated into Redis (see module docstring)."""

    def __init__(self, client: RedisClient, stream: str, group: str, member_id: str, ttl: float = 6.0) -> None:
        self.client = client
        self.key = f"{StreamKeys(stream).prefix}:members:{group}"
        self.member_id = member_id
        self.ttl = ttl
        self._heartbeat = client.register_script(HEARTBEAT)
        self._joined = False

    def heartbeat(self) -> Heartbeat:
        """Renew this member, drop expired ones (by Redis's clock), and return the live members.

        ``lapsed`` is True when this worker had been a member before and its membership expired
        meanwhile (it was paused or stalled past the TTL); never on the first heartbeat.
        """
        was, *members = self._heartbeat(keys=[self.key], args=[self.member_id, max(1, int(self.ttl * 1000))])
        lapsed = self._joined and not int(was)
        self._joined = True
        return Heartbeat(sorted(m.decode() if isinstance(m, bytes) else m for m in members), lapsed)

    def leave(self) -> None:
        """Remove this member at once (a clean shutdown hands its partitions over immediately)."""
        self.client.zrem(self.key, self.member_id)
        self._joined = False
