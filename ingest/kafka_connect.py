"""Reaching Kafka: a fast reachability probe, so a wrong address fails in seconds with one clear message.

kafka-python itself retries a dead bootstrap address for 30 s and then raises
``KafkaTimeoutError``; :func:`check_kafka` answers first, with a TCP connect to each address.
:func:`client_config` is what every Kafka client of the project is built from: the checked bootstrap
list plus the TLS/SASL settings of :mod:`ingest.kafka_security`.
"""

from __future__ import annotations

import socket

from ingest.kafka_security import KafkaSecurity
from sketch_store.errors import SketchgenError


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
