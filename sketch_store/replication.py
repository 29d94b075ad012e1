"""Writes that must survive a primary failover: the write and a ``WAIT`` on one connection.

Redis replicates asynchronously: a primary acknowledges a write before its replicas have it, and a
failover (Sentinel or Cluster) promotes a replica that may lack the primary's last writes
(docs/design.md §3, "Failover"). ``WAIT n timeout`` blocks until ``n`` replicas have acknowledged
every write *sent on the same connection*, so :meth:`ReplicaWaiter.run` sends a store script and its
``WAIT`` in one pipeline, on the connection to the primary that owns the key's slot (on a cluster,
that node's own client). ``n`` is the number of replicas the primary has connected (``ROLE``, cached
for a few seconds): with no replica there is nothing to wait for and no ``WAIT`` is sent.

A write whose replicas do not answer within the timeout has still been applied by the primary; the
caller learns it from :attr:`ReplicaAck.ok` (and decides whether to go on, to log, or to retry).

Example (needs a server)::

    waiter = ReplicaWaiter(client, timeout_s=2.0)
    reply, ack = waiter.run("{sg:demo}:epoch", script, keys=[...], args=[...])
    if not ack.ok:
        log.warning("only %d of %d replicas have the claim", ack.acked, ack.wanted)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from sketch_store.errors import SketchgenError

log = logging.getLogger(__name__)

#: Cluster answers that mean "no primary for this slot yet, or it moved": a failover in progress, retried
#: like a connection error (to redis-py they are ResponseErrors, like a script's refusal).
CLUSTER_IN_FAILOVER = (ClusterDownError, TryAgainError, MovedError, AskError)

#: How writes wait for replicas: ``none`` (never), ``claims`` (claims and leases, the default) or
#: ``replicated`` (also every flush: an acknowledged flush survives a failover).
DURABILITY_MODES = ("none", "claims", "replicated")


def check_durability(mode: str) -> str:
    """``mode`` if it is one of :data:`DURABILITY_MODES`, else a one-line :class:`SketchgenError`."""
    if mode not in DURABILITY_MODES:
        raise SketchgenError(f"Redis durability must be one of {', '.join(DURABILITY_MODES)} (--redis-durability, "
                             f"SKETCHGEN_REDIS_DURABILITY), not {mode!r}")
    return mode


@dataclasses.dataclass(frozen=True)
class ReplicaAck:
    """``acked`` of the ``wanted`` replicas acknowledged a write (``wanted`` = 0: no replica to wait for)."""

    acked: int
    wanted: int

    @property
    def ok(self) -> bool:
        return self.acked >= self.wanted


def node_client(client: redis.Redis | RedisCluster, key: str) -> redis.Redis:
    """The client of the primary that holds ``key``: ``client`` itself unless it is a cluster client."""
    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def connected_replicas(role: list[object]) -> int:
    """Replicas a primary lists in its ``ROLE`` reply (0 for a replica or a reply of another shape).

    >>> connected_replicas([b"master", 3120, [[b"127.0.0.1", b"6380", b"3120"]]])
    1
    >>> connected_replicas([b"slave", b"127.0.0.1", 6379, b"connected", 3120])
    0
    """
    if len(role) >= 3 and role[0] in (b"master", "master") and isinstance(role[2], list):
        return len(role[2])
    return 0


class ReplicaWaiter:
    """Runs a store script and waits for the primary's connected replicas to have it (module docstring)."""

    def __init__(self, client: redis.Redis | RedisCluster, timeout_s: float = 2.0, role_ttl_s: float = 5.0) -> None:
        if not timeout_s > 0:
            raise SketchgenError(f"the replica wait timeout must be > 0 seconds, got {timeout_s}")
        self.client = client
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self.role_ttl_s = role_ttl_s
        self._replicas: dict[int, tuple[float, int]] = {}  # id of the node client -> (read at, replicas)
        self._lock = threading.Lock()

    def replicas(self, node: redis.Redis) -> int:
        """Connected replicas of ``node`` (``ROLE``), read at most every ``role_ttl_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            cached = self._replicas.get(id(node))
        if cached is not None and now - cached[0] < self.role_ttl_s:
            return cached[1]
        try:
            count = connected_replicas(list(node.execute_command("ROLE")))
        except redis.ResponseError as exc:  # a server or proxy that refuses ROLE (renamed, ACL, managed service)
            self._refused(node, "ROLE", exc)
            return 0
        with self._lock:
            self._replicas[id(node)] = (now, count)
        return count

    def _refused(self, node: redis.Redis, command: str, exc: Exception) -> None:
        """``command`` is refused by ``node``: stop waiting on it (once logged), as if it had no replica."""
        with self._lock:
            self._replicas[id(node)] = (math.inf, 0)
        log.warning("Redis refused %s (%s): writes will not wait for replicas on this server; a failover "
                    "may lose a claim or a lease (docs/design.md §3, \"Failover\")", command, exc)

    def run(
        self, key: str, script: Callable[..., object], keys: list[str], args: list[object]
    ) -> tuple[object, ReplicaAck]:
        """``script(keys, args)`` on the primary of ``key``, then ``WAIT`` for its replicas on that connection.

        Returns the script's reply and the acknowledgement. On one server or through Sentinel, the
        client's own retries handle an outage and connection errors propagate; on a cluster, a slot
        that moved or has no primary yet (a failover in progress) re-reads the slot map and is tried
        again under the cluster client's retry policy, then raises :class:`redis.ConnectionError`.
        """
        if not isinstance(self.client, RedisCluster):
            return self._run_on(self.client, script, keys, args)  # the client's own retries ride out outages

        def attempt() -> tuple[object, ReplicaAck]:
            try:
                return self._run_on(node_client(self.client, key), script, keys, args)
            except CLUSTER_IN_FAILOVER as exc:
                raise redis.ConnectionError(f"Redis Cluster is failing over ({exc!r})") from exc

        # a failover in progress: the slot moved or has no primary yet, and the node's own client does not
        # follow it, so each failure re-reads the slot map before the cluster client's retry policy (the
        # one a stopping worker bounds by its deadline) tries again; a retried claim takes one more epoch,
        # a retried flush is answered 'duplicate' if it had been applied
        retry = getattr(self.client, "retry", None)  # redis-py 5 sets it only when the client was given one
        if retry is None:
            return attempt()
        return retry.call_with_retry(attempt, lambda _error: self._refresh_slots())

    def _refresh_slots(self) -> None:
        """Re-read a cluster's slot map (best effort: a failing refresh leaves the retry to the caller)."""
        try:
            self.client.nodes_manager.initialize()
        except (redis.RedisError, OSError) as exc:
            log.info("refreshing the cluster's slot map failed: %s", exc)

    def _run_on(
        self, node: redis.Redis, script: Callable[..., object], keys: list[str], args: list[object]
    ) -> tuple[object, ReplicaAck]:
        wanted = self.replicas(node)
        if wanted == 0:
            return script(keys=keys, args=args, client=node), ReplicaAck(0, 0)
        with node.pipeline(transaction=False) as pipe:
            script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", wanted, self.timeout_ms)
            reply, acked = pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):  # the write is applied; only the wait was refused
            self._refused(node, "WAIT", acked)
            return reply, ReplicaAck(0, 0)
        ack = ReplicaAck(int(acked), wanted)
        if not ack.ok:
            with self._lock:
                self._replicas.pop(id(node), None)  # a replica may have gone: read ROLE again next time
        return reply, ack
