"""Prometheus metrics of an ingest worker (names are a contract: dashboards and alerts use them).

Each worker has its own registry, so several workers can live in one process (tests). It is served
on ``--metrics-port`` beside ``/healthz`` and ``/readyz`` by :mod:`ingest.http_api`.

| metric | type | meaning |
|---|---|---|
| ``sketchgen_ingest_records_total`` | counter | rows folded into the sketch by this worker |
| ``sketchgen_ingest_rejected_total{reason}`` | counter | records sent to the dead-letter topic |
| ``sketchgen_ingest_flushes_total`` | counter | successful atomic flushes to Redis |
| ``sketchgen_ingest_flush_seconds`` | histogram | duration of one flush (all partitions) |
| ``sketchgen_ingest_batch_records`` | histogram | rows per flushed partition delta |
| ``sketchgen_ingest_lag_records{partition}`` | gauge | log end offset minus consumed position |
| ``sketchgen_sketch_records`` | gauge | records in the stream's all-time sketch (all workers) |
| ``sketchgen_ingest_fenced_total`` | counter | flushes refused because another worker owns the partition |
| ``sketchgen_ingest_pauses_total`` | counter | wake-ups after a pause or stall past the member TTL |
| ``sketchgen_ingest_claims_lost_total`` | counter | claims dropped because another worker took the partition |
| ``sketchgen_ingest_dropped_rows_total`` | counter | unflushed rows dropped with a lost claim (re-read by the owner) |
| ``sketchgen_ingest_stale_batches_total`` | counter | folded batches discarded because their claim had ended |
| ``sketchgen_ingest_dead_letter_holds_total`` | counter | flushes held back because dead letters were unconfirmed |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.decode import ALL_REASONS


class IngestMetrics:
    """The worker's metrics, registered in a private registry (see module docstring)."""

    def __init__(self, stream: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = {"stream": stream}
        self._stream = stream
        r = self.registry
        self.records = Counter(
            "sketchgen_ingest_records", "Rows folded into the sketch by this worker.", ["stream"], registry=r
        ).labels(**labels)
        self._rejected = Counter(
            "sketchgen_ingest_rejected", "Records rejected to the dead-letter topic, by reason.",
            ["stream", "reason"], registry=r,
        )
        for reason in ALL_REASONS:  # export zeros so rate() works before the first bad record
            self._rejected.labels(stream=stream, reason=reason)
        self.flushes = Counter(
            "sketchgen_ingest_flushes", "Successful atomic flushes to Redis.", ["stream"], registry=r
        ).labels(**labels)
        self.flush_seconds = Histogram(
            "sketchgen_ingest_flush_seconds", "Duration of one flush to Redis, all partitions.", ["stream"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        ).labels(**labels)
        self.batch_records = Histogram(
            "sketchgen_ingest_batch_records", "Rows per flushed partition delta.", ["stream"],
            buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000), registry=r,
        ).labels(**labels)
        self._lag = Gauge(
            "sketchgen_ingest_lag_records", "Log end offset minus consumed position.", ["stream", "partition"],
            registry=r,
        )
        self.sketch_records = Gauge(
            "sketchgen_sketch_records", "Records in the stream's all-time sketch.", ["stream"], registry=r
        ).labels(**labels)
        self.fenced = Counter(
            "sketchgen_ingest_fenced", "Flushes refused because another worker owns the partition.", ["stream"],
            registry=r,
        ).labels(**labels)
        self.pauses = self._counter("sketchgen_ingest_pauses", "Wake-ups after a pause or stall past the member TTL.")
        self.claims_lost = self._counter(
            "sketchgen_ingest_claims_lost", "Claims dropped because another worker took the partition."
        )
        self.dropped_rows = self._counter(
            "sketchgen_ingest_dropped_rows", "Unflushed rows dropped with a lost claim (re-read by the new owner)."
        )
        self.stale_batches = self._counter(
            "sketchgen_ingest_stale_batches", "Folded batches discarded because the claim they were read under ended."
        )
        self.dead_letter_holds = self._counter(
            "sketchgen_ingest_dead_letter_holds", "Partition flushes held back because dead letters were unconfirmed."
        )
        self.stream = stream

    def _counter(self, name: str, doc: str) -> Counter:
        return Counter(name, doc, ["stream"], registry=self.registry).labels(stream=self._stream)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(stream=self.stream, reason=reason).inc()

    def set_lag(self, partition: str, lag: int) -> None:
        self._lag.labels(stream=self.stream, partition=partition).set(lag)

    def forget_lag(self, partition: str) -> None:
        try:
            self._lag.remove(self.stream, partition)
        except KeyError:
            pass
