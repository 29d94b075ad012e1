"""The consume loop: poll Kafka, hand batches to the fold process, apply the folded results.

The main thread polls Kafka; decoding and the feature kernel run in a child process
(:mod:`ingest.fold`) on the other core while the next polls parse records. Up to
:data:`IN_FLIGHT` batches are in flight; each carries the claims
(:class:`~ingest.ownership.OwnedPartition` objects) its records were read under, and is applied
in order to exactly those claims: sums into their buffers, rejected records to the dead-letter
topic. A claim that ended meanwhile takes nothing (its partition's owner reads the records
again). Every turn the loop also rebalances (:class:`~ingest.partition_keeper.PartitionKeeper`),
flushes when due (:class:`~ingest.flush_schedule.FlushSchedule`) and, every ``lag_interval_s``,
reports the consumer lag.
"""

from __future__ import annotations

import collections
import logging
import operator
import threading
import time
from concurrent.futures import Future

import numpy as np
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ingest.config import IngestConfig
from ingest.dead_letters import DeadLetter, DeadLetterQueue
from ingest.decode import RecordError
from ingest.flush_schedule import FlushSchedule
from ingest.fold import Folder, Job
from ingest.health import WorkerHealth
from ingest.metrics import IngestMetrics
from ingest.ownership import OwnedPartition, PartitionOwnership
from ingest.partition_keeper import PartitionKeeper
from sketch_store.redis_store import SketchStore

log = logging.getLogger(__name__)

_VALUE = operator.attrgetter("value")
_HEADERS = operator.attrgetter("headers")
_TIMESTAMP = operator.attrgetter("timestamp")

IN_FLIGHT = 8  # polled batches being decoded and folded while the next poll runs

#: One claim's share of a polled batch: the claim, its records, and the offset they follow.
Pending = tuple[OwnedPartition, list, int]


class ConsumeLoop:
    """Polls, folds and applies (see module docstring)."""

    def __init__(
        self, config: IngestConfig, consumer: KafkaConsumer, folder: Folder, ownership: PartitionOwnership,
        keeper: PartitionKeeper, schedule: FlushSchedule, dead_letters: DeadLetterQueue,
        metrics: IngestMetrics, health: WorkerHealth, store: SketchStore,
    ) -> None:
        self.config, self.consumer, self.folder, self.ownership = config, consumer, folder, ownership
        self.keeper, self.schedule, self.dead_letters = keeper, schedule, dead_letters
        self.metrics, self.health, self.store = metrics, health, store
        #: batches being folded, oldest first, each with the claims its records were read under
        self.inflight: collections.deque[tuple[Future, list[Pending]]] = collections.deque()
        self.last_lag = 0.0

    def run(self, stop_event: threading.Event) -> None:
        """Turn until ``stop_event`` is set, then apply what is in flight and flush a last time."""
        while not stop_event.is_set():
            self.health.beat()
            self.keeper.rebalance()
            self.health.beat()
            if not len(self.ownership):
                self.drain()  # batches of claims that ended: dropped, not kept for a later claim
                stop_event.wait(0.2)
                continue
            self.poll_once()
            if self.schedule.due():
                self.schedule.flush(self.ownership.all())
                self.health.beat()
            self.update_lag()
        self.health.stopping()
        self.drain()
        self.schedule.flush(self.ownership.all())

    def poll_once(self) -> None:
        """Poll once, send what the claims held have not folded yet to the fold process, apply what is done."""
        batch = self.consumer.poll(timeout_ms=100, max_records=self.config.poll_records)
        pending = [p for tp, records in batch.items() if (p := self._collect(tp, records)) is not None]
        if pending:
            jobs = [self._job(records) for _, records, _ in pending]
            self.inflight.append((self.folder.submit(jobs), pending))
        self._apply_done()

    def _apply_done(self) -> None:
        """Apply the batches whose folding finished (and the oldest ones beyond ``IN_FLIGHT``)."""
        if self.inflight:
            self.keeper.check_awake()  # before any dead letter is sent
        while len(self.inflight) > IN_FLIGHT or (self.inflight and self.inflight[0][0].done()):
            self._apply(*self.inflight.popleft())

    def drain(self) -> None:
        """Apply every batch in flight, in order."""
        if self.inflight:
            self.keeper.check_awake()  # before any dead letter is sent
        while self.inflight:
            self._apply(*self.inflight.popleft())

    def _collect(self, tp: TopicPartition, records: list) -> Pending | None:
        """The records of a claim this worker holds that it has not folded yet, and where they start.

        ``start`` is the end of what this claim had read before: the batch covers offsets
        ``[start, last + 1)`` (a gap in Kafka's offsets inside it holds no records).
        """
        owned = self.ownership.get(tp)
        if owned is None or not records:
            return None  # fenced or not ours any more: the owner will read these records
        buf = owned.buffer
        buf.start_at(records[0].offset)
        if records[0].offset < buf.read_offset:
            records = [r for r in records if r.offset >= buf.read_offset]
        if not records:
            return None
        start = buf.read_offset
        buf.read_to(records[-1].offset + 1)
        return owned, records, start

    @staticmethod
    def _job(records: list) -> Job:
        values = list(map(_VALUE, records))
        timestamps = np.fromiter(map(_TIMESTAMP, records), dtype=np.int64, count=len(records))
        headers = list(map(_HEADERS, records))
        if any(headers) or None in values:
            return Job(values=values, headers=headers if any(headers) else None, timestamps_ms=timestamps)
        return Job.plain(values, timestamps)

    def _apply(self, future: Future, pending: list[Pending]) -> None:
        """Apply one folded batch to the claims it was read under: sums into their buffers, rejects out.

        A claim that ended meanwhile (handed over, fenced, lost after a pause) takes nothing:
        its records are read again by the partition's owner.
        """
        for (owned, records, start), folded in zip(pending, future.result(), strict=True):
            if not self.ownership.is_current(owned):
                self.metrics.stale_batches.inc()
                log.info("dropping a batch of %d records read under %s, which this worker no longer holds",
                         len(records), owned.describe())
                continue
            if not owned.buffer.follows(start):
                self.ownership.lose(owned, f"a batch from offset {start} arrived while the claim's buffer ends at "
                                           f"{owned.buffer.next_offset} (out of order: refused)")
                self.keeper.ended([owned])
                continue
            for index, reason, detail in folded.rejects:
                self._dead_letter(owned, records[index], RecordError(reason, detail))
            buf = owned.buffer
            for bucket_start, total, n in folded.buckets:
                buf.add(total, n, float(bucket_start))
                self.schedule.added(n)
            if folded.bounds is not None:
                buf.widen(folded.bounds)
            buf.advance(records[-1].offset + 1)

    def _dead_letter(self, owned: OwnedPartition, record, exc: RecordError) -> None:
        tp = owned.tp
        letter = DeadLetter.of(record.value, record.key, record.headers, tp.topic, tp.partition, record.offset,
                               exc.reason, exc.detail, self.config.max_value_bytes)
        self.dead_letters.send(letter)
        owned.pending_dead_letters.append(letter)
        self.metrics.rejected(exc.reason)
        log.warning("rejected %s:%d@%d (%s): %s", tp.topic, tp.partition, record.offset, exc.reason, exc.detail[:200])

    def update_lag(self) -> None:
        """Every ``lag_interval_s``: each held partition's lag and the sketch's record count, as metrics."""
        now = time.monotonic()
        if now - self.last_lag >= self.config.lag_interval_s:
            self.last_lag = now
            self._report_lag()

    def _report_lag(self) -> None:
        try:
            for tp in sorted(self.ownership.partitions()):
                # highwater (log end seen by the last fetch): ListOffsets on Tansu reports a batch start instead
                high = self.consumer.highwater(tp)
                if high is not None:
                    self.metrics.set_lag(str(tp.partition), max(0, high - self.consumer.position(tp)))
            self.metrics.sketch_records.set(self.store.total_count(self.config.stream))
        except (KafkaError, redis.RedisError) as exc:
            log.debug("lag update failed: %s", exc)
