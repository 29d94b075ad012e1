"""Settings of one ingest worker (``sketchgen ingest``), checked when built; no Kafka or Redis import.

The ``sketchgen ingest`` flags read their defaults from :class:`IngestConfig`'s fields
(:func:`sketchgen.config_defaults.default`), so each default is written once, here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

from ingest.decode import MAX_VALUE_BYTES
from ingest.kafka_security import KafkaSecurity
from service_http.auth import HttpAuth
from sketch_store.errors import SketchgenError

#: Kafka's bootstrap servers when neither ``--kafka`` nor ``SKETCHGEN_KAFKA`` names them (:mod:`sketchgen.settings`).
DEFAULT_KAFKA = "localhost:9092"
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
    kafka: str = DEFAULT_KAFKA
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
    #: bearer tokens of the HTTP server on ``metrics_port`` (:mod:`service_http.auth`); None: open
    http_auth: HttpAuth | None = dataclasses.field(default=None, repr=False, compare=False)

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
