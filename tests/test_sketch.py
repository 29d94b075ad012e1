"""Sketch values: merging, distances and their null level, and the .npz sketch file."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from sketch_store.errors import SpecError, SpecMismatchError
from sketch_store.features import FeatureMap
from sketch_store.sketch import Sketch, load_sketch, save_sketch, sketch_from_bytes, sketch_to_bytes
from sketch_store.spec import SketchSpec


def make_spec(seed: int = 0, m: int = 64, d: int = 2) -> SketchSpec:
    return SketchSpec.create(
        d=d, m=m, law="adapted-radius", sigma=0.8, mean=np.full(d, 1.0), std=np.full(d, 2.0), seed=seed
    )


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def data(n: int, seed: int, d: int = 2, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc=1.0 + shift, scale=2.0, size=(n, d))


# -- merging -----------------------------------------------------------------------


def test_merge_of_halves_equals_sketch_of_whole():
    spec = make_spec()
    x = data(1001, seed=1)
    whole = Sketch.from_data(spec, x)
    merged = Sketch.from_data(spec, x[:400]).merge(Sketch.from_data(spec, x[400:]))
    assert merged.count == whole.count == 1001
    assert merged.fingerprint == whole.fingerprint == spec.fingerprint
    assert rel_err(merged.total, whole.total) < 1e-12
    assert rel_err(merged.mean(), whole.mean()) < 1e-12


def test_merge_is_commutative_and_associative():
    spec = make_spec()
    a, b, c = (Sketch.from_data(spec, data(100 + i, seed=10 + i)) for i in range(3))
    left = a.merge(b).merge(c)
    right = c.merge(a.merge(b))
    assert left.count == right.count == 303
    assert rel_err(left.total, right.total) < 1e-14


def test_merge_with_empty_is_identity():
    spec = make_spec()
    s = Sketch.from_data(spec, data(50, seed=2))
    merged = Sketch.empty(spec).merge(s)
    assert merged.count == 50
    assert np.array_equal(merged.total, s.total)


def test_merge_of_different_specs_refused():
    a = Sketch.from_data(make_spec(seed=0), data(10, seed=3))
    b = Sketch.from_data(make_spec(seed=1), data(10, seed=3))
    with pytest.raises(SpecMismatchError, match="different specs"):
        a.merge(b)
    with pytest.raises(SpecMismatchError):
        a.sq_distance(b)


def test_sketch_mean_is_average_feature():
    spec = make_spec()
    x = data(20, seed=4)
    s = Sketch.from_data(spec, x)
    assert s.m == spec.m
    assert np.allclose(s.mean(), FeatureMap(spec).transform(x).mean(axis=0), rtol=0, atol=1e-12)
    assert np.linalg.norm(s.mean()) <= 1.0 + 1e-9


def test_mean_of_empty_sketch_raises():
    empty = Sketch.empty(make_spec())
    assert empty.count == 0 and empty.total.shape == (128,)
    with pytest.raises(SpecError, match="empty"):
        empty.mean()


@pytest.mark.parametrize(
    "total,count",
    [(np.zeros(3), 1), (np.zeros((2, 2)), 1), (np.array([0.0, np.nan]), 1), (np.zeros(4), -1), (np.zeros(4), np.inf)],
)
def test_invalid_sketch_values(total, count):
    with pytest.raises(SpecError):
        Sketch(total, count, "0" * 16)


# -- distances ----------------------------------------------------------------------


def test_sq_distance_of_identical_data_is_zero():
    spec = make_spec()
    x = data(500, seed=5)
    a, b = Sketch.from_data(spec, x), Sketch.from_data(spec, x[::-1].copy())
    assert a.sq_distance(b) == pytest.approx(0.0, abs=1e-20)
    assert a.sq_distance(a) == 0.0


def test_sq_distance_is_symmetric_and_detects_a_shift():
    spec = make_spec()
    a = Sketch.from_data(spec, data(2000, seed=6))
    b = Sketch.from_data(spec, data(2000, seed=7))
    c = Sketch.from_data(spec, data(2000, seed=8, shift=2.0))
    assert a.sq_distance(b) == pytest.approx(b.sq_distance(a), rel=1e-12)
    assert a.sq_distance(c) > 20 * a.null_level(c)
    assert a.sq_distance(b) < 5 * a.null_level(b)


def test_null_level_formula():
    spec = make_spec()
    a = Sketch.from_data(spec, data(300, seed=9))
    b = Sketch.from_data(spec, data(700, seed=10))
    pooled = a.merge(b).mean()
    expected = (1.0 - pooled @ pooled) * (1.0 / 300 + 1.0 / 700)
    assert a.null_level(b) == pytest.approx(expected, rel=1e-12)
    assert a.null_level(b) == pytest.approx(b.null_level(a), rel=1e-12)


def test_null_level_matches_empirical_mean_distance():
    spec = make_spec(m=100)
    rng = np.random.default_rng(11)
    n_a, n_b = 300, 500
    distances, nulls = [], []
    for _ in range(150):
        a = Sketch.from_data(spec, rng.normal(loc=1.0, scale=2.0, size=(n_a, 2)))
        b = Sketch.from_data(spec, rng.normal(loc=1.0, scale=2.0, size=(n_b, 2)))
        distances.append(a.sq_distance(b))
        nulls.append(a.null_level(b))
    assert np.mean(distances) == pytest.approx(np.mean(nulls), rel=0.2)
    # the estimate is stable across pairs (‖z‖² is pooled from 800 records)
    assert np.std(nulls) < 0.1 * np.mean(nulls)


# -- files --------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    spec = make_spec()
    s = Sketch.from_data(spec, data(123, seed=12))
    path = tmp_path / "s.npz"
    save_sketch(path, spec, s)
    spec2, s2 = load_sketch(path)
    assert spec2.fingerprint == spec.fingerprint
    assert np.array_equal(spec2.omega, spec.omega)
    assert s2.count == 123 and s2.fingerprint == spec.fingerprint
    assert np.array_equal(s2.total, s.total)


def test_empty_sketch_round_trip():
    spec = make_spec()
    spec2, s2 = sketch_from_bytes(sketch_to_bytes(spec, Sketch.empty(spec)))
    assert s2.count == 0 and not s2.total.any()
    assert spec2.fingerprint == spec.fingerprint


def test_save_with_wrong_spec_refused():
    s = Sketch.from_data(make_spec(seed=0), data(10, seed=13))
    with pytest.raises(SpecMismatchError):
        sketch_to_bytes(make_spec(seed=1), s)


def _arrays(spec: SketchSpec, sketch: Sketch) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(sketch_to_bytes(spec, sketch)), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture
def stored():
    spec = make_spec()
    return spec, Sketch.from_data(spec, data(200, seed=14))


def test_tampered_sum_shape_refused(stored, tmp_path):
    arrays = _arrays(*stored)
    arrays["sketch_sum"] = arrays["sketch_sum"][:-2]
    path = tmp_path / "bad.npz"
    path.write_bytes(_bytes(arrays))
    with pytest.raises(SpecError, match="sketch sum has shape"):
        load_sketch(path)


def test_integer_sum_refused(stored):
    arrays = _arrays(*stored)
    arrays["sketch_sum"] = arrays["sketch_sum"].astype(np.int64)
    with pytest.raises(SpecError, match="dtype"):
        sketch_from_bytes(_bytes(arrays))


def test_tampered_spec_omega_refused(stored):
    arrays = _arrays(*stored)
    arrays["spec_omega"] = arrays["spec_omega"] * 1.01
    with pytest.raises((SpecError, SpecMismatchError)):
        sketch_from_bytes(_bytes(arrays))


def test_spec_swapped_for_another_spec_refused(stored):
    spec, sketch = stored
    arrays = _arrays(spec, sketch)
    arrays.update(make_spec(seed=99).to_arrays())  # a valid, self-consistent but different spec
    with pytest.raises(SpecMismatchError, match="different spec"):
        sketch_from_bytes(_bytes(arrays))


def test_missing_sketch_fields_refused(stored):
    arrays = _arrays(*stored)
    del arrays["sketch_sum"]
    with pytest.raises(SpecError, match="not a sketchgen sketch file"):
        sketch_from_bytes(_bytes(arrays))


def test_wrong_sketch_format_refused(stored):
    arrays = _arrays(*stored)
    meta = json.loads(str(arrays["sketch_meta"][()]))
    meta["format"] = "other/1"
    arrays["sketch_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError, match="unsupported sketch file format"):
        sketch_from_bytes(_bytes(arrays))


def test_negative_count_refused(stored):
    arrays = _arrays(*stored)
    meta = json.loads(str(arrays["sketch_meta"][()]))
    meta["count"] = -5
    arrays["sketch_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError, match="count"):
        sketch_from_bytes(_bytes(arrays))


@pytest.mark.parametrize("count", ["missing", "abc", None, float("nan")])
def test_invalid_count_refused_cleanly(stored, count):
    arrays = _arrays(*stored)
    meta = json.loads(str(arrays["sketch_meta"][()]))
    if count == "missing":
        del meta["count"]
    else:
        meta["count"] = count
    arrays["sketch_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError, match="count"):
        sketch_from_bytes(_bytes(arrays))


def test_weighted_count_round_trip():
    # a decayed sketch carries a fractional (weighted) count
    spec = make_spec()
    base = Sketch.from_data(spec, data(40, seed=15))
    decayed = Sketch(base.total * 0.5, 20.5, spec.fingerprint)
    assert decayed.count == 20.5
    _, back = sketch_from_bytes(sketch_to_bytes(spec, decayed))
    assert back.count == 20.5
    assert np.allclose(back.mean(), base.total * 0.5 / 20.5, rtol=1e-14)


def test_integral_count_stays_an_integer():
    spec = make_spec()
    s = Sketch(np.zeros(2 * spec.m), 7.0, spec.fingerprint)
    assert s.count == 7 and isinstance(s.count, int)


@pytest.mark.parametrize("garbage", [b"", b"hello", b"PK\x03\x04" + b"\x00" * 40])
def test_garbage_sketch_bytes(garbage):
    with pytest.raises(SpecError, match="cannot read sketch file"):
        sketch_from_bytes(garbage)


def test_pickled_sketch_file_refused(stored, tmp_path):
    arrays = _arrays(*stored)
    arrays["sketch_sum"] = np.array([object()], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpecError, match="cannot read sketch file"):
        load_sketch(path)
