"""The ingest worker: Kafka → sketch in Redis, exactly once (docs/ingest.md).

:class:`IngestWorker` is the process's lifecycle — connect the Kafka clients, serve ``/metrics``,
``/healthz`` and ``/readyz``, stop on a signal, close — around four parts with one job each:

* **consuming** — :mod:`ingest.consume_loop`: poll Kafka, hand each partition's records to the
  fold process (:mod:`ingest.fold`) together with the claim they were read under, apply finished
  batches to exactly those claims;
* **partition ownership** — :mod:`ingest.partition_keeper` keeps the worker's claims
  (:mod:`ingest.ownership`, one :class:`~ingest.ownership.OwnedPartition` per claim with its
  buffer of not yet flushed sums and dead letters) in step with who should own what
  (:mod:`ingest.membership`: live members by Redis's clock, round-robin); a claim fences the
  previous owner in Redis;
* **when to flush** — :mod:`ingest.flush_schedule`: every ``flush_ms`` (or ``flush_records``
  rows), then pause the partitions held back by unconfirmed dead letters;
* **checkpointing** — :mod:`ingest.flusher`: each dirty claim's dead letters are confirmed by the
  broker, then its buffer goes to Redis in one atomic script with its new next offset and time
  buckets, fenced by its epoch.

Rows read under one claim are only ever flushed under that claim (the ownership invariant);
a crash loses only unflushed buffers, re-read from the offsets in Redis by the next owner;
a worker that wakes from a pause checks its claims before writing anything. Hence every
valid record is counted exactly once, and every rejected one reaches the dead-letter topic
at least once. The worker's settings are :class:`ingest.config.IngestConfig`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from http.server import ThreadingHTTPServer

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest.config import DEFAULT_STOP_TIMEOUT_S, ENV_STOP_TIMEOUT, IngestConfig, resolve_stop_timeout
from ingest.consume_loop import IN_FLIGHT, ConsumeLoop
from ingest.dead_letters import DeadLetterQueue
from ingest.flush_schedule import FlushSchedule
from ingest.flusher import Flusher, StopBoundedRetry, StopDeadline, client_retry
from ingest.fold import Folder
from ingest.health import ReadinessProber, WorkerHealth
from ingest.http_api import serve
from ingest.kafka_connect import dead_letter_producer, ingest_consumer
from ingest.membership import Membership
from ingest.metrics import IngestMetrics
from ingest.ownership import PartitionOwnership
from ingest.partition_keeper import PartitionKeeper
from sketch_store.errors import SketchgenError
from sketch_store.redis_store import SketchStore

__all__ = ["DEFAULT_STOP_TIMEOUT_S", "ENV_STOP_TIMEOUT", "IN_FLIGHT", "IngestConfig", "IngestWorker",
           "resolve_stop_timeout"]

log = logging.getLogger(__name__)


class IngestWorker:
    """One worker of a group folding a topic into a stream's sketch (see module docstring).

    Its parts exist once the Kafka clients are connected (:meth:`_connect`): :attr:`keeper`
    (partition ownership), :attr:`schedule` (flushing) and :attr:`loop` (consuming).
    """

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
        self._folder = Folder(self.spec, self.buckets.fine_seconds, config.max_value_bytes)  # starts its child now
        self.dead_letters: DeadLetterQueue | None = None
        self.flusher: Flusher | None = None
        self.keeper: PartitionKeeper | None = None
        self.schedule: FlushSchedule | None = None
        self.loop: ConsumeLoop | None = None
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.membership = Membership(
            store.client, config.stream, config.group_id, self.member_id, ttl=config.member_ttl_s
        )
        self.health = WorkerHealth(config.stall_timeout_s, config.member_ttl_s)
        self._http: ThreadingHTTPServer | None = None
        self._prober: ReadinessProber | None = None

    # -- lifecycle -----------------------------------------------------------

    def _connect(self) -> None:
        """Connect the consumer and the dead-letter producer (:mod:`ingest.kafka_connect`), and build the parts."""
        cfg = self.config
        self.consumer = ingest_consumer(cfg.kafka, cfg.kafka_security, cfg.stream, cfg.group_id, cfg.poll_records,
                                        cfg.max_value_bytes)
        self.producer = dead_letter_producer(cfg.kafka, cfg.kafka_security, cfg.stream, cfg.max_value_bytes)
        self.dead_letters = DeadLetterQueue(self.producer, cfg.dead_letter_topic)
        self.flusher = Flusher(self.ownership, self.dead_letters, self.metrics, self.stopping, self.health.beat)
        self.keeper = PartitionKeeper(cfg, self.consumer, self.membership, self.ownership, self.health, self.metrics,
                                      settle=lambda: self._drain(), flush=lambda claims: self._flush(claims))
        self.schedule = FlushSchedule(cfg, self.consumer, self.ownership, self.keeper, self.flusher,
                                      self.dead_letters, self.health)
        self.loop = ConsumeLoop(cfg, self.consumer, self._folder, self.ownership, self.keeper, self.schedule,
                                self.dead_letters, self.metrics, self.health, self.store)
        self.health.connected()
        log.info(
            "ingest worker %s for stream %s: topic %s, group %s, dead letters to %s, Kafka %s, %s",
            self.member_id, cfg.stream, cfg.topic, cfg.group_id,
            cfg.dead_letter_topic, cfg.kafka_security.describe(), self.spec.describe(),
        )

    def _start_http(self) -> None:
        """Serve /metrics, /healthz and /readyz on ``metrics_port`` (0: off) and start the readiness prober."""
        if not self.config.metrics_port:
            return
        try:
            self._http = serve(self.metrics.registry, self.health, self.config.metrics_port,
                               auth=self.config.http_auth)
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
        assert self.loop is not None and self.keeper is not None
        try:
            self.loop.run(self.stop_event)
        finally:
            self.health.stopping()
            self.keeper.leave()
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

    # -- the parts' steps, by name (a test drives the worker one step at a time) -------------

    def flush(self) -> None:
        """Write every dirty claim to Redis (:mod:`ingest.flusher`), then commit offsets to Kafka (lag only).

        Batches still being folded are not waited for: they land in their claims' buffers
        afterwards and go out with the next flush (so the pipeline keeps running while we flush).
        """
        self._flush(self.ownership.all())

    def _flush(self, claims: list) -> None:
        if self.schedule is not None:  # not connected yet: nothing was read, nothing to flush
            self.schedule.flush(claims)

    def _rebalance(self) -> None:
        assert self.keeper is not None
        self.keeper.rebalance()

    def _poll_once(self) -> None:
        assert self.loop is not None
        self.loop.poll_once()

    def _drain(self) -> None:
        assert self.loop is not None
        self.loop.drain()

    @property
    def _inflight(self) -> object:
        return self.loop.inflight if self.loop is not None else ()

    @property
    def _pending_rows(self) -> int:
        return self.schedule.pending_rows if self.schedule is not None else 0
