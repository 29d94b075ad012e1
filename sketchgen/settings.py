"""Connection settings shared by the streaming commands: flags, then environment, then defaults.

``--kafka BOOTSTRAP`` falls back to ``SKETCHGEN_KAFKA`` then ``localhost:9092``;
``--redis URL`` to ``SKETCHGEN_REDIS`` then ``redis://localhost:6379/0``. Kafka TLS/SASL settings
(``--kafka-security-protocol`` … or ``SKETCHGEN_KAFKA_SECURITY_PROTOCOL`` …) are resolved and validated
by :class:`ingest.kafka_security.KafkaSecurity`, for the commands that talk to Kafka.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from ingest.kafka_security import (
    ENV_CA_FILE,
    ENV_MECHANISM,
    ENV_PROTOCOL,
    ENV_USERNAME,
    MECHANISMS,
    PROTOCOLS,
    KafkaSecurity,
)

DEFAULT_KAFKA = "localhost:9092"
DEFAULT_REDIS = "redis://localhost:6379/0"


@dataclasses.dataclass(frozen=True)
class Connections:
    """Where Kafka and Redis are, resolved once per process."""

    kafka: str
    redis: str
    kafka_security: KafkaSecurity = dataclasses.field(default_factory=KafkaSecurity)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Connections:
        """Resolve flags, then environment, then defaults; Kafka security only for commands with Kafka flags."""
        has_kafka = hasattr(args, "kafka_security_protocol")
        return cls(
            kafka=getattr(args, "kafka", None) or os.environ.get("SKETCHGEN_KAFKA") or DEFAULT_KAFKA,
            redis=getattr(args, "redis", None) or os.environ.get("SKETCHGEN_REDIS") or DEFAULT_REDIS,
            kafka_security=KafkaSecurity.resolve(
                protocol=args.kafka_security_protocol, mechanism=args.kafka_sasl_mechanism,
                username=args.kafka_username, password_file=args.kafka_password_file, ca_file=args.kafka_ca_file,
            ) if has_kafka else KafkaSecurity(),
        )


def add_connection_args(parser: argparse.ArgumentParser, kafka: bool = True, redis: bool = True) -> None:
    """Add ``--kafka`` and/or ``--redis`` to a sub-command."""
    if kafka:
        parser.add_argument(
            "--kafka", metavar="BOOTSTRAP", help=f"Kafka bootstrap (env SKETCHGEN_KAFKA, default {DEFAULT_KAFKA})"
        )
        add_kafka_security_args(parser)
    if redis:
        parser.add_argument("--redis", metavar="URL", help=f"Redis URL (env SKETCHGEN_REDIS, default {DEFAULT_REDIS})")


def add_kafka_security_args(parser: argparse.ArgumentParser) -> None:
    """Kafka TLS/SASL flags; the password is read from the environment or a file, never from a flag value."""
    group = parser.add_argument_group("Kafka security (flags override the environment)")
    group.add_argument("--kafka-security-protocol", metavar="PROTOCOL",
                       help=f"{', '.join(PROTOCOLS)} (env {ENV_PROTOCOL}, default PLAINTEXT)")
    group.add_argument("--kafka-sasl-mechanism", metavar="MECHANISM",
                       help=f"{', '.join(MECHANISMS)} (env {ENV_MECHANISM})")
    group.add_argument("--kafka-username", metavar="USER", help=f"SASL user name (env {ENV_USERNAME})")
    group.add_argument("--kafka-password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    group.add_argument("--kafka-password-file", metavar="PATH",
                       help="file holding the SASL password (env SKETCHGEN_KAFKA_PASSWORD, or a file named by "
                            "SKETCHGEN_KAFKA_PASSWORD_FILE)")
    group.add_argument("--kafka-ca-file", metavar="PEM",
                       help=f"CA certificate(s) to verify the brokers (env {ENV_CA_FILE})")


class RefusePassword(argparse.Action):
    """``--kafka-password VALUE`` is refused (the value would show in ``ps``), without echoing the value.

    Declared so that argparse does not take it as an abbreviation of ``--kafka-password-file``.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error("--kafka-password is not accepted (it would show in `ps`): set SKETCHGEN_KAFKA_PASSWORD "
                     "or give a file with --kafka-password-file")
