"""When the worker flushes, and what follows a flush: held partitions paused, lost claims cooled down.

A flush is due every ``flush_ms`` while a claim is dirty, or as soon as ``flush_records`` rows
wait in the claims' buffers. :class:`FlushSchedule` then checks the worker is still awake (a
pause may have cost it its claims), has :class:`ingest.flusher.Flusher` write every dirty claim,
and acts on the result: the consumer stops reading the partitions whose dead letters are not
confirmed yet and resumes the others (``/readyz`` names the dead-letter topic meanwhile), the
claims Redis refused cool down (:meth:`ingest.partition_keeper.PartitionKeeper.ended`), and the
offsets written are committed to Kafka, for lag monitoring only.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from ingest.config import IngestConfig
from ingest.dead_letters import DeadLetterQueue
from ingest.flusher import Flusher
from ingest.health import WorkerHealth
from ingest.ownership import OwnedPartition, PartitionOwnership
from ingest.partition_keeper import PartitionKeeper

log = logging.getLogger(__name__)


class FlushSchedule:
    """Flushes the worker's claims when due (see module docstring)."""

    def __init__(
        self, config: IngestConfig, consumer: KafkaConsumer, ownership: PartitionOwnership, keeper: PartitionKeeper,
        flusher: Flusher, dead_letters: DeadLetterQueue, health: WorkerHealth,
    ) -> None:
        self.config, self.consumer, self.ownership, self.keeper = config, consumer, ownership, keeper
        self.flusher, self.dead_letters, self.health = flusher, dead_letters, health
        self.pending_rows = 0  # rows applied to the claims' buffers since the last flush
        self.last_flush = time.monotonic()

    def added(self, rows: int) -> None:
        """``rows`` more rows wait in the claims' buffers."""
        self.pending_rows += rows

    def due(self) -> bool:
        """``flush_records`` rows wait, or ``flush_ms`` passed since the last flush and a claim is dirty."""
        elapsed_ms = (time.monotonic() - self.last_flush) * 1000.0
        return self.pending_rows >= self.config.flush_records or (
            elapsed_ms >= self.config.flush_ms and any(o.dirty for o in self.ownership.all())
        )

    def flush(self, claims: list[OwnedPartition]) -> None:
        """Write the dirty ones of ``claims`` to Redis, then hold, cool down and commit as the result says."""
        self.last_flush = time.monotonic()
        if not any(o.dirty for o in claims):
            return
        self.keeper.check_awake()
        result = self.flusher.flush(claims)
        self.keeper.ended(result.lost)
        self.hold(result.held)
        self.pending_rows = sum(o.buffer.count for o in self.ownership.all())
        if result.committed:
            try:
                self.consumer.commit_async(offsets=result.committed)
            except KafkaError as exc:  # only lag monitoring depends on it
                log.debug("offset commit to Kafka failed: %s", exc)

    def hold(self, held: list[OwnedPartition]) -> None:
        """Stop reading the partitions whose dead letters are unconfirmed, and resume the others."""
        tps = {o.tp for o in held}
        paused = self.consumer.paused()
        if tps - paused:
            self.consumer.pause(*(tps - paused))
        current = self.ownership.partitions()
        if (paused - tps) & current:
            self.consumer.resume(*((paused - tps) & current))
        self.health.dead_letters(self.dead_letters.last_error if held else None)
