"""Checkpointing: each claim's buffer to Redis in one atomic step, after its dead letters are confirmed.

For one :class:`~ingest.ownership.OwnedPartition` a flush is, in this order:

1. confirm its pending dead letters with the broker (:meth:`DeadLetterQueue.confirm`); if any
   is unconfirmed, **hold**: nothing is written, the offset stays, the next flush tries again
   (``/readyz`` names the dead-letter topic meanwhile);
2. apply its buffer with *its own* claim (:meth:`SketchStore.flush`: sum, count, next offset
   and time buckets in one Lua step, fenced by epoch and stream incarnation), retrying through
   Redis outages;
3. on success, clear the buffer and its dead letters; if Redis refuses the claim (fenced), the
   claim is dropped with everything read under it.

Offsets are then committed to Kafka, for lag monitoring only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import redis
from kafka.structs import OffsetAndMetadata

from ingest.dead_letters import DeadLetterQueue
from ingest.metrics import IngestMetrics
from ingest.ownership import OwnedPartition, PartitionOwnership
from sketch_store.errors import SketchgenError
from sketch_store.redis_store import FencedError

log = logging.getLogger(__name__)

STOP_FLUSH_ATTEMPTS = 5  # when stopping, give up on an unreachable Redis after this many tries


@dataclasses.dataclass
class FlushResult:
    """What one flush did: offsets to commit to Kafka, claims held back by dead letters, claims lost."""

    committed: dict = dataclasses.field(default_factory=dict)
    held: list[OwnedPartition] = dataclasses.field(default_factory=list)
    lost: list[OwnedPartition] = dataclasses.field(default_factory=list)


class Flusher:
    """Writes claims' buffers to Redis (see module docstring)."""

    def __init__(
        self, ownership: PartitionOwnership, dead_letters: DeadLetterQueue, metrics: IngestMetrics,
        stop_event: threading.Event, on_retry: callable = lambda: None,  # type: ignore[valid-type]
    ) -> None:
        self.ownership = ownership
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.stop_event = stop_event
        self.on_retry = on_retry  # called between retries (the loop's liveness beat)

    def flush(self, claims: list[OwnedPartition]) -> FlushResult:
        """Flush every dirty claim of ``claims`` that is still current (see module docstring)."""
        result = FlushResult()
        start = time.perf_counter()
        for owned in claims:
            if not owned.dirty or not self.ownership.is_current(owned):
                continue
            if self.dead_letters.confirm(owned.pending_dead_letters) is not None:
                self.metrics.dead_letter_holds.inc()
                result.held.append(owned)
                continue
            if self._write(owned):
                if owned.buffer.dirty:
                    result.committed[owned.tp] = OffsetAndMetadata(owned.buffer.next_offset, "", -1)
                self.metrics.records.inc(owned.buffer.count)
                self.metrics.batch_records.observe(owned.buffer.count)
                owned.buffer.reset()
                owned.pending_dead_letters.clear()
            else:
                result.lost.append(owned)
        self.metrics.flush_seconds.observe(time.perf_counter() - start)
        return result

    def _write(self, owned: OwnedPartition) -> bool:
        """Apply one claim's buffer; retry through Redis outages; False (claim dropped) if fenced."""
        buf = owned.buffer
        if not buf.dirty:
            return True  # only dead letters, of offsets already flushed: confirmed, nothing to write
        delay, attempts = 0.1, 0
        while True:
            try:
                status = self.ownership.store.flush(
                    self.ownership.stream, owned.claim, buf.from_offset, buf.next_offset, buf.total, buf.count,
                    buf.bucket_deltas(),
                )
                self.metrics.flushes.inc()
                if status == "duplicate":
                    log.info("flush of %s was already applied (retry after a lost reply)", owned.describe())
                return True
            except FencedError as exc:
                self.metrics.fenced.inc()
                self.ownership.lose(owned, str(exc))
                return False
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                attempts += 1
                if self.stop_event.is_set() and attempts >= STOP_FLUSH_ATTEMPTS:
                    # unflushed rows are not lost: the next owner re-reads them from Redis's offsets
                    raise SketchgenError(f"cannot flush to Redis while stopping: {exc}") from None
                log.warning("Redis unavailable (%s); retrying flush in %.1fs", exc, delay)
                self.on_retry()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
