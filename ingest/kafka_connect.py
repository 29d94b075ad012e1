"""Reaching Kafka: a fast reachability probe, so a wrong address fails in seconds with one clear message.

kafka-python itself retries a dead bootstrap address for 30 s and then raises
``KafkaTimeoutError``; :func:`check_kafka` answers first, with a TCP connect to each address.
"""

from __future__ import annotations

import socket

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
