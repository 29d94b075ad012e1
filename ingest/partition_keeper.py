"""Partition ownership as the worker runs it: rebalance, assign, release, leave, and the pause check.

:mod:`ingest.membership` says which partitions this worker should own and
:mod:`ingest.ownership` holds its claims; a :class:`PartitionKeeper` moves between the two every
``rebalance_interval_s``: it heartbeats the worker's membership, takes the partitions assigned to
it (a claim in Redis fences their previous owner), hands over the others (their last rows flushed
first) and points the consumer at the claims held, each new claim at the offset Redis stored.

A claim that ended — fenced by Redis at a flush, lost after a pause, or refused because a batch
arrived out of order — cools down for ``fenced_cooldown_s`` before this worker takes its
partition again (:meth:`PartitionKeeper.ended`). Before anything is written after a gap of half
a member TTL without a heartbeat (a pause), :meth:`PartitionKeeper.check_awake` heartbeats at
once: if the membership lapsed meanwhile, every claim Redis no longer honours is dropped first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from kafka import KafkaConsumer, TopicPartition

from ingest.config import IngestConfig
from ingest.health import WorkerHealth
from ingest.membership import Membership, assign
from ingest.metrics import IngestMetrics
from ingest.ownership import OwnedPartition, PartitionOwnership

log = logging.getLogger(__name__)


class PartitionKeeper:
    """Which partitions the worker holds, kept in step with its group (see module docstring).

    Before partitions are handed over, ``settle()`` applies the batches in flight (those read
    under the claims ending go out with their last flush) and ``flush(claims)`` writes the claims.
    """

    def __init__(
        self, config: IngestConfig, consumer: KafkaConsumer, membership: Membership, ownership: PartitionOwnership,
        health: WorkerHealth, metrics: IngestMetrics, settle: Callable[[], None],
        flush: Callable[[list[OwnedPartition]], None],
    ) -> None:
        self.config, self.consumer, self.membership, self.ownership = config, consumer, membership, ownership
        self.health, self.metrics, self.settle, self.flush = health, metrics, settle, flush
        self.last_rebalance, self.last_member_beat = 0.0, time.monotonic()
        self.cooldown: dict[TopicPartition, float] = {}  # partition -> when it may be taken again
        self.positioned: dict[TopicPartition, OwnedPartition] = {}  # claims the consumer was seeked for

    def rebalance(self) -> None:
        """Heartbeat; take the partitions this worker should own and hand over the others."""
        now = time.monotonic()
        if now - self.last_rebalance < self.config.rebalance_interval_s:
            return
        self.last_rebalance = now
        try:
            beat = self.membership.heartbeat()
        except redis.RedisError as exc:
            log.warning("membership heartbeat failed (%s); keeping current partitions", exc)
            return
        self.last_member_beat = time.monotonic()
        self.health.member()
        if beat.lapsed:
            self.lapsed("its group membership expired (no heartbeat within the member TTL, by Redis's clock)")
        partitions = self.consumer.partitions_for_topic(self.config.topic)
        if not partitions:
            log.info("topic %s has no partitions yet; waiting", self.config.topic)
            self.health.partitions(0, set(), {tp.partition for tp in self.ownership.partitions()})
            return
        topic_partitions = [TopicPartition(self.config.topic, p) for p in sorted(partitions)]
        wanted = set(assign(topic_partitions, beat.members, self.membership.member_id))
        current = self.ownership.partitions()
        released = current - wanted
        if released:
            self.release(released)
        acquired = {tp for tp in wanted - current if self.cooldown.get(tp, 0.0) <= now}
        for tp in sorted(acquired):
            self.ownership.take(tp)
        if released or acquired:
            self.assign()
        self.health.partitions(
            len(partitions), {tp.partition for tp in wanted}, {tp.partition for tp in self.ownership.partitions()}
        )

    def check_awake(self) -> None:
        """Before writing: after a gap of half a member TTL without a heartbeat (a pause), heartbeat now.

        The heartbeat tells, by Redis's clock, whether our membership lapsed meanwhile; if it
        did, :meth:`lapsed` drops the claims Redis no longer honours before anything is written.
        """
        if time.monotonic() - self.last_member_beat > self.config.member_ttl_s / 2:
            self.rebalance()

    def lapsed(self, why: str) -> None:
        """After a pause: before writing anything, drop every claim Redis no longer honours."""
        self.metrics.pauses.inc()
        log.warning("this worker was paused or stalled: %s; checking its claims before writing", why)
        self.ended(self.ownership.verify("it was paused past its membership"))

    def ended(self, claims: list[OwnedPartition]) -> None:
        """These claims were dropped: their partitions cool down, and the consumer follows the claims left."""
        for owned in claims:
            self.cooldown[owned.tp] = time.monotonic() + self.config.fenced_cooldown_s
        if claims:
            self.assign()

    def assign(self) -> None:
        """Point the consumer at the claims held now; a new claim starts at the offset Redis stored."""
        held = self.ownership.all()
        self.consumer.assign([o.tp for o in held])  # kafka-python keeps the positions of partitions kept
        for owned in held:
            if self.positioned.get(owned.tp) is owned:
                continue
            if owned.claim.next_offset is None:
                self.consumer.seek_to_beginning(owned.tp)
            else:
                self.consumer.seek(owned.tp, owned.claim.next_offset)
            self.positioned[owned.tp] = owned
        self.positioned = {o.tp: o for o in held}
        self.health.owned({o.tp.partition for o in held})

    def release(self, tps: set[TopicPartition]) -> None:
        """Flush and hand over partitions this worker no longer owns."""
        self.settle()
        releasing = [o for o in self.ownership.all() if o.tp in tps]
        self.flush(releasing)
        for owned in releasing:
            self.ownership.drop(owned)
            log.info("handed over %s:%d", owned.tp.topic, owned.tp.partition)

    def leave(self) -> None:
        """Leave the group at once, so the others take this worker's partitions without waiting for its TTL."""
        try:
            self.membership.leave()
        except redis.RedisError as exc:
            log.warning("could not leave the group cleanly: %s", exc)
