"""Connection settings shared by the streaming commands: flags, then environment, then defaults.

``--kafka BOOTSTRAP`` falls back to ``SKETCHGEN_KAFKA`` then ``localhost:9092``;
``--redis URL`` to ``SKETCHGEN_REDIS`` then ``redis://localhost:6379/0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

DEFAULT_KAFKA = "localhost:9092"
DEFAULT_REDIS = "redis://localhost:6379/0"


@dataclasses.dataclass(frozen=True)
class Connections:
    """Where Kafka and Redis are, resolved once per process."""

    kafka: str
    redis: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Connections:
        return cls(
            kafka=getattr(args, "kafka", None) or os.environ.get("SKETCHGEN_KAFKA") or DEFAULT_KAFKA,
            redis=getattr(args, "redis", None) or os.environ.get("SKETCHGEN_REDIS") or DEFAULT_REDIS,
        )


def add_connection_args(parser: argparse.ArgumentParser, kafka: bool = True, redis: bool = True) -> None:
    """Add ``--kafka`` and/or ``--redis`` to a sub-command."""
    if kafka:
        parser.add_argument(
            "--kafka", metavar="BOOTSTRAP", help=f"Kafka bootstrap (env SKETCHGEN_KAFKA, default {DEFAULT_KAFKA})"
        )
    if redis:
        parser.add_argument("--redis", metavar="URL", help=f"Redis URL (env SKETCHGEN_REDIS, default {DEFAULT_REDIS})")
