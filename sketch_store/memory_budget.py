"""A stream's Redis memory at full retention, predicted from m, d, its spec's size and its bucket levels.

The formula (docs/ingest.md, "Memory of a stream") models ``MEMORY USAGE`` of each key on Redis 7 with
jemalloc, 64-bit; the constants were measured on redis-server 7.0.15 (``bench/stream_memory.py``):

* a string of n bytes takes ``class(n + h + 1)``, ``h`` its sds header (1, 3, 5 or 9 bytes by length)
  and ``class`` jemalloc's size class (multiples of 16 up to 128, then four classes per power of two);
* a key's name counts twice (the key and the command's copy ``MEMORY USAGE`` adds): ``2 · class(len + 4)``;
* a bucket hash (``sum`` of 2m float64, ``count``) is ``sds(16 m) + name + BUCKET_FIELDS``;
* a partition hash (``sum``, ``count``, ``next_offset``, ``epoch``, ``updated``, ``lo``, ``hi``, ``bounded``)
  is ``sds(16 m) + name + PART_FIELDS + 2 · sds(8 d)``;
* the meta hash is ``sds(spec bytes) + name + META_FIELDS``;
* a level's index (sorted set of bucket starts) of n entries is, above 128 entries (skiplist),
  ``INDEX_ENTRY · n + 8 · 2^ceil(log2 n) + INDEX_FIXED + name``, else (listpack) ``13 n + name``.

A level of resolution ``s`` kept ``k`` seconds holds at most ``ceil(k / s) + 1`` buckets
(:attr:`sketch_store.buckets.BucketLevel.buckets`), so the stream at full retention is
``meta + parts + epoch + P · partition + Σ_levels (buckets · bucket + index)``.
Not counted: the learner's checkpoint and lease and the ingest members (``sketchgen status`` shows
them in the measured figure), and Redis's expire-dict entry per bucket (~32 bytes, not in
``MEMORY USAGE``).

Example
-------
>>> from sketch_store.buckets import DEFAULT_BUCKETS, BucketConfig
>>> new = stream_memory(m=3000, d=2, spec_bytes=50062, buckets=DEFAULT_BUCKETS, partitions=4)
>>> old = stream_memory(m=3000, d=2, spec_bytes=50062, buckets=BucketConfig(), partitions=4)
>>> [(lv.level, lv.buckets) for lv in new.levels], round(new.total / old.total, 3)
([('fine', 361), ('coarse', 289), ('long', 169)], 0.346)
"""

from __future__ import annotations

import dataclasses

from sketch_store.buckets import BucketConfig, BucketLevel
from sketch_store.redis_keys import StreamKeys

#: Measured overheads (bytes of ``MEMORY USAGE`` on redis 7.0.15 beyond the modelled strings).
BUCKET_FIELDS = 136
PART_FIELDS = 472
META_FIELDS = 680
PARTS_FIXED = 152
PARTS_MEMBER = 16
EPOCH_FIXED = 24
INDEX_ENTRY = 94
INDEX_FIXED = 112
INDEX_LISTPACK_ENTRY = 13
LISTPACK_MAX = 128  # zset-max-listpack-entries (default)
#: A typical bucket start, for the length of bucket key names.
TYPICAL_START = 1_800_000_000


@dataclasses.dataclass(frozen=True)
class LevelMemory:
    """One level at full retention: its buckets and their bytes (hashes and index)."""

    level: str
    resolution_seconds: int
    keep_seconds: int
    buckets: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class StreamMemory:
    """A stream's predicted Redis memory at full retention, by part."""

    levels: tuple[LevelMemory, ...]
    partitions_bytes: int
    meta_bytes: int

    @property
    def total(self) -> int:
        return self.meta_bytes + self.partitions_bytes + sum(level.bytes for level in self.levels)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: ``full_retention_bytes``, ``partitions_bytes``, ``meta_bytes`` and the ``levels``."""
        return {
            "full_retention_bytes": self.total, "partitions_bytes": self.partitions_bytes,
            "meta_bytes": self.meta_bytes, "levels": [dataclasses.asdict(level) for level in self.levels],
        }


def size_class(n: int) -> int:
    """jemalloc's allocation for ``n`` bytes: a multiple of 16 up to 128, then 4 classes per power of two."""
    if n <= 8:
        return 8
    if n <= 128:
        return -(-n // 16) * 16
    step = (1 << ((n - 1).bit_length() - 1)) // 4
    return -(-n // step) * step


def sds_bytes(n: int) -> int:
    """Allocation of a Redis string (sds) of ``n`` bytes: ``class(n + header + 1)``."""
    header = 1 if n < 32 else 3 if n < 256 else 5 if n < 65536 else 9
    return size_class(n + header + 1)


def key_name_bytes(key: str) -> int:
    """What a key's name adds to its ``MEMORY USAGE``: ``2 · class(len + 4)``."""
    return 2 * size_class(len(key.encode()) + 4)


def bucket_bytes(m: int, key: str) -> int:
    """One bucket hash: ``sds(16 m) + name + BUCKET_FIELDS``."""
    return sds_bytes(16 * m) + key_name_bytes(key) + BUCKET_FIELDS


def index_bytes(n: int, key: str) -> int:
    """A level's index of ``n`` bucket starts: skiplist above :data:`LISTPACK_MAX` entries, else listpack."""
    if n > LISTPACK_MAX:
        return INDEX_ENTRY * n + 8 * (1 << (n - 1).bit_length()) + INDEX_FIXED + key_name_bytes(key)
    return INDEX_LISTPACK_ENTRY * n + key_name_bytes(key)


def level_memory(level: BucketLevel, m: int, keys: StreamKeys) -> LevelMemory:
    """A level at full retention: ``buckets · bucket + index``."""
    n = level.buckets
    total = n * bucket_bytes(m, keys.bucket(level.name, TYPICAL_START)) + index_bytes(n, keys.bucket_index(level.name))
    return LevelMemory(level.name, level.seconds, level.keep, n, total)


def partition_bytes(m: int, d: int, key: str) -> int:
    """One partition hash: ``sds(16 m) + name + PART_FIELDS + 2 · sds(8 d)``."""
    return sds_bytes(16 * m) + key_name_bytes(key) + PART_FIELDS + 2 * sds_bytes(8 * d)


def stream_memory(
    m: int, d: int, spec_bytes: int, buckets: BucketConfig, partitions: int, name: str = "stream",
    topic: str = "events",
) -> StreamMemory:
    """Predicted ``MEMORY USAGE`` sum of stream ``name`` at full retention with ``partitions`` partitions of
    ``topic`` (module docstring)."""
    keys = StreamKeys(name)
    parts = partitions * partition_bytes(m, d, keys.partition(topic, 0))
    parts += PARTS_FIXED + PARTS_MEMBER * partitions + key_name_bytes(keys.parts)
    meta = sds_bytes(spec_bytes) + key_name_bytes(keys.meta) + META_FIELDS
    meta += EPOCH_FIXED + key_name_bytes(keys.epoch_counter)
    levels = tuple(level_memory(level, m, keys) for level in buckets.levels)
    return StreamMemory(levels, parts, meta)


def human_bytes(n: float) -> str:
    """``114.2 MB`` style (powers of 1000), for one-line reports."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
