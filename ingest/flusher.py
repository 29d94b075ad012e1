"""Checkpointing: each claim's buffer to Redis in one atomic step, after its dead letters are confirmed.

For one :class:`~ingest.ownership.OwnedPartition` a flush is, in this order:

1. confirm its pending dead letters with the broker (:meth:`DeadLetterQueue.confirm`); if any
   is unconfirmed, **hold**: nothing is written, the offset stays, the next flush tries again
   (``/readyz`` names the dead-letter topic meanwhile);
2. apply its buffer with *its own* claim (:meth:`SketchStore.flush`: sum, count, next offset
   and time buckets in one Lua step, fenced by epoch and stream incarnation), retrying through
   Redis outages — while the worker runs, for as long as they last; once its stop has begun
   (SIGTERM), until the stop deadline (:class:`StopDeadline`, ``--stop-timeout``), then it fails
   with one line (the next owner re-reads the unflushed rows from the offsets in Redis);
3. on success, clear the buffer and its dead letters; if Redis refuses the claim (fenced), the
   claim is dropped with everything read under it.

Offsets are then committed to Kafka, for lag monitoring only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from kafka.structs import OffsetAndMetadata
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest.dead_letters import DeadLetterQueue
from ingest.metrics import IngestMetrics
from ingest.ownership import OwnedPartition, PartitionOwnership
from sketch_store.errors import SketchgenError
from sketch_store.redis_store import FencedError

log = logging.getLogger(__name__)


class StopDeadline:
    """The worker's stop: :attr:`event` is set when it begins, and Redis is retried until ``timeout_s`` after.

    The clock starts at :meth:`begin` (the SIGTERM handler), or, for a caller that sets :attr:`event`
    directly, the first time :meth:`remaining` finds it set.
    """

    def __init__(self, event: threading.Event, timeout_s: float) -> None:
        self.event = event
        self.timeout_s = timeout_s
        self._began: float | None = None

    def begin(self) -> None:
        """The stop begins now (a second request keeps the first deadline)."""
        if self._began is None:
            self._began = time.monotonic()
        self.event.set()

    def remaining(self) -> float | None:
        """Seconds left until the deadline (≤ 0: passed); ``None`` while no stop was requested."""
        if not self.event.is_set():
            return None
        if self._began is None:
            self._began = time.monotonic()
        return self._began + self.timeout_s - time.monotonic()


class StopBoundedRetry(Retry):
    """A Redis client's retry policy, unchanged until the stop deadline passes, then no more retries.

    A command of the worker's client retries connection errors for about 50 s
    (:func:`sketch_store.redis_connect.connect`); one that is retrying when the stop deadline passes
    (a heartbeat or a flush in the middle of an outage) must fail then, not 50 s later, so that the
    stop ends within ``--stop-timeout`` plus one attempt (a refused connection fails at once, an
    unanswered one after the client's socket timeout). ``inner`` keeps doing the retrying; this
    only refuses to retry past the deadline, telling redis-py the attempt failed (``fail``: the
    connection is dropped) as it does when its own retries run out.

    Installed with ``client.set_retry``; every connection of the pool shares it (deep copies are the
    same object, so a command already retrying sees the deadline too).
    """

    def __init__(self, inner: Retry, remaining: Callable[[], float | None]) -> None:
        # the inner policy's back-off: a cluster client sleeps it between its own attempts
        super().__init__(getattr(inner, "_backoff", None) or NoBackoff(), inner.get_retries())
        self.inner = inner
        self.remaining = remaining

    def __deepcopy__(self, memo: dict) -> StopBoundedRetry:
        return self

    def update_supported_errors(self, specified_errors: Any) -> None:
        self.inner.update_supported_errors(specified_errors)

    def get_retries(self) -> int:
        return self.inner.get_retries()

    def update_retries(self, value: int) -> None:
        self.inner.update_retries(value)

    def call_with_retry(self, do: Callable[[], Any], fail: Callable[..., Any],
                        is_retryable: Callable[[Exception], bool] | None = None,
                        with_failure_count: bool = False) -> Any:
        failures = 0

        def retryable(error: Exception) -> bool:
            nonlocal failures
            failures += 1
            if is_retryable is not None and not is_retryable(error):
                return False
            left = self.remaining()
            if left is None or left > 0:
                return True
            if with_failure_count:
                fail(error, failures)
            else:
                fail(error)
            return False

        return self.inner.call_with_retry(do, fail, retryable, with_failure_count)


def client_retry(client: object) -> Retry | None:
    """The retry policy of a client: ``get_retry()``, or the ``retry`` attribute of a cluster client that lacks it."""
    get = getattr(client, "get_retry", None)
    return get() if callable(get) else getattr(client, "retry", None)


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
        stopping: StopDeadline, on_retry: callable = lambda: None,  # type: ignore[valid-type]
    ) -> None:
        self.ownership = ownership
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.stopping = stopping
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
        """Apply one claim's buffer; retry through Redis outages; False (claim dropped) if fenced.

        While running, an outage is retried for as long as it lasts (back-off 0.1 s doubling to 5 s,
        besides the client's own retries). Once the stop has begun it is retried until the stop
        deadline, then :class:`SketchgenError` ``cannot flush to Redis while stopping: …``.
        """
        buf = owned.buffer
        if not buf.dirty:
            return True  # only dead letters, of offsets already flushed: confirmed, nothing to write
        delay = 0.1
        while True:
            try:
                status = self.ownership.store.flush(
                    self.ownership.stream, owned.claim, buf.from_offset, buf.next_offset, buf.total, buf.count,
                    buf.bucket_deltas(), bounds=buf.bounds,
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
                self._wait_to_retry(exc, delay)
                delay = min(delay * 2, 5.0)

    def _wait_to_retry(self, exc: Exception, delay: float) -> None:
        """Sleep ``delay`` before the next try (no later than the stop deadline), or give up past it."""
        left = self.stopping.remaining()
        if left is None:
            log.warning("Redis unavailable (%s); retrying flush in %.1fs", exc, delay)
        elif left > 0:
            delay = min(delay, left)
            log.warning("Redis unavailable (%s) while stopping; retrying the final flush in %.1fs (giving up "
                        "in %.1fs)", exc, delay, left)
        else:
            # unflushed rows are not lost: the next owner re-reads them from Redis's offsets
            raise SketchgenError(f"cannot flush to Redis while stopping: {exc} (still failing "
                                 f"{self.stopping.timeout_s:g} s after the stop began: --stop-timeout)") from None
        self.on_retry()
        time.sleep(delay)
