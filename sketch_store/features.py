"""The random Fourier feature map in NumPy, for ingestion (docs/design.md §1).

``Φ(x) = [cos(Ωᵀ s(x)); sin(Ωᵀ s(x))] / √m ∈ R^{2m}`` with ``s`` the spec's
standardisation. :class:`FeatureMap` folds any number of rows into a running
sum ``Σ_i Φ(x_i)`` and a count, chunk by chunk so that memory stays bounded.

Numerics: phases are computed in float64, rounded to float32 for the cos/sin
(the expensive part, 2-4× faster in float32), and accumulated in float64.
Computing phases in float64 first makes a record's features all but
independent of the batch it arrives in (which exactly-once ingestion compares
against): BLAS may round a float64 phase differently for one row than for
many (~1e-16), which changes the float32 phase only when it sits on a
rounding boundary (about one entry in 10⁷, by one float32 ulp).

Example
-------
>>> import numpy as np
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=2, m=16, law="gaussian", seed=0)
>>> total, count = FeatureMap(spec).feature_sum(np.zeros((3, 2)))
>>> count, total.shape, round(float(total[:16].sum()), 6)   # cos(0) = 1 on 3 rows
(3, (32,), 12.0)
"""

from __future__ import annotations

import threading

import numpy as np

from sketch_store.errors import DataError
from sketch_store.spec import SketchSpec

#: Target number of phase entries per chunk (1 MB per float32 buffer, 2 MB for float64: cache-sized).
CHUNK_ELEMENTS = 1 << 18


def validate_rows(x: object, d: int) -> np.ndarray:
    """Return ``x`` as a finite float64 (n, d) array, or raise :class:`DataError`.

    A 1-D array of length ``d`` is taken as a single row.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data are not numeric: {exc}") from None
    if arr.ndim == 1 and arr.shape[0] == d:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != d:
        raise DataError(f"expected rows of dimension {d}, got an array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(arr), axis=1)))
        raise DataError(f"data contain NaN or Inf in {bad} row(s)")
    return arr


class FeatureMap:
    """Chunked NumPy feature map of one :class:`SketchSpec`.

    Parameters
    ----------
    spec
        The spec whose ``Ω`` and standardisation define ``Φ``.
    chunk_rows
        Rows per chunk; by default about ``CHUNK_ELEMENTS / m``.
    """

    def __init__(self, spec: SketchSpec, chunk_rows: int | None = None) -> None:
        self.spec = spec
        self.m = spec.m
        self.chunk_rows = int(chunk_rows) if chunk_rows else max(1, CHUNK_ELEMENTS // spec.m)
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self._omega = np.ascontiguousarray(spec.omega, dtype=np.float64)
        self._scale = 1.0 / np.sqrt(spec.m)
        # Work buffers, allocated once: fresh 10 MB arrays on every call cost more in page
        # faults than the cos/sin themselves. The lock makes one FeatureMap safe to share.
        self._lock = threading.Lock()
        self._buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _work_buffers(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._buffers is None or self._buffers[0].shape[0] < k:
            self._buffers = (
                np.empty((k, self.m), dtype=np.float64),
                np.empty((k, self.m), dtype=np.float32),
                np.empty((k, self.m), dtype=np.float32),
            )
        return self._buffers

    def _phases(self, rows: np.ndarray, wide: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``Ωᵀ s(x)`` for each row, computed in float64 (in ``wide``) and rounded into ``out`` (float32)."""
        np.matmul(self.spec.standardize(rows), self._omega, out=wide)
        np.copyto(out, wide, casting="same_kind")
        return out

    def feature_sum(self, x: object, validate: bool = True) -> tuple[np.ndarray, int]:
        """Return ``(Σ_i Φ(x_i), n)``: the (2m,) float64 feature sum and the row count."""
        rows = validate_rows(x, self.spec.d) if validate else np.asarray(x, dtype=np.float64)
        n = rows.shape[0]
        total = np.zeros(2 * self.m, dtype=np.float64)
        if n == 0:
            return total, 0
        k = min(self.chunk_rows, n)
        with self._lock:
            wide, phase, trig = self._work_buffers(k)
            for start in range(0, n, k):
                chunk = rows[start : start + k]
                c = len(chunk)
                p = self._phases(chunk, wide[:c], phase[:c])
                t = trig[:c]
                total[: self.m] += np.cos(p, out=t).sum(axis=0, dtype=np.float64)
                total[self.m :] += np.sin(p, out=t).sum(axis=0, dtype=np.float64)
        total *= self._scale
        return total, n

    def transform(self, x: object) -> np.ndarray:
        """Per-row features ``Φ(x_i)`` as an (n, 2m) float64 array (for small inputs)."""
        rows = validate_rows(x, self.spec.d)
        phase = (self.spec.standardize(rows) @ self._omega).astype(np.float32)
        out = np.concatenate([np.cos(phase), np.sin(phase)], axis=1).astype(np.float64)
        return out * self._scale
