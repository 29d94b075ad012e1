"""Partition ownership: which claims this worker holds, and the one rule that keeps ingest exact.

**The invariant.** Every feature sum, count and dead letter read from a partition belongs to
the :class:`OwnedPartition` — the claim (epoch) — it was read under, and is only ever flushed
with that claim. A batch in flight carries a reference to the ``OwnedPartition`` it was
collected for; applying it adds to that object's buffer, never to whatever buffer the
partition has *now*. When a claim ends (handed over, fenced, or found lost after a pause) its
object is dropped with everything in it, and a later claim of the same partition starts a
fresh object at the offset stored in Redis. So rows read under an old claim can never reach a
new one, whatever the order in which pauses, fences, reassignments and in-flight batches
happen; and a flush under an old claim is refused by Redis (epoch check) anyway.

A worker that was paused or stalled past its membership TTL (its heartbeat reports the lapse,
by Redis's clock) calls :meth:`PartitionOwnership.verify` before it writes anything: every
claim Redis no longer honours is dropped, with a log line and
``sketchgen_ingest_claims_lost_total``.

Example
-------
>>> from kafka import TopicPartition
>>> from sketch_store.redis_store import BucketConfig, Claim
>>> owned = OwnedPartition.start(TopicPartition("t", 0), Claim("t", 0, epoch=3, next_offset=10), m=2,
...                              buckets=BucketConfig())
>>> owned.buffer.from_offset, owned.claim.epoch, owned.pending_dead_letters
(10, 3, [])
"""

from __future__ import annotations

import dataclasses
import logging

from kafka import TopicPartition

from ingest.dead_letters import DeadLetter
from ingest.metrics import IngestMetrics
from ingest.partition_buffer import PartitionBuffer
from sketch_store.redis_store import BucketConfig, Claim, SketchStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class OwnedPartition:
    """One claim of one partition and everything read under it (compared by identity)."""

    tp: TopicPartition
    claim: Claim
    buffer: PartitionBuffer
    pending_dead_letters: list[DeadLetter] = dataclasses.field(default_factory=list)

    @classmethod
    def start(cls, tp: TopicPartition, claim: Claim, m: int, buckets: BucketConfig) -> OwnedPartition:
        """A fresh claim: an empty buffer starting at the offset Redis holds for the partition."""
        return cls(tp, claim, PartitionBuffer(claim.next_offset, m, buckets))

    @property
    def dirty(self) -> bool:
        """Something to flush: offsets consumed, or dead letters waiting for their flush."""
        return self.buffer.dirty or bool(self.pending_dead_letters)

    def describe(self) -> str:
        return f"{self.tp.topic}:{self.tp.partition} (epoch {self.claim.epoch})"


class PartitionOwnership:
    """The claims one worker holds (see module docstring)."""

    def __init__(
        self, store: SketchStore, stream: str, m: int, buckets: BucketConfig, metrics: IngestMetrics,
        incarnation: str | None = None,
    ) -> None:
        self.store = store
        self.stream = stream
        self.incarnation = incarnation  # the creation of the stream this worker folds for (None: any)
        self.m = m
        self.buckets = buckets
        self.metrics = metrics
        self._owned: dict[TopicPartition, OwnedPartition] = {}

    # -- reading ---------------------------------------------------------------------------

    def __contains__(self, tp: TopicPartition) -> bool:
        return tp in self._owned

    def __len__(self) -> int:
        return len(self._owned)

    def get(self, tp: TopicPartition) -> OwnedPartition | None:
        return self._owned.get(tp)

    def partitions(self) -> set[TopicPartition]:
        return set(self._owned)

    def all(self) -> list[OwnedPartition]:
        return [self._owned[tp] for tp in sorted(self._owned)]

    def is_current(self, owned: OwnedPartition) -> bool:
        """True while ``owned`` is still this worker's claim of its partition."""
        return self._owned.get(owned.tp) is owned

    # -- changing ---------------------------------------------------------------------------

    def take(self, tp: TopicPartition) -> OwnedPartition:
        """Claim ``tp`` in Redis (fencing its previous owner) and start a fresh buffer at the stored offset."""
        claim = self.store.claim(self.stream, tp.topic, tp.partition, incarnation=self.incarnation)
        owned = OwnedPartition.start(tp, claim, self.m, self.buckets)
        self._owned[tp] = owned
        where = "the beginning" if claim.next_offset is None else f"offset {claim.next_offset}"
        log.info("took %s:%d at %s (epoch %d)", tp.topic, tp.partition, where, claim.epoch)
        return owned

    def drop(self, owned: OwnedPartition) -> None:
        """End the claim ``owned``: it and everything read under it are forgotten (no-op if already gone)."""
        if self._owned.get(owned.tp) is owned:
            del self._owned[owned.tp]
            self.metrics.forget_lag(str(owned.tp.partition))

    def lose(self, owned: OwnedPartition, why: str) -> None:
        """Drop a claim another worker now holds, saying so (log line + metric)."""
        rows, letters = owned.buffer.count, len(owned.pending_dead_letters)
        log.warning("lost %s: %s; dropping %d unflushed rows and %d unflushed dead letters (the new owner re-reads "
                    "them)", owned.describe(), why, rows, letters)
        self.metrics.claims_lost.inc()
        self.metrics.dropped_rows.inc(rows)
        self.drop(owned)

    def verify(self, why: str) -> list[OwnedPartition]:
        """Check every claim against Redis and drop those it no longer honours; returns the dropped ones."""
        owned = self.all()
        if not owned:
            return []
        held = self.store.claims_held(self.stream, [o.claim for o in owned])
        lost = [o for o, ok in zip(owned, held, strict=True) if not ok]
        for o in lost:
            self.lose(o, why)
        if not lost:
            log.info("%s: all %d claims still held", why, len(owned))
        return lost
