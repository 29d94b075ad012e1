"""The ingest worker: Kafka → sketch in Redis, exactly once (BRIEF §4, §6).

The consume loop (:meth:`IngestWorker.run`) separates three concerns:

* **consuming** — a kafka-python consumer with manually assigned partitions; which worker
  owns which partition is decided by :mod:`ingest.membership` (live members in Redis,
  round-robin). When a worker takes a partition it *claims* it in Redis (its epoch bumped,
  fencing any previous owner) and seeks to the offset stored there; Kafka's own committed
  offsets (under the group id) are written after each flush for lag monitoring and
  autoscaling only, never read back;
* **state** — one :class:`~ingest.partition_buffer.PartitionBuffer` per partition holds the
  feature sums of records consumed since the last flush; bad records go to the dead-letter
  topic with the reason in a header and only advance the offset;
* **checkpointing** — every ``flush_ms`` (or ``flush_records`` rows) each dirty buffer is
  applied to Redis by one atomic script together with its new next offset and time buckets.
  Dead-letter records are flushed to Kafka first, so an offset never moves past a bad record
  that has not reached the dead-letter topic.

A crash loses only unflushed buffers, and their records are read again from the offsets
in Redis by whoever owns the partition next; a worker that lost its partition is refused by
the epoch check. Hence every valid record is counted exactly once.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import operator
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import ThreadingHTTPServer

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ingest.decode import MAX_VALUE_BYTES, RecordError
from ingest.fold import Folder, Job
from ingest.health import ReadinessProber, WorkerHealth
from ingest.http_api import serve
from ingest.kafka_connect import client_config, connect_error
from ingest.kafka_security import KafkaSecurity
from ingest.membership import Membership, assign
from ingest.metrics import IngestMetrics
from ingest.partition_buffer import PartitionBuffer
from sketch_store.errors import SketchgenError, SpecMismatchError
from sketch_store.redis_store import Claim, FencedError, SketchStore, StreamNotFoundError

log = logging.getLogger(__name__)

_VALUE = operator.attrgetter("value")
_HEADERS = operator.attrgetter("headers")
_TIMESTAMP = operator.attrgetter("timestamp")

STOP_FLUSH_ATTEMPTS = 5  # when stopping, give up on an unreachable Redis after this many tries
IN_FLIGHT = 8  # polled batches being decoded and folded while the next poll runs
REASON_HEADER = "sketchgen-reject-reason"
DETAIL_HEADER = "sketchgen-reject-detail"


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Settings of one ingest worker (see ``sketchgen ingest --help``)."""

    stream: str
    topic: str
    kafka: str = "localhost:9092"
    group: str | None = None
    dlq_topic: str | None = None
    flush_ms: int = 500
    flush_records: int = 100_000
    metrics_port: int = 0
    max_value_bytes: int = MAX_VALUE_BYTES
    poll_records: int = 10_000
    lag_interval_s: float = 5.0
    rebalance_interval_s: float = 1.0
    member_ttl_s: float = 6.0
    fenced_cooldown_s: float = 3.0
    kafka_security: KafkaSecurity = dataclasses.field(default_factory=KafkaSecurity)
    stall_timeout_s: float = 120.0  # /healthz turns 503 when the loop has not turned for this long
    probe_interval_s: float = 2.0  # how often /readyz's checks of Redis, the stream and Kafka run

    def __post_init__(self) -> None:
        if self.flush_ms <= 0 or self.flush_records <= 0:
            raise SketchgenError("--flush-ms and --flush-records must be positive")
        if not self.stall_timeout_s > 0:
            raise SketchgenError(f"--stall-timeout must be positive, got {self.stall_timeout_s}")
        if not self.topic:
            raise SketchgenError("a topic is required")

    @property
    def group_id(self) -> str:
        return self.group or f"sketchgen-{self.stream}"

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


class IngestWorker:
    """One worker of a group folding a topic into a stream's sketch (see module docstring)."""

    def __init__(self, config: IngestConfig, store: SketchStore, metrics: IngestMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.spec = store.get_spec(config.stream)
        self.buckets = store.bucket_config(config.stream)
        self.metrics = metrics or IngestMetrics(config.stream)
        self.claims: dict[TopicPartition, Claim] = {}
        self.buffers: dict[TopicPartition, PartitionBuffer] = {}
        self.stop_event = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        self._last_lag = 0.0
        self._last_rebalance = 0.0
        self._cooldown: dict[TopicPartition, float] = {}
        self._folder = Folder(self.spec, self.buckets.fine_seconds, config.max_value_bytes)
        self._inflight: collections.deque[tuple[Future, list]] = collections.deque()
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.membership = Membership(
            store.client, config.stream, config.group_id, self.member_id, ttl=config.member_ttl_s
        )
        self.health = WorkerHealth(config.stall_timeout_s, config.member_ttl_s)
        self._http: ThreadingHTTPServer | None = None
        self._prober: ReadinessProber | None = None

    # -- lifecycle -----------------------------------------------------------

    def _connect(self) -> None:
        common = client_config(
            self.config.kafka, self.config.kafka_security, client_id=f"sketchgen-ingest-{self.config.stream}"
        )
        try:
            self.consumer = KafkaConsumer(
                **common,
                group_id=self.config.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
                max_poll_records=self.config.poll_records,
                max_partition_fetch_bytes=max(1 << 20, self.config.max_value_bytes * 4),
                fetch_max_bytes=max(50 << 20, self.config.max_value_bytes * 4),
            )  # partitions are assigned by ingest.membership; the group id only names committed offsets
            # dead letters carry the rejected value (up to max_value_bytes) plus headers
            self.producer = KafkaProducer(
                **common, acks="all", linger_ms=5, max_request_size=self.config.max_value_bytes + (1 << 20)
            )
        except KafkaError as exc:
            raise connect_error(self.config.kafka, self.config.kafka_security, exc) from None
        self.health.connected()
        log.info(
            "ingest worker %s for stream %s: topic %s, group %s, dead letters to %s, Kafka %s, %s",
            self.member_id, self.config.stream, self.config.topic, self.config.group_id,
            self.config.dead_letter_topic, self.config.kafka_security.describe(), self.spec.describe(),
        )

    def _start_http(self) -> None:
        """Serve /metrics, /healthz and /readyz on ``metrics_port`` (0: off) and start the readiness prober."""
        if not self.config.metrics_port:
            return
        try:
            self._http = serve(self.metrics.registry, self.health, self.config.metrics_port)
        except OSError as exc:
            raise SketchgenError(
                f"cannot serve HTTP on port {self.config.metrics_port}: {exc.strerror or exc}"
            ) from None
        self._prober = ReadinessProber(
            self.health, self.store.client, self.config.stream, self.spec.fingerprint, self.config.kafka,
            interval_s=self.config.probe_interval_s,
        ).start()

    def _stop_http(self) -> None:
        if self._prober is not None:
            self._prober.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop; the worker then flushes and leaves the group."""
        def handler(signum: int, _frame: object) -> None:
            log.info("received %s: flushing and leaving the group", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Consume until :attr:`stop_event` is set, then flush and close cleanly."""
        self._start_http()
        try:
            self._connect()
            self._consume()
        finally:
            self._stop_http()

    def _consume(self) -> None:
        assert self.consumer is not None
        try:
            while not self.stop_event.is_set():
                self.health.beat()
                self._rebalance()
                self.health.beat()
                if not self.buffers:
                    self.stop_event.wait(0.2)
                    continue
                self._poll_once()
                if self._flush_due():
                    self.flush()
                    self.health.beat()
                self._update_lag()
            self.health.stopping()
            self._drain()
            self.flush()
        finally:
            self.health.stopping()
            self._leave()
            self._folder.close()
            self._close()

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("closing the consumer failed: %s", exc)
        if self.producer is not None:
            self.producer.close(timeout=10)
        log.info("ingest worker stopped")

    # -- partition ownership -------------------------------------------------

    def _rebalance(self) -> None:
        """Heartbeat; take the partitions this worker should own and hand over the others."""
        now = time.monotonic()
        if now - self._last_rebalance < self.config.rebalance_interval_s:
            return
        self._last_rebalance = now
        assert self.consumer is not None
        try:
            members = self.membership.heartbeat()
        except redis.RedisError as exc:
            log.warning("membership heartbeat failed (%s); keeping current partitions", exc)
            return
        self.health.member()
        partitions = self.consumer.partitions_for_topic(self.config.topic)
        if not partitions:
            log.info("topic %s has no partitions yet; waiting", self.config.topic)
            self.health.partitions(0, set(), {tp.partition for tp in self.buffers})
            return
        topic_partitions = [TopicPartition(self.config.topic, p) for p in sorted(partitions)]
        wanted = set(assign(topic_partitions, members, self.member_id))
        current = set(self.buffers)
        released = current - wanted
        if released:
            self._drain()  # a batch still in flight must not land in a later buffer of the same partition
            self._release(released)
        acquired = {tp for tp in wanted - current if self._cooldown.get(tp, 0.0) <= now}
        if released or acquired:
            self.consumer.assign(sorted((current - released) | acquired))
            if acquired:
                self._acquire(acquired)
        self.health.partitions(
            len(partitions), {tp.partition for tp in wanted}, {tp.partition for tp in self.buffers}
        )

    def _acquire(self, tps: set[TopicPartition]) -> None:
        """Claim partitions in Redis (fencing their previous owner) and seek to the stored offsets."""
        assert self.consumer is not None
        for tp in sorted(tps):
            claim = self.store.claim(self.config.stream, tp.topic, tp.partition)
            self.claims[tp] = claim
            if claim.next_offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, claim.next_offset)
            self.buffers[tp] = PartitionBuffer(claim.next_offset, self.spec.m, self.buckets)
            log.info(
                "took %s:%d at %s (epoch %d)", tp.topic, tp.partition,
                "the beginning" if claim.next_offset is None else f"offset {claim.next_offset}", claim.epoch,
            )

    def _release(self, tps: set[TopicPartition]) -> None:
        """Flush and hand over partitions this worker no longer owns."""
        self.flush(only=set(tps))
        for tp in tps:
            self._drop(tp)
            log.info("handed over %s:%d", tp.topic, tp.partition)

    def _drop(self, tp: TopicPartition) -> None:
        self.claims.pop(tp, None)
        self.buffers.pop(tp, None)
        self.metrics.forget_lag(str(tp.partition))

    def _leave(self) -> None:
        try:
            self.membership.leave()
        except redis.RedisError as exc:
            log.warning("could not leave the group cleanly: %s", exc)

    # -- consuming ---------------------------------------------------------------
    #
    # The main thread polls Kafka; decoding and the feature kernel run in a child process
    # (ingest.fold) on the other core while the next polls parse records. Up to
    # ``IN_FLIGHT`` batches are in flight; they are applied in order (sums added to the
    # buffers, rejects sent to the dead-letter topic), and all of them are drained before
    # flushing or changing partitions.

    def _poll_once(self) -> None:
        assert self.consumer is not None
        batch = self.consumer.poll(timeout_ms=100, max_records=self.config.poll_records)
        pending = [p for tp, records in batch.items() if (p := self._collect(tp, records)) is not None]
        if pending:
            jobs = [self._job(records) for _, records in pending]
            self._inflight.append((self._folder.submit(jobs), pending))
        while len(self._inflight) > IN_FLIGHT or (self._inflight and self._inflight[0][0].done()):
            self._apply(*self._inflight.popleft())

    def _collect(self, tp: TopicPartition, records: list) -> tuple[TopicPartition, list] | None:
        """The records of a partition this worker still has to fold (none if it no longer owns it)."""
        buf = self.buffers.get(tp)
        if buf is None or not records:
            return None  # fenced or not ours any more: the owner will read these records
        buf.start_at(records[0].offset)
        if records[0].offset < buf.next_offset:
            records = [r for r in records if r.offset >= buf.next_offset]
        return (tp, records) if records else None

    @staticmethod
    def _job(records: list) -> Job:
        values = list(map(_VALUE, records))
        timestamps = np.fromiter(map(_TIMESTAMP, records), dtype=np.int64, count=len(records))
        headers = list(map(_HEADERS, records))
        if any(headers) or None in values:
            return Job(values=values, headers=headers if any(headers) else None, timestamps_ms=timestamps)
        return Job.plain(values, timestamps)

    def _drain(self) -> None:
        """Apply every batch in flight, in order."""
        while self._inflight:
            self._apply(*self._inflight.popleft())

    def _apply(self, future: Future, pending: list) -> None:
        """Apply one folded batch: bucket sums into the buffers, rejects to the dead-letter topic."""
        for (tp, records), folded in zip(pending, future.result(), strict=True):
            for index, reason, detail in folded.rejects:
                self._dead_letter(tp, records[index], RecordError(reason, detail))
            buf = self.buffers.get(tp)
            if buf is None:
                continue  # handed over meanwhile: the new owner re-reads these records
            for start, total, n in folded.buckets:
                buf.add(total, n, float(start))
                self._pending_rows += n
            buf.advance(records[-1].offset + 1)

    def _dead_letter(self, tp: TopicPartition, record, exc: RecordError) -> None:
        assert self.producer is not None
        headers = [
            *(record.headers or []),
            (REASON_HEADER, exc.reason.encode()),
            (DETAIL_HEADER, exc.detail[:500].encode("utf-8", "replace")),
            ("sketchgen-source", f"{tp.topic}:{tp.partition}:{record.offset}".encode()),
        ]
        value = record.value if record.value is not None and len(record.value) <= self.config.max_value_bytes else b""
        self.producer.send(self.config.dead_letter_topic, value=value, key=record.key, headers=headers)
        self.metrics.rejected(exc.reason)
        log.warning("rejected %s:%d@%d (%s): %s", tp.topic, tp.partition, record.offset, exc.reason, exc.detail[:200])

    # -- flushing ------------------------------------------------------------------

    def _flush_due(self) -> bool:
        elapsed_ms = (time.monotonic() - self._last_flush) * 1000.0
        return self._pending_rows >= self.config.flush_records or (
            elapsed_ms >= self.config.flush_ms and any(b.dirty for b in self.buffers.values())
        )

    def flush(self, only: set[TopicPartition] | None = None) -> None:
        """Write every dirty buffer to Redis atomically, then commit offsets to Kafka (for lag only).

        Batches still being folded are not waited for: they land in the buffers afterwards
        and go out with the next flush (so the pipeline keeps running while we flush).
        """
        dirty = [tp for tp, b in self.buffers.items() if b.dirty and (only is None or tp in only)]
        self._last_flush = time.monotonic()
        if not dirty:
            return
        if self.producer is not None:
            self.producer.flush(timeout=30)  # dead letters are durable before offsets move past them
        start = time.perf_counter()
        committed: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in dirty:
            buf = self.buffers[tp]
            if self._flush_partition(tp, buf):
                committed[tp] = OffsetAndMetadata(buf.next_offset, "", -1)
                self.metrics.records.inc(buf.count)
                self.metrics.batch_records.observe(buf.count)
                buf.reset()
        self.metrics.flush_seconds.observe(time.perf_counter() - start)
        self._pending_rows = sum(b.count for b in self.buffers.values())
        if committed and self.consumer is not None:
            try:
                self.consumer.commit_async(offsets=committed)
            except KafkaError as exc:  # only lag monitoring depends on it
                log.debug("offset commit to Kafka failed: %s", exc)

    def _flush_partition(self, tp: TopicPartition, buf: PartitionBuffer) -> bool:
        """Write one buffer; retry through Redis outages; drop it if the partition was taken over."""
        claim = self.claims[tp]
        delay, attempts = 0.1, 0
        while True:
            try:
                status = self.store.flush(
                    self.config.stream, claim, buf.from_offset, buf.next_offset, buf.total, buf.count,
                    buf.bucket_deltas(),
                )
                self.metrics.flushes.inc()
                if status == "duplicate":
                    log.info("flush of %s:%d was already applied (retry after a lost reply)", tp.topic, tp.partition)
                return True
            except FencedError as exc:
                log.warning("%s; dropping %d unflushed rows", exc, buf.count)
                self.metrics.fenced.inc()
                self._drop(tp)
                self.health.owned({t.partition for t in self.buffers})
                self._cooldown[tp] = time.monotonic() + self.config.fenced_cooldown_s
                if self.consumer is not None:
                    self.consumer.assign(sorted(self.buffers))
                return False
            except (StreamNotFoundError, SpecMismatchError):
                raise
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                attempts += 1
                if self.stop_event.is_set() and attempts >= STOP_FLUSH_ATTEMPTS:
                    # unflushed rows are not lost: the next owner re-reads them from Redis's offsets
                    raise SketchgenError(f"cannot flush to Redis while stopping: {exc}") from None
                log.warning("Redis unavailable (%s); retrying flush in %.1fs", exc, delay)
                self.health.beat()  # retrying through an outage is the loop working, not wedged
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < self.config.lag_interval_s or self.consumer is None:
            return
        self._last_lag = now
        try:
            for tp in list(self.buffers):
                # highwater (log end seen by the last fetch): ListOffsets on Tansu reports a batch start instead
                high = self.consumer.highwater(tp)
                if high is not None:
                    self.metrics.set_lag(str(tp.partition), max(0, high - self.consumer.position(tp)))
            self.metrics.sketch_records.set(self.store.total_count(self.config.stream))
        except (KafkaError, redis.RedisError) as exc:
            log.debug("lag update failed: %s", exc)
