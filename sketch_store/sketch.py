"""The sketch value: a feature sum and a count, and the ``.npz`` sketch file.

A sketch of N records is ``z = (1/N) Σ_i Φ(x_i)`` (docs/design.md §1); it is kept as the
pair ``(Σ_i Φ(x_i), N)`` so that sketches of disjoint parts merge by adding
sums and counts, in any order. Beside them a sketch may carry the rows' coordinate
bounds (:mod:`sketch_store.bounds`), which merge by min and max.

Example
-------
>>> import numpy as np
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=1, m=4, law="gaussian", seed=0)
>>> x = np.linspace(-1, 1, 10)[:, None]
>>> whole = Sketch.from_data(spec, x)
>>> halves = Sketch.from_data(spec, x[:5]).merge(Sketch.from_data(spec, x[5:]))
>>> bool(np.allclose(whole.mean(), halves.mean())), halves.count
(True, 10)
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sketch_store.bounds import Bounds, merge_bounds
from sketch_store.errors import SpecError, SpecMismatchError
from sketch_store.features import FeatureMap
from sketch_store.spec import SketchSpec, load_npz

SKETCH_FORMAT = "sketchgen.sketch/1"


@dataclasses.dataclass(frozen=True, eq=False)
class Sketch:
    """Feature sum ``Σ Φ(x_i)`` (float64, length 2m), record count and spec fingerprint.

    The count is an integer for exact sketches; a decayed sketch (records weighted by
    age) carries its weighted count ``Σ w_i`` as a float. ``bounds`` are the rows'
    coordinate bounds when known (None: not tracked, or no rows).
    """

    total: np.ndarray
    count: int | float
    fingerprint: str
    bounds: Bounds | None = None

    def __post_init__(self) -> None:
        total = np.asarray(self.total, dtype=np.float64)
        if total.ndim != 1 or total.shape[0] % 2:
            raise SpecError(f"sketch sum must be a 1-D array of even length, got shape {total.shape}")
        if not np.all(np.isfinite(total)):
            raise SpecError("sketch sum contains NaN or Inf")
        count = float(self.count)
        if not (np.isfinite(count) and count >= 0):
            raise SpecError(f"sketch count must be a finite number >= 0, got {self.count}")
        if self.bounds is not None and not isinstance(self.bounds, Bounds):
            raise SpecError(f"sketch bounds must be Bounds or None, got {type(self.bounds).__name__}")
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "count", int(count) if count.is_integer() else count)

    @classmethod
    def empty(cls, spec: SketchSpec) -> Sketch:
        """The sketch of no records."""
        return cls(np.zeros(2 * spec.m), 0, spec.fingerprint)

    @classmethod
    def from_data(cls, spec: SketchSpec, x: object) -> Sketch:
        """Sketch the rows of ``x`` in one pass (their bounds too)."""
        total, n = FeatureMap(spec).feature_sum(x)
        bounds = Bounds.of(np.asarray(x, dtype=np.float64).reshape(n, spec.d)) if n else None
        return cls(total, n, spec.fingerprint, bounds)

    @property
    def m(self) -> int:
        """Number of frequencies."""
        return self.total.shape[0] // 2

    def _check_compatible(self, other: Sketch) -> None:
        if self.fingerprint != other.fingerprint:
            raise SpecMismatchError(
                f"cannot combine sketches of different specs ({self.fingerprint} vs {other.fingerprint})"
            )

    def merge(self, other: Sketch) -> Sketch:
        """Sketch of the union of two disjoint record sets: sums and counts add, bounds merge."""
        self._check_compatible(other)
        bounds = merge_bounds(self.bounds, self.count, other.bounds, other.count)
        return Sketch(self.total + other.total, self.count + other.count, self.fingerprint, bounds)

    def mean(self) -> np.ndarray:
        """``z = Σ Φ(x_i) / N``; raises :class:`SpecError` for an empty sketch."""
        if self.count == 0:
            raise SpecError("the sketch is empty: it holds no records yet")
        return self.total / self.count

    def sq_distance(self, other: Sketch) -> float:
        """``‖z_A − z_B‖²``, an estimate of ``MMD_κ(A, B)²``."""
        self._check_compatible(other)
        return float(np.sum((self.mean() - other.mean()) ** 2))

    def null_level(self, other: Sketch) -> float:
        """Expected ``‖z_A − z_B‖²`` if both were samples of one law: ``(1 − ‖z‖²)(1/n_A + 1/n_B)``.

        ``‖z‖²`` is estimated from the pooled sketch.
        """
        pooled = self.merge(other).mean()
        return float((1.0 - np.sum(pooled**2)) * (1.0 / self.count + 1.0 / other.count))


def merge_all(sketches: Sequence[Sketch]) -> Sketch:
    """One sketch of disjoint record sets (:meth:`Sketch.merge` over all of them); at least one is needed."""
    if not sketches:
        raise SpecError("nothing to merge: no sketches given")
    first = sketches[0]
    for other in sketches[1:]:
        first._check_compatible(other)
    bounds, count = first.bounds, first.count
    for other in sketches[1:]:  # bounds of the union so far and the next part
        bounds, count = merge_bounds(bounds, count, other.bounds, other.count), count + other.count
    return Sketch(np.sum([s.total for s in sketches], axis=0), count, first.fingerprint, bounds)


def sketch_to_bytes(spec: SketchSpec, sketch: Sketch) -> bytes:
    """Serialise a spec and its sketch into one ``.npz`` (no pickle)."""
    if sketch.fingerprint != spec.fingerprint:
        raise SpecMismatchError("sketch and spec fingerprints differ")
    meta = {"format": SKETCH_FORMAT, "count": sketch.count, "fingerprint": sketch.fingerprint}
    extra = {} if sketch.bounds is None else {"sketch_bounds": np.stack([sketch.bounds.lo, sketch.bounds.hi])}
    buf = io.BytesIO()
    np.savez(
        buf,
        sketch_meta=np.array(json.dumps(meta, sort_keys=True)),
        sketch_sum=sketch.total,
        **extra,
        **spec.to_arrays(),
    )
    return buf.getvalue()


def sketch_from_bytes(data: bytes) -> tuple[SketchSpec, Sketch]:
    """Parse bytes written by :func:`sketch_to_bytes`, validating everything."""
    arrays = load_npz(io.BytesIO(data), what="sketch file")
    if "sketch_meta" not in arrays or "sketch_sum" not in arrays:
        raise SpecError("not a sketchgen sketch file: missing sketch_meta/sketch_sum")
    try:
        meta = json.loads(str(arrays["sketch_meta"][()]))
    except ValueError as exc:
        raise SpecError(f"sketch metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != SKETCH_FORMAT:
        raise SpecError("unsupported sketch file format")
    spec = SketchSpec.from_arrays(arrays)
    total = arrays["sketch_sum"]
    if total.dtype.kind != "f" or total.shape != (2 * spec.m,):
        raise SpecError(f"sketch sum has shape {total.shape} and dtype {total.dtype}, expected ({2 * spec.m},) floats")
    if meta.get("fingerprint") != spec.fingerprint:
        raise SpecMismatchError("the sketch was taken with a different spec than the one stored beside it")
    bounds = _bounds_array(arrays.get("sketch_bounds"), spec.d)
    try:
        count = meta["count"]
        return spec, Sketch(total, count, spec.fingerprint, bounds)
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"sketch metadata has no valid count: {exc}") from None


def _bounds_array(arr: np.ndarray | None, d: int) -> Bounds | None:
    """The bounds stored in a sketch file as a (2, d) float array (files without them have none)."""
    if arr is None:
        return None
    if arr.dtype.kind != "f" or arr.shape != (2, d):
        raise SpecError(f"sketch bounds have shape {arr.shape} and dtype {arr.dtype}, expected (2, {d}) floats")
    return Bounds(arr[0], arr[1])


def save_sketch(path: str | Path, spec: SketchSpec, sketch: Sketch) -> None:
    """Write ``spec`` and ``sketch`` to an ``.npz`` sketch file."""
    Path(path).write_bytes(sketch_to_bytes(spec, sketch))


def load_sketch(path: str | Path) -> tuple[SketchSpec, Sketch]:
    """Read a sketch file written by :func:`save_sketch` (or ``sketchgen export``)."""
    return sketch_from_bytes(Path(path).read_bytes())
