"""Which worker owns which partition: live members in Redis and a deterministic assignment.

Workers of one group heartbeat into a sorted set ``{sg:NAME}:members:GROUP`` (score = the
time their membership expires, ``ttl`` seconds ahead). Every worker reads the same live
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

import time
from collections.abc import Sequence
from typing import TypeVar

import redis

from sketch_store.redis_keys import StreamKeys

T = TypeVar("T")


def assign(partitions: Sequence[T], members: Sequence[str], me: str) -> list[T]:
    """The partitions ``me`` owns when ``partitions`` are dealt round-robin to sorted ``members``."""
    ordered = sorted(members)
    if me not in ordered:
        return []
    k, i = len(ordered), ordered.index(me)
    return [p for j, p in enumerate(sorted(partitions)) if j % k == i]


class Membership:
    """One worker's membership in a group, heartbeated into Redis (see module docstring)."""

    def __init__(self, client: redis.Redis, stream: str, group: str, member_id: str, ttl: float = 6.0) -> None:
        self.client = client
        self.key = f"{StreamKeys(stream).prefix}:members:{group}"
        self.member_id = member_id
        self.ttl = ttl

    def heartbeat(self, now: float | None = None) -> list[str]:
        """Renew this member, drop expired ones, and return the live members (sorted)."""
        now = time.time() if now is None else now
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {self.member_id: now + self.ttl})
            pipe.zremrangebyscore(self.key, "-inf", now)
            pipe.expire(self.key, int(self.ttl * 10) + 1)
            pipe.zrange(self.key, 0, -1)
            *_, members = pipe.execute()
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def leave(self) -> None:
        """Remove this member at once (a clean shutdown hands its partitions over immediately)."""
        self.client.zrem(self.key, self.member_id)
