"""Pending, not-yet-flushed state of one partition: the worker's only in-memory state.

A :class:`PartitionBuffer` covers the offsets ``[from_offset, next_offset)`` consumed since
the last flush: their feature sum and count, and the same split by time bucket. A flush
hands it to :meth:`sketch_store.redis_store.SketchStore.flush`, which applies it atomically
with the new next offset; then the buffer restarts at that offset. Rejected records advance
``next_offset`` without adding anything.

Example
-------
>>> import numpy as np
>>> from sketch_store.redis_store import BucketConfig
>>> buf = PartitionBuffer(from_offset=0, m=2, buckets=BucketConfig())
>>> buf.add(np.ones(4), 3, timestamp=25.0)
>>> buf.advance(7)
>>> buf.count, buf.next_offset, [(d.level, d.start, d.count) for d in buf.bucket_deltas()]
(3, 7, [('fine', 20, 3), ('coarse', 0, 3)])
>>> buf.follows(7), buf.follows(5)  # a batch read from offset 7 continues it; one from 5 would overlap
(True, False)
"""

from __future__ import annotations

import math

import numpy as np

from sketch_store.bounds import Bounds
from sketch_store.redis_store import BucketConfig, BucketDelta


class PartitionBuffer:
    """Feature sums and counts of offsets ``[from_offset, next_offset)`` of one partition."""

    def __init__(self, from_offset: int | None, m: int, buckets: BucketConfig) -> None:
        # None: nothing stored in Redis yet; the delta then starts at the first record consumed.
        self.from_offset = None if from_offset is None else int(from_offset)
        self.next_offset = self.from_offset
        self.read_offset = self.from_offset  # end of the records handed to folding (>= next_offset)
        self.m = m
        self.buckets = buckets
        self.total = np.zeros(2 * m)
        self.count = 0
        self.bounds: Bounds | None = None  # coordinate bounds of the rows added (None before the first)
        self._by_bucket: dict[tuple[str, int], list] = {}

    @property
    def dirty(self) -> bool:
        """True when there is something to flush (offsets advanced)."""
        return self.from_offset is not None and self.next_offset > self.from_offset

    def add(self, feature_sum: np.ndarray, count: int, timestamp: float) -> None:
        """Add ``count`` rows with feature sum ``feature_sum`` and record time ``timestamp`` (s)."""
        self.total += feature_sum
        self.count += count
        for level in self.buckets.levels:
            start = int(math.floor(timestamp / level.seconds) * level.seconds)
            entry = self._by_bucket.setdefault((level.name, start), [np.zeros(2 * self.m), 0])
            entry[0] += feature_sum
            entry[1] += count

    def widen(self, bounds: Bounds) -> None:
        """Take in the coordinate bounds of rows added (:meth:`add`): ``lo = min(lo, lo')``, ``hi = max(hi, hi')``."""
        self.bounds = bounds if self.bounds is None else self.bounds.merge(bounds)

    def start_at(self, offset: int) -> None:
        """Anchor a buffer created without a stored offset at the first offset it consumes."""
        if self.from_offset is None:
            self.from_offset = self.next_offset = self.read_offset = int(offset)

    def read_to(self, offset: int) -> None:
        """Records up to ``offset`` (exclusive) were handed to folding: never fold them again."""
        self.read_offset = int(offset) if self.read_offset is None else max(self.read_offset, int(offset))

    def advance(self, next_offset: int) -> None:
        """Mark offsets up to ``next_offset`` (exclusive) as consumed."""
        self.next_offset = int(next_offset) if self.next_offset is None else max(self.next_offset, int(next_offset))

    def follows(self, start: int | None) -> bool:
        """True when a batch read from ``start`` continues this buffer exactly (no gap, no overlap).

        Batches are applied in the order they were read; one that does not start where the
        buffer ends would skip records or count some twice, so the caller refuses it.
        """
        return start == self.next_offset

    def bucket_deltas(self) -> list[BucketDelta]:
        """The per-bucket deltas, finest level first, then by start."""
        order = self.buckets.names
        return [
            BucketDelta(level=level, start=start, total=vec, count=c)
            for (level, start), (vec, c) in sorted(self._by_bucket.items(), key=lambda kv: (order.index(kv[0][0]),
                                                                                        kv[0][1]))
        ]

    def reset(self) -> None:
        """Start a new delta at ``next_offset`` (after a successful flush)."""
        self.from_offset = self.next_offset
        self.total = np.zeros(2 * self.m)
        self.count = 0
        self.bounds = None
        self._by_bucket.clear()
