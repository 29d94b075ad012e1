"""Shared pieces of the Redis store tests: a small spec and deltas (the ``store`` fixture is in conftest.py)."""

from __future__ import annotations

import numpy as np

from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec


def make_spec(name: str = "s", m: int = 16, seed: int = 0) -> SketchSpec:
    return SketchSpec.create(d=2, m=m, law="gaussian", seed=seed, name=name)


def delta(spec: SketchSpec, n: int, seed: int) -> Sketch:
    """The sketch of ``n`` standard normal rows (seeded), to flush as a delta."""
    return Sketch.from_data(spec, np.random.default_rng(seed).normal(size=(n, 2)))


def assert_exact(sketch: Sketch, spec: SketchSpec, rows: np.ndarray) -> None:
    """``sketch`` holds every row of ``rows`` exactly once: same count, sum within 1e-9 of the offline sketch."""
    from sketch_store.features import FeatureMap

    assert sketch.count == len(rows), (sketch.count, len(rows))
    expected, _ = FeatureMap(spec).feature_sum(rows)
    assert np.linalg.norm(sketch.total - expected) / np.linalg.norm(expected) <= 1e-9
