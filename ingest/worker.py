"""The ingest worker: Kafka → sketch in Redis, exactly once (docs/ingest.md).

The worker keeps three concerns in three homes:

* **consuming** — this module's loop (:meth:`IngestWorker.run`): poll Kafka, hand each
  partition's records to the fold process (:mod:`ingest.fold`) together with the claim they
  were read under, apply finished batches to exactly those claims;
* **ownership and state** — :mod:`ingest.ownership`: which partitions this worker holds, one
  :class:`~ingest.ownership.OwnedPartition` per claim (epoch) with its buffer of not yet
  flushed sums and dead letters. Who owns what is decided by :mod:`ingest.membership` (live
  members by Redis's clock, round-robin); a claim fences the previous owner in Redis;
* **checkpointing** — :mod:`ingest.flusher`: every ``flush_ms`` (or ``flush_records`` rows)
  each dirty claim's dead letters are confirmed by the broker, then its buffer goes to Redis
  in one atomic script with its new next offset and time buckets, fenced by its epoch.

Rows read under one claim are only ever flushed under that claim (the ownership invariant);
a crash loses only unflushed buffers, re-read from the offsets in Redis by the next owner;
a worker that wakes from a pause checks its claims before writing anything. Hence every
valid record is counted exactly once, and every rejected one reaches the dead-letter topic
at least once.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import operator
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from http.server import ThreadingHTTPServer

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest.dead_letters import DeadLetter, DeadLetterQueue, max_dead_letter_bytes
from ingest.decode import MAX_VALUE_BYTES, RecordError
from ingest.flusher import Flusher, StopBoundedRetry, StopDeadline, client_retry
from ingest.fold import Folder, Job
from ingest.health import ReadinessProber, WorkerHealth
from ingest.http_api import serve
from ingest.kafka_connect import client_config, connect_error
from ingest.kafka_security import KafkaSecurity
from ingest.membership import Membership, assign
from ingest.metrics import IngestMetrics
from ingest.ownership import OwnedPartition, PartitionOwnership
from sketch_store.errors import SketchgenError
from sketch_store.redis_store import SketchStore

log = logging.getLogger(__name__)

_VALUE = operator.attrgetter("value")
_HEADERS = operator.attrgetter("headers")
_TIMESTAMP = operator.attrgetter("timestamp")

IN_FLIGHT = 8  # polled batches being decoded and folded while the next poll runs
#: How long a stopping worker retries its final flush through a Redis outage (``--stop-timeout``).
DEFAULT_STOP_TIMEOUT_S = 20.0
ENV_STOP_TIMEOUT = "SKETCHGEN_STOP_TIMEOUT"


def resolve_stop_timeout(flag: float | None, env: Mapping[str, str] | None = None) -> float:
    """``--stop-timeout``, else ``SKETCHGEN_STOP_TIMEOUT`` (empty: unset), else 20 s; checked positive.

    Like the connection settings (:mod:`sketchgen.settings`): flag, then environment, then default.
    """
    env = os.environ if env is None else env
    if flag is not None:
        value = flag
    elif env.get(ENV_STOP_TIMEOUT):
        try:
            value = float(env[ENV_STOP_TIMEOUT])
        except ValueError:
            raise SketchgenError(
                f"{ENV_STOP_TIMEOUT} must be a number of seconds, got {env[ENV_STOP_TIMEOUT]!r}"
            ) from None
    else:
        value = DEFAULT_STOP_TIMEOUT_S
    check_stop_timeout(value)
    return value


def check_stop_timeout(seconds: float) -> None:
    if not (seconds > 0 and math.isfinite(seconds)):
        raise SketchgenError(f"--stop-timeout must be a positive number of seconds, got {seconds}")


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
    #: after SIGTERM, Redis is retried this long (from the signal) for the final flush, then exit 2
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.flush_ms <= 0 or self.flush_records <= 0:
            raise SketchgenError("--flush-ms and --flush-records must be positive")
        if not self.stall_timeout_s > 0:
            raise SketchgenError(f"--stall-timeout must be positive, got {self.stall_timeout_s}")
        check_stop_timeout(self.stop_timeout_s)
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
        self.incarnation = store.incarnation(config.stream)
        self.buckets = store.bucket_config(config.stream)
        self.metrics = metrics or IngestMetrics(config.stream)
        self.ownership = PartitionOwnership(
            store, config.stream, self.spec.m, self.buckets, self.metrics, incarnation=self.incarnation
        )
        self.stop_event = threading.Event()
        self.stopping = StopDeadline(self.stop_event, config.stop_timeout_s)
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        self._last_lag = 0.0
        self._last_rebalance = 0.0
        self._last_member_beat = time.monotonic()
        self._cooldown: dict[TopicPartition, float] = {}
        self._folder = Folder(self.spec, self.buckets.fine_seconds, config.max_value_bytes)
        self._inflight: collections.deque[tuple[Future, list]] = collections.deque()
        self._positioned: dict[TopicPartition, OwnedPartition] = {}  # claims the consumer was seeked for
        self.dead_letters: DeadLetterQueue | None = None
        self.flusher: Flusher | None = None
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
                **common, acks="all", linger_ms=5, max_request_size=max_dead_letter_bytes(self.config.max_value_bytes),
                max_block_ms=10_000,  # a send waiting for the topic's metadata fails (and is retried) in 10 s
            )
        except KafkaError as exc:
            raise connect_error(self.config.kafka, self.config.kafka_security, exc) from None
        self.dead_letters = DeadLetterQueue(self.producer, self.config.dead_letter_topic)
        self.flusher = Flusher(self.ownership, self.dead_letters, self.metrics, self.stopping, self.health.beat)
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
        """SIGTERM and SIGINT stop the loop; the worker then flushes and leaves the group.

        The stop deadline (``stop_timeout_s``) starts at the first signal: through a Redis outage
        the final flush is retried until then (:class:`~ingest.flusher.StopDeadline`).
        """
        def handler(signum: int, _frame: object) -> None:
            log.info("received %s: flushing and leaving the group (Redis retried for up to %g s)",
                     signal.Signals(signum).name, self.config.stop_timeout_s)
            self.stopping.begin()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Consume until :attr:`stop_event` is set, then flush and close cleanly.

        Meanwhile the store's client retries Redis as configured until the stop deadline, and no
        more after it (:class:`~ingest.flusher.StopBoundedRetry`), so a stop ends in time even when
        a command is retrying through an outage; the client's own policy is put back at the end.
        """
        client = self.store.client
        policy = client_retry(client)
        client.set_retry(StopBoundedRetry(policy or Retry(NoBackoff(), 0), self.stopping.remaining))
        self._start_http()
        try:
            self._connect()
            self._consume()
        finally:
            self._stop_http()
            if policy is not None:
                client.set_retry(policy)

    def _consume(self) -> None:
        assert self.consumer is not None
        try:
            while not self.stop_event.is_set():
                self.health.beat()
                self._rebalance()
                self.health.beat()
                if not len(self.ownership):
                    self._drain()  # batches of claims that ended: dropped, not kept for a later claim
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
            beat = self.membership.heartbeat()
        except redis.RedisError as exc:
            log.warning("membership heartbeat failed (%s); keeping current partitions", exc)
            return
        self._last_member_beat = time.monotonic()
        self.health.member()
        if beat.lapsed:
            self._lapsed("its group membership expired (no heartbeat within the member TTL, by Redis's clock)")
        partitions = self.consumer.partitions_for_topic(self.config.topic)
        if not partitions:
            log.info("topic %s has no partitions yet; waiting", self.config.topic)
            self.health.partitions(0, set(), {tp.partition for tp in self.ownership.partitions()})
            return
        topic_partitions = [TopicPartition(self.config.topic, p) for p in sorted(partitions)]
        wanted = set(assign(topic_partitions, beat.members, self.member_id))
        current = self.ownership.partitions()
        released = current - wanted
        if released:
            self._release(released)
        acquired = {tp for tp in wanted - current if self._cooldown.get(tp, 0.0) <= now}
        for tp in sorted(acquired):
            self.ownership.take(tp)
        if released or acquired:
            self._assign()
        self.health.partitions(
            len(partitions), {tp.partition for tp in wanted}, {tp.partition for tp in self.ownership.partitions()}
        )

    def _check_awake(self) -> None:
        """Before writing: after a gap of half a member TTL without a heartbeat (a pause), heartbeat now.

        The heartbeat tells, by Redis's clock, whether our membership lapsed meanwhile; if it
        did, :meth:`_lapsed` drops the claims Redis no longer honours before anything is written.
        """
        if time.monotonic() - self._last_member_beat > self.config.member_ttl_s / 2:
            self._rebalance()

    def _lapsed(self, why: str) -> None:
        """After a pause: before writing anything, drop every claim Redis no longer honours."""
        self.metrics.pauses.inc()
        log.warning("this worker was paused or stalled: %s; checking its claims before writing", why)
        lost = self.ownership.verify("it was paused past its membership")
        for owned in lost:
            self._cooldown[owned.tp] = time.monotonic() + self.config.fenced_cooldown_s
        if lost:
            self._assign()

    def _assign(self) -> None:
        """Point the consumer at the claims held now; a new claim starts at the offset Redis stored."""
        assert self.consumer is not None
        held = self.ownership.all()
        self.consumer.assign([o.tp for o in held])  # kafka-python keeps the positions of partitions kept
        for owned in held:
            if self._positioned.get(owned.tp) is owned:
                continue
            if owned.claim.next_offset is None:
                self.consumer.seek_to_beginning(owned.tp)
            else:
                self.consumer.seek(owned.tp, owned.claim.next_offset)
            self._positioned[owned.tp] = owned
        self._positioned = {o.tp: o for o in held}
        self.health.owned({o.tp.partition for o in held})

    def _release(self, tps: set[TopicPartition]) -> None:
        """Flush and hand over partitions this worker no longer owns."""
        self._drain()  # batches read under these claims go out with their last flush
        releasing = [o for o in self.ownership.all() if o.tp in tps]
        self._flush(releasing)
        for owned in releasing:
            self.ownership.drop(owned)
            log.info("handed over %s:%d", owned.tp.topic, owned.tp.partition)

    def _leave(self) -> None:
        try:
            self.membership.leave()
        except redis.RedisError as exc:
            log.warning("could not leave the group cleanly: %s", exc)

    # -- consuming ---------------------------------------------------------------
    #
    # The main thread polls Kafka; decoding and the feature kernel run in a child process
    # (ingest.fold) on the other core while the next polls parse records. Up to
    # ``IN_FLIGHT`` batches are in flight; each carries the claims (OwnedPartition objects)
    # its records were read under, and is applied in order to exactly those claims.

    def _poll_once(self) -> None:
        assert self.consumer is not None
        batch = self.consumer.poll(timeout_ms=100, max_records=self.config.poll_records)
        pending = [p for tp, records in batch.items() if (p := self._collect(tp, records)) is not None]
        if pending:
            jobs = [self._job(records) for _, records, _ in pending]
            self._inflight.append((self._folder.submit(jobs), pending))
        self._apply_done()

    def _apply_done(self) -> None:
        """Apply the batches whose folding finished (and the oldest ones beyond ``IN_FLIGHT``)."""
        if self._inflight:
            self._check_awake()  # before any dead letter is sent
        while len(self._inflight) > IN_FLIGHT or (self._inflight and self._inflight[0][0].done()):
            self._apply(*self._inflight.popleft())

    def _collect(self, tp: TopicPartition, records: list) -> tuple[OwnedPartition, list, int] | None:
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

    def _drain(self) -> None:
        """Apply every batch in flight, in order."""
        if self._inflight:
            self._check_awake()  # before any dead letter is sent
        while self._inflight:
            self._apply(*self._inflight.popleft())

    def _apply(self, future: Future, pending: list[tuple[OwnedPartition, list, int]]) -> None:
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
                self._cooldown[owned.tp] = time.monotonic() + self.config.fenced_cooldown_s
                self.ownership.lose(owned, f"a batch from offset {start} arrived while the claim's buffer ends at "
                                           f"{owned.buffer.next_offset} (out of order: refused)")
                self._assign()
                continue
            for index, reason, detail in folded.rejects:
                self._dead_letter(owned, records[index], RecordError(reason, detail))
            buf = owned.buffer
            for start, total, n in folded.buckets:
                buf.add(total, n, float(start))
                self._pending_rows += n
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

    # -- flushing ------------------------------------------------------------------

    def _flush_due(self) -> bool:
        elapsed_ms = (time.monotonic() - self._last_flush) * 1000.0
        return self._pending_rows >= self.config.flush_records or (
            elapsed_ms >= self.config.flush_ms and any(o.dirty for o in self.ownership.all())
        )

    def flush(self) -> None:
        """Write every dirty claim to Redis (:mod:`ingest.flusher`), then commit offsets to Kafka (lag only).

        Batches still being folded are not waited for: they land in their claims' buffers
        afterwards and go out with the next flush (so the pipeline keeps running while we flush).
        """
        self._flush(self.ownership.all())

    def _flush(self, claims: list[OwnedPartition]) -> None:
        self._last_flush = time.monotonic()
        if not any(o.dirty for o in claims):
            return
        self._check_awake()
        assert self.flusher is not None
        result = self.flusher.flush(claims)
        for owned in result.lost:
            self._cooldown[owned.tp] = time.monotonic() + self.config.fenced_cooldown_s
        if result.lost:
            self._assign()
        self._hold(result.held)
        self._pending_rows = sum(o.buffer.count for o in self.ownership.all())
        if result.committed and self.consumer is not None:
            try:
                self.consumer.commit_async(offsets=result.committed)
            except KafkaError as exc:  # only lag monitoring depends on it
                log.debug("offset commit to Kafka failed: %s", exc)

    def _hold(self, held: list[OwnedPartition]) -> None:
        """Stop reading the partitions whose dead letters are unconfirmed, and resume the others."""
        assert self.consumer is not None
        tps = {o.tp for o in held}
        paused = self.consumer.paused()
        if tps - paused:
            self.consumer.pause(*(tps - paused))
        current = self.ownership.partitions()
        if (paused - tps) & current:
            self.consumer.resume(*((paused - tps) & current))
        self.health.dead_letters(self.dead_letters.last_error if held else None)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < self.config.lag_interval_s or self.consumer is None:
            return
        self._last_lag = now
        try:
            for tp in sorted(self.ownership.partitions()):
                # highwater (log end seen by the last fetch): ListOffsets on Tansu reports a batch start instead
                high = self.consumer.highwater(tp)
                if high is not None:
                    self.metrics.set_lag(str(tp.partition), max(0, high - self.consumer.position(tp)))
            self.metrics.sketch_records.set(self.store.total_count(self.config.stream))
        except (KafkaError, redis.RedisError) as exc:
            log.debug("lag update failed: %s", exc)
