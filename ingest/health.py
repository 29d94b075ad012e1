"""Liveness and readiness of an ingest worker (``/healthz`` and ``/readyz``, see :mod:`ingest.http_api`).

* **Live** while the consume loop keeps turning: it calls :meth:`WorkerHealth.beat` every iteration
  and between retries of a flush through a Redis outage; if no beat came for ``stall_timeout_s`` the
  loop is wedged and ``/healthz`` answers 503 (Kubernetes then restarts the pod; nothing is lost:
  unflushed rows are read again from the offsets in Redis). A Redis client retries for ~30 s before
  giving up on a command, so the timeout must be well above that (default 120 s).
* **Ready** when every one of these holds, checked by a :class:`ReadinessProber` thread (every
  ``interval_s``, with short timeouts and no retries, so a probe never waits on the loop) and by
  what the loop reports:

  1. the worker has connected its Kafka clients;
  2. Redis answers, and the stream exists there with the spec the worker folds with;
  3. a bootstrap server of Kafka accepts a connection;
  4. the worker is a live member of its group (its last membership heartbeat is newer than the TTL);
  5. the topic has partitions, and the worker holds every partition the assignment gives it.

  Otherwise ``/readyz`` answers 503 with the first failing reason.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import redis

from ingest.kafka_connect import check_kafka
from sketch_store.errors import SketchgenError
from sketch_store.redis_connect import RedisClient, quick_copy
from sketch_store.redis_keys import StreamKeys

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Probe:
    """The prober's last findings (``None``: not probed yet)."""

    redis_error: str | None = "not probed yet"
    stream_error: str | None = None
    kafka_error: str | None = "not probed yet"


class WorkerHealth:
    """What the consume loop and the prober report, and the verdicts the HTTP probes read (thread-safe)."""

    def __init__(
        self, stall_timeout_s: float = 120.0, member_ttl_s: float = 6.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.member_ttl_s = member_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._connected = False
        self._stopping = False
        self._last_member: float | None = None
        self._partitions: int | None = None
        self._wanted: set[int] = set()
        self._owned: set[int] = set()
        self._dead_letter_error: str | None = None
        self._probe = _Probe()

    # -- reports from the consume loop ------------------------------------------------

    def beat(self) -> None:
        """The loop is turning."""
        with self._lock:
            self._last_beat = self._clock()

    def connected(self) -> None:
        """The Kafka clients are built."""
        with self._lock:
            self._connected = True

    def stopping(self) -> None:
        """The worker is flushing and leaving: not ready any more."""
        with self._lock:
            self._stopping = True

    def member(self) -> None:
        """A membership heartbeat succeeded."""
        with self._lock:
            self._last_member = self._clock()

    def partitions(self, total: int | None, wanted: set[int], owned: set[int]) -> None:
        """The topic's partition count (``None``/0: unknown) and the partitions wanted and held after a rebalance."""
        with self._lock:
            self._partitions = total
            self._wanted, self._owned = set(wanted), set(owned)

    def owned(self, owned: set[int]) -> None:
        """The partitions held changed outside a rebalance (fenced by another worker)."""
        with self._lock:
            self._owned = set(owned)

    def dead_letters(self, error: str | None) -> None:
        """Dead letters could not be confirmed (``error``: why; offsets are held) or are flowing again (None)."""
        with self._lock:
            self._dead_letter_error = error

    # -- reports from the prober ----------------------------------------------------

    def probed(self, redis_error: str | None, stream_error: str | None, kafka_error: str | None) -> None:
        with self._lock:
            self._probe = _Probe(redis_error, stream_error, kafka_error)

    # -- verdicts -------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """``(alive, JSON body)``: alive unless the loop has not beaten for ``stall_timeout_s``."""
        with self._lock:
            idle = self._clock() - self._last_beat
        alive = idle <= self.stall_timeout_s
        body: dict[str, object] = {"ok": alive, "loop_idle_seconds": round(idle, 3)}
        if not alive:
            body["reason"] = f"the consume loop has not completed an iteration for {idle:.0f} s"
        return alive, body

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """``(ready, JSON body)``; the body names the first failing check as ``reason``."""
        with self._lock:
            reason = self._first_failure()
            body: dict[str, object] = {
                "ready": reason is None,
                "partitions": self._partitions or 0,
                "owned": sorted(self._owned),
                "assigned": sorted(self._wanted),
            }
        if reason is not None:
            body["reason"] = reason
        return reason is None, body

    def _first_failure(self) -> str | None:
        """The first readiness check that fails (call with the lock held)."""
        now = self._clock()
        missing = self._wanted - self._owned
        checks = (
            (self._stopping, "the worker is stopping"),
            (not self._connected, "the worker is starting (Kafka clients not connected yet)"),
            (self._probe.redis_error is not None, f"Redis: {self._probe.redis_error}"),
            (self._probe.stream_error is not None, f"{self._probe.stream_error}"),
            (self._probe.kafka_error is not None, f"Kafka: {self._probe.kafka_error}"),
            (self._dead_letter_error is not None, f"{self._dead_letter_error} (offsets held, retrying)"),
            (self._last_member is None or now - self._last_member > self.member_ttl_s,
             "not a live member of the group (no membership heartbeat within the member TTL)"),
            (not self._partitions, "the topic has no partitions yet (does it exist?)"),
            (bool(missing), f"partitions {sorted(missing)} are assigned to this worker but not held yet"),
        )
        return next((reason for failed, reason in checks if failed), None)


def quick_client(client: RedisClient, timeout: float = 2.0) -> RedisClient:
    """A client to the same Redis as ``client`` (same address, credentials, TLS; the same Sentinels or
    cluster) that never retries."""
    return quick_copy(client, timeout)


class ReadinessProber:
    """A daemon thread that checks Redis, the stream and Kafka every ``interval_s`` (see module docstring)."""

    def __init__(
        self,
        health: WorkerHealth,
        client: RedisClient,
        stream: str,
        fingerprint: str,
        bootstrap: str,
        interval_s: float = 2.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.health = health
        self.client = quick_client(client, timeout_s)
        self.meta_key = StreamKeys(stream).meta
        self.stream = stream
        self.fingerprint = fingerprint
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sketchgen-ingest-prober", daemon=True)

    def start(self) -> ReadinessProber:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval_s + 2 * self.timeout_s + 1)
        self.client.close()

    def _run(self) -> None:
        while True:
            self.probe_once()
            if self._stop.wait(self.interval_s):
                return

    def probe_once(self) -> None:
        """Check Redis (and the stream's spec there) and Kafka once; report to :attr:`health`."""
        redis_error = stream_error = kafka_error = None
        try:
            fingerprint = self.client.hget(self.meta_key, "fingerprint")
        except redis.RedisError as exc:
            redis_error = f"{type(exc).__name__}: {exc}"
        else:
            if fingerprint is None:
                stream_error = f"stream {self.stream!r} does not exist in Redis"
            elif fingerprint.decode() != self.fingerprint:
                stream_error = f"stream {self.stream!r} was recreated with another spec; restart the worker"
        try:
            check_kafka(self.bootstrap, timeout=self.timeout_s)
        except SketchgenError as exc:
            kafka_error = str(exc)
        self.health.probed(redis_error, stream_error, kafka_error)
