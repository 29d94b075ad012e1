"""Drift of a stream: the recent sketch against the one before it, in units of its null level.

``score = ‖z_recent − z_reference‖² / ((1 − ‖z‖²)(1/n_recent + 1/n_reference))`` (docs/design.md §1,
``‖z‖²`` from the pooled sketch): about 1 while the stream is stationary, ≫ 1 after a change.

Example
-------
>>> import numpy as np
>>> from sketch_store.sketch import Sketch
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=1, m=64, law="gaussian", seed=0)
>>> rng = np.random.default_rng(0)
>>> sketch = lambda x: Sketch.from_data(spec, x)
>>> reference = sketch(rng.normal(size=(2000, 1)))
>>> same = drift_score(sketch(rng.normal(size=(500, 1))), reference)
>>> moved = drift_score(sketch(rng.normal(3, 1, size=(500, 1))), reference)
>>> bool(same < 3 < 100 < moved)
True
"""

from __future__ import annotations

from sketch_store.sketch import Sketch

#: Minimum records on each side before a score is reported.
MIN_RECORDS = 20


def drift_score(recent: Sketch, reference: Sketch) -> float | None:
    """``‖z_recent − z_reference‖²`` over its null level, or None when either side is too small."""
    if recent.count < MIN_RECORDS or reference.count < MIN_RECORDS:
        return None
    null = recent.null_level(reference)
    if not null > 0:
        return None
    return recent.sq_distance(reference) / null
