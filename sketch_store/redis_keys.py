"""Redis key layout of one stream. Every key carries the hash tag ``{sg:NAME}`` so that
all keys of a stream live in one Redis Cluster slot and one Lua script may touch them all
(each script declares every key it touches in KEYS: docs/redis_scripts.md).

| key | type | contents |
|---|---|---|
| ``{sg:NAME}:meta`` | hash | ``spec``, ``fingerprint``, ``created``, ``updated``, ``buckets``, ``incarnation`` |
| ``{sg:NAME}:parts`` | set | ``topic:partition`` members that ever wrote |
| ``{sg:NAME}:part:TOPIC:P`` | hash | ``sum`` (float64 LE, 2m), ``count``, ``next_offset``, ``epoch``, ``updated`` |
| ``{sg:NAME}:bucket:LEVEL:START`` | hash | ``sum``, ``count`` of all partitions, timestamps in [START, START+res) |
| ``{sg:NAME}:buckets:LEVEL`` | zset | bucket starts (score = start, seconds) of that level, for window reads |
| ``{sg:NAME}:epoch`` | string | highest epoch any claim of the stream got; **kept** when the stream is deleted |
| ``{sg:NAME}:members:GROUP`` | zset | live ingest workers of a group (``ingest.membership``) |
| ``{sg:NAME}:lease`` | string | the learner lease (``sketch_store.leadership``) |
| ``{sg:NAME}:checkpoint`` | hash | the learner's latest checkpoint (``sketch_store.leadership``) |

``incarnation`` is a new id at each creation of the stream; ``buckets`` its JSON bucket config.
The epoch counter outlives the stream (a few bytes), so a recreated stream's claims get
higher epochs than every writer of the old one.

Example
-------
>>> StreamKeys("demo").partition("events", 3)
'{sg:demo}:part:events:3'
"""

from __future__ import annotations

import dataclasses
import re

from sketch_store.errors import SketchgenError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def validate_stream_name(name: str) -> str:
    """Stream names: 1-200 characters of letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SketchgenError(
            f"invalid stream name {name!r}: use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclasses.dataclass(frozen=True)
class StreamKeys:
    """Key names of one stream (see module docstring)."""

    name: str

    def __post_init__(self) -> None:
        validate_stream_name(self.name)

    @property
    def prefix(self) -> str:
        return "{sg:" + self.name + "}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def parts(self) -> str:
        return f"{self.prefix}:parts"

    def partition(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:part:{topic}:{int(partition)}"

    def part_of(self, member: str) -> str:
        """The partition key of a member ``topic:partition`` of the parts set."""
        return f"{self.prefix}:part:{member}"

    def bucket(self, level: str, start: int) -> str:
        return f"{self.prefix}:bucket:{level}:{int(start)}"

    def bucket_index(self, level: str) -> str:
        return f"{self.prefix}:buckets:{level}"

    @property
    def epoch_counter(self) -> str:
        """The stream's epoch high-water mark: survives deletion, so epochs never go backwards."""
        return f"{self.prefix}:epoch"

    @property
    def checkpoint(self) -> str:
        return f"{self.prefix}:checkpoint"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of the stream (``{`` and ``}`` escaped)."""
        return "\\{sg:" + re.sub(r"([*?\[\]\\])", r"\\\1", self.name) + "\\}:*"
