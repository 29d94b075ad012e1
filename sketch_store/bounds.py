"""Coordinate bounds of the rows a sketch summarises: ``lo_j = min_i x_ij``, ``hi_j = max_i x_ij``.

The sketch cannot say where the data end: a kernel mean has no edge. A typed stream's generator therefore
puts some numeric values past the field's observed range — a count below 0, a price above any seen, mass
at a bound smeared past it. The bounds are the other statistic a stream keeps beside its sum: like the sum
they merge over disjoint parts (elementwise min and max, in any order, and a replayed part changes nothing),
so each partition folds them with its sum and the stream's bounds are the merge over its partitions
(docs/design.md §1, "Typed records, streaming"). They are in the coordinates the feature map reads (a
typed spec's encoded vectors, a numeric spec's raw rows), 16 bytes a coordinate.

Example
-------
>>> import numpy as np
>>> a = Bounds.of(np.array([[0.0, 5.0], [2.0, 1.0]]))
>>> b = Bounds.of(np.array([[-1.0, 3.0]]))
>>> merged = a.merge(b)
>>> merged.lo.tolist(), merged.hi.tolist()
([-1.0, 1.0], [2.0, 5.0])
>>> Bounds.from_bytes(*merged.to_bytes(), d=2).hi.tolist()
[2.0, 5.0]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sketch_store.errors import SpecError


@dataclasses.dataclass(frozen=True, eq=False)
class Bounds:
    """Elementwise minimum ``lo`` and maximum ``hi`` (float64, length d) of a non-empty set of rows."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise SpecError(f"bounds must be two 1-D arrays of one length >= 1, got shapes {lo.shape} and {hi.shape}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise SpecError("bounds contain NaN or Inf")
        if np.any(lo > hi):
            raise SpecError("bounds have a lower bound above its upper bound")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def of(cls, rows: np.ndarray) -> Bounds:
        """The bounds of the rows of ``rows`` (N ≥ 1, d)."""
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise SpecError(f"bounds need a non-empty 2-D array of rows, got shape {arr.shape}")
        return cls(arr.min(axis=0), arr.max(axis=0))

    @property
    def d(self) -> int:
        """Number of coordinates."""
        return int(self.lo.shape[0])

    def merge(self, other: Bounds) -> Bounds:
        """Bounds of the union: ``min(lo, lo')``, ``max(hi, hi')``."""
        if other.d != self.d:
            raise SpecError(f"cannot merge bounds of {self.d} and {other.d} coordinates")
        return Bounds(np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi))

    def to_bytes(self) -> tuple[bytes, bytes]:
        """``lo`` and ``hi`` as float64 little-endian byte strings (8d bytes each), as Redis keeps them."""
        return (np.ascontiguousarray(self.lo, dtype="<f8").tobytes(),
                np.ascontiguousarray(self.hi, dtype="<f8").tobytes())

    @classmethod
    def from_bytes(cls, lo: bytes, hi: bytes, d: int) -> Bounds:
        """Inverse of :meth:`to_bytes`; :class:`SpecError` unless both are ``8d`` bytes of valid bounds."""
        if len(lo) != 8 * d or len(hi) != 8 * d:
            raise SpecError(f"bounds are {len(lo)} and {len(hi)} bytes, expected {8 * d} each")
        return cls(np.frombuffer(lo, dtype="<f8"), np.frombuffer(hi, dtype="<f8"))


def merge_bounds(a: Bounds | None, a_count: float, b: Bounds | None, b_count: float) -> Bounds | None:
    """Bounds of the union of two parts with ``a_count`` and ``b_count`` rows; None (unknown) when they are not known.

    An empty part adds nothing; a non-empty part whose bounds are unknown (None) makes the union's unknown, so
    known bounds always cover every row.
    """
    if b_count == 0:
        return a if a_count else None
    if a_count == 0:
        return b
    if a is None or b is None:
        return None
    return a.merge(b)
