"""Every Kafka client of the project, and its settings, built in one place.

* :func:`check_kafka`: a fast reachability probe (a TCP connect to each bootstrap address), so a
  wrong address fails in seconds with one clear message — kafka-python itself retries a dead
  bootstrap address for 30 s and then raises ``KafkaTimeoutError``. ``/readyz`` runs it too
  (:class:`ingest.health.ReadinessProber`).
* :func:`client_config`: what every client is built from — the checked bootstrap list plus the
  TLS/SASL settings of :mod:`ingest.kafka_security` and the client's own settings.
* The clients themselves, each with its settings here and a failure to connect reported by
  :func:`connect_error`: the ingest worker's consumer (:func:`ingest_consumer`) and dead-letter
  producer (:func:`dead_letter_producer`), the record producers of ``sketchgen produce`` and of the
  demo (:func:`record_producer`), and the admin client that creates topics (:func:`ensure_topic`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.dead_letters import max_dead_letter_bytes
from ingest.kafka_security import KafkaSecurity
from sketch_store.errors import SketchgenError

log = logging.getLogger(__name__)

C = TypeVar("C")

#: ``sketchgen produce``: every record acknowledged by all in-sync replicas, large batches.
PRODUCE_SETTINGS: dict[str, object] = {"linger_ms": 20, "acks": "all", "batch_size": 256 * 1024,
                                       "client_id": "sketchgen-produce"}
#: The demo's feed on the embedded (plaintext, single-broker) stack.
DEMO_SETTINGS: dict[str, object] = {"linger_ms": 20}
ADMIN_CLIENT_ID = "sketchgen-admin"


def bootstrap_list(bootstrap: str) -> list[str]:
    """``"a:9092,b:9092"`` → ``["a:9092", "b:9092"]``; a missing port means 9092."""
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    if not servers:
        raise SketchgenError("no Kafka bootstrap server given")
    return [s if ":" in s.rsplit("]", 1)[-1] else f"{s}:9092" for s in servers]


def check_kafka(bootstrap: str, timeout: float = 3.0) -> list[str]:
    """Raise :class:`SketchgenError` unless at least one bootstrap server accepts a TCP connection."""
    servers = bootstrap_list(bootstrap)
    errors = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return servers
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
    raise SketchgenError(f"cannot reach Kafka at {bootstrap} ({'; '.join(errors)})")


def client_config(bootstrap: str, security: KafkaSecurity | None = None, **extra: object) -> dict[str, object]:
    """Keyword arguments for a kafka-python client: reachable bootstrap servers, TLS/SASL settings, ``extra``."""
    security = security or KafkaSecurity()
    return {"bootstrap_servers": check_kafka(bootstrap), **security.client_kwargs(), **extra}


def connect_error(bootstrap: str, security: KafkaSecurity | None, exc: Exception) -> SketchgenError:
    """One clear error for a Kafka client that could not connect, naming the security settings (no password)."""
    security = security or KafkaSecurity()
    hint = "" if security.protocol == "PLAINTEXT" else "; check the credentials, CA file and listener protocol"
    return SketchgenError(f"cannot connect to Kafka at {bootstrap} ({security.describe()}): {exc}{hint}")


def open_client(kind: Callable[..., C], bootstrap: str, security: KafkaSecurity | None, **settings: object) -> C:
    """``kind(**client_config(...))``; a client that cannot connect raises :func:`connect_error`'s error."""
    try:
        return kind(**client_config(bootstrap, security, **settings))
    except KafkaError as exc:
        raise connect_error(bootstrap, security, exc) from None


def ingest_client_id(stream: str) -> str:
    """The client id of an ingest worker's consumer and dead-letter producer."""
    return f"sketchgen-ingest-{stream}"


def ingest_consumer(bootstrap: str, security: KafkaSecurity | None, stream: str, group_id: str,
                    poll_records: int, max_value_bytes: int) -> KafkaConsumer:
    """The worker's consumer: no auto-commit, partitions assigned by :mod:`ingest.membership`.

    The group id only names the offsets committed for lag monitoring; fetches are sized to carry
    at least a few records of ``max_value_bytes``.
    """
    return open_client(
        KafkaConsumer, bootstrap, security, client_id=ingest_client_id(stream),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=poll_records,
        max_partition_fetch_bytes=max(1 << 20, max_value_bytes * 4),
        fetch_max_bytes=max(50 << 20, max_value_bytes * 4),
    )


def dead_letter_producer(bootstrap: str, security: KafkaSecurity | None, stream: str,
                         max_value_bytes: int) -> KafkaProducer:
    """The worker's dead-letter producer: acknowledged by all replicas, requests large enough for a letter.

    Dead letters carry the rejected value (up to ``max_value_bytes``) plus headers; a send waiting
    for the topic's metadata fails (and is retried) in 10 s.
    """
    return open_client(
        KafkaProducer, bootstrap, security, client_id=ingest_client_id(stream),
        acks="all", linger_ms=5, max_request_size=max_dead_letter_bytes(max_value_bytes), max_block_ms=10_000,
    )


def record_producer(bootstrap: str, security: KafkaSecurity | None, settings: dict[str, object]) -> KafkaProducer:
    """A producer of records to ingest, with ``settings`` (:data:`PRODUCE_SETTINGS` or :data:`DEMO_SETTINGS`)."""
    return open_client(KafkaProducer, bootstrap, security, **settings)


def ensure_topic(bootstrap: str, topic: str, partitions: int, security: KafkaSecurity | None = None) -> None:
    """Create ``topic`` with ``partitions`` partitions unless it exists (``security``: TLS/SASL, default none)."""
    admin = open_client(KafkaAdminClient, bootstrap, security, client_id=ADMIN_CLIENT_ID)
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
            log.info("created topic %s with %d partitions", topic, partitions)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
