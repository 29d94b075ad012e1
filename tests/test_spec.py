"""SketchSpec: serialisation round trips, fingerprint identity, and validation errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from sketch_store.errors import SketchgenError, SpecError
from sketch_store.spec import SketchSpec


def make_spec(**overrides) -> SketchSpec:
    kwargs = dict(
        d=3,
        m=16,
        law="adapted-radius",
        sigma=0.7,
        mean=np.array([1.0, -2.0, 0.5]),
        std=np.array([0.5, 2.0, 1.5]),
        seed=4,
        scale_method="sketch",
        name="demo",
    )
    kwargs.update(overrides)
    return SketchSpec.create(**kwargs)


def spec_fields(spec: SketchSpec) -> dict[str, object]:
    return dict(
        d=spec.d,
        m=spec.m,
        law=spec.law,
        sigma=np.array(spec.sigma),
        mean=np.array(spec.mean),
        std=np.array(spec.std),
        omega=np.array(spec.omega),
        scale_method=spec.scale_method,
        seed=spec.seed,
        name=spec.name,
    )


def assert_same_spec(a: SketchSpec, b: SketchSpec) -> None:
    assert (a.d, a.m, a.law, a.scale_method, a.seed, a.name) == (b.d, b.m, b.law, b.scale_method, b.seed, b.name)
    for field in ("sigma", "mean", "std", "omega"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.shape == y.shape
        assert np.array_equal(x, y), field
    assert a.fingerprint == b.fingerprint


# -- round trips ----------------------------------------------------------


def test_bytes_round_trip_preserves_every_field():
    spec = make_spec()
    back = SketchSpec.from_bytes(spec.to_bytes())
    assert_same_spec(spec, back)


def test_per_dimension_sigma_round_trip():
    spec = make_spec(sigma=np.array([0.5, 1.0, 2.0]), seed=None, scale_method="given", name="")
    back = SketchSpec.from_bytes(spec.to_bytes())
    assert_same_spec(spec, back)
    assert back.sigma.shape == (3,)
    assert back.seed is None


def test_save_load_npz_file(tmp_path):
    spec = make_spec()
    path = tmp_path / "spec.npz"
    spec.save(path)
    assert path.read_bytes()[:2] == b"PK"  # a zip (npz) archive
    back = SketchSpec.load(path)
    assert_same_spec(spec, back)


def test_serialised_file_contains_no_object_arrays():
    spec = make_spec()
    with np.load(io.BytesIO(spec.to_bytes()), allow_pickle=False) as npz:
        for key in npz.files:
            assert npz[key].dtype.kind != "O", key


def test_spec_arrays_are_read_only():
    spec = make_spec()
    with pytest.raises(ValueError):
        spec.omega[0, 0] = 1.0


# -- fingerprint ------------------------------------------------------------


def test_fingerprint_is_stable_and_short_hex():
    a, b = make_spec(), make_spec()
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 16
    int(a.fingerprint, 16)


def test_fingerprint_ignores_name():
    spec = make_spec()
    renamed = spec.with_name("something else")
    assert renamed.name == "something else"
    assert renamed.fingerprint == spec.fingerprint
    assert make_spec(name="other").fingerprint == spec.fingerprint


@pytest.mark.parametrize("field", ["omega", "sigma", "mean", "std"])
def test_fingerprint_changes_with_feature_defining_arrays(field):
    spec = make_spec()
    fields = spec_fields(spec)
    arr = np.array(fields[field], dtype=np.float64)
    arr.flat[0] = arr.flat[0] * 1.001 + 1e-3
    fields[field] = arr
    changed = SketchSpec(**fields)
    assert changed.fingerprint != spec.fingerprint


def test_fingerprint_changes_with_seed_through_omega():
    assert make_spec(seed=1).fingerprint != make_spec(seed=2).fingerprint


def test_fingerprint_changes_with_law():
    fields = spec_fields(make_spec())
    fields["law"] = "gaussian"
    assert SketchSpec(**fields).fingerprint != make_spec().fingerprint


# -- validation ---------------------------------------------------------------


def expect_spec_error(match: str, **overrides):
    fields = spec_fields(make_spec())
    fields.update(overrides)
    with pytest.raises(SpecError, match=match) as info:
        SketchSpec(**fields)
    assert isinstance(info.value, SketchgenError)
    return info.value


def test_wrong_omega_shape():
    err = expect_spec_error(r"omega.*shape", omega=np.zeros((3, 15)))
    assert "(3, 16)" in str(err)


def test_omega_transposed_is_refused():
    expect_spec_error(r"omega.*shape", omega=np.zeros((16, 3)))


def test_nan_in_omega():
    omega = np.array(make_spec().omega)
    omega[1, 2] = np.nan
    expect_spec_error(r"omega.*NaN", omega=omega)


def test_inf_in_mean():
    expect_spec_error(r"mean.*NaN or Inf", mean=np.array([0.0, np.inf, 0.0]))


def test_negative_sigma():
    expect_spec_error(r"sigma.*positive", sigma=np.array(-0.5))


def test_zero_in_per_dimension_sigma():
    expect_spec_error(r"sigma.*positive", sigma=np.array([1.0, 0.0, 1.0]))


def test_sigma_of_wrong_length():
    expect_spec_error(r"sigma.*shape", sigma=np.array([1.0, 1.0]))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_nonpositive_std(bad):
    expect_spec_error(r"std.*positive", std=np.array([1.0, bad, 1.0]))


def test_unknown_law():
    err = expect_spec_error(r"unknown frequency law", law="cauchy")
    assert "'cauchy'" in str(err) and "adapted-radius" in str(err)


def test_unknown_law_in_create():
    with pytest.raises(SpecError, match="unknown frequency law"):
        SketchSpec.create(d=2, m=4, law="laplace")


def test_unknown_scale_method():
    err = expect_spec_error(r"unknown scale method", scale_method="guess")
    assert "'guess'" in str(err)


def test_non_numeric_omega():
    expect_spec_error(r"omega.*numeric", omega=np.full((3, 16), "x"))


@pytest.mark.parametrize("d,m", [(0, 4), (2, 0)])
def test_nonpositive_sizes(d, m):
    with pytest.raises(SpecError):
        SketchSpec.create(d=d, m=m, law="gaussian")


@pytest.mark.parametrize("garbage", [b"", b"not an npz at all", b"PK\x03\x04truncated zip", bytes(range(256)) * 4])
def test_garbage_bytes(garbage):
    with pytest.raises(SpecError, match="cannot read spec"):
        SketchSpec.from_bytes(garbage)


def test_truncated_spec_bytes():
    data = make_spec().to_bytes()
    with pytest.raises(SpecError):
        SketchSpec.from_bytes(data[: len(data) // 2])


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    arrays = make_spec().to_arrays()
    arrays["spec_omega"] = np.array([{"evil": 1}, None], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpecError, match="cannot read spec"):
        SketchSpec.load(path)


def test_npz_with_object_meta_is_refused():
    arrays = make_spec().to_arrays()
    arrays["spec_meta"] = np.array([json.loads(str(arrays["spec_meta"][()]))], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(SpecError):
        SketchSpec.from_bytes(buf.getvalue())


def test_tampered_omega_fails_fingerprint_check():
    arrays = make_spec().to_arrays()
    omega = np.array(arrays["spec_omega"])
    omega[0, 0] += 1e-6
    arrays["spec_omega"] = omega
    with pytest.raises(SpecError, match="fingerprint mismatch"):
        SketchSpec.from_arrays(arrays)


def test_tampered_mean_fails_fingerprint_check_through_bytes():
    arrays = make_spec().to_arrays()
    arrays["spec_mean"] = np.array(arrays["spec_mean"]) + 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(SpecError, match="fingerprint mismatch"):
        SketchSpec.from_bytes(buf.getvalue())


def test_untampered_arrays_load():
    spec = make_spec()
    assert_same_spec(spec, SketchSpec.from_arrays(spec.to_arrays()))


def test_missing_field():
    arrays = make_spec().to_arrays()
    del arrays["spec_std"]
    with pytest.raises(SpecError, match=r"missing field.*std"):
        SketchSpec.from_arrays(arrays)


def test_wrong_format_tag():
    arrays = make_spec().to_arrays()
    meta = json.loads(str(arrays["spec_meta"][()]))
    meta["format"] = "sketchgen.spec/999"
    arrays["spec_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError, match="unsupported spec format"):
        SketchSpec.from_arrays(arrays)


def test_meta_not_json():
    arrays = make_spec().to_arrays()
    arrays["spec_meta"] = np.array("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        SketchSpec.from_arrays(arrays)


def test_meta_missing_key():
    arrays = make_spec().to_arrays()
    meta = json.loads(str(arrays["spec_meta"][()]))
    del meta["law"]
    arrays["spec_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError, match="incomplete"):
        SketchSpec.from_arrays(arrays)


def test_meta_dimension_disagreeing_with_arrays():
    arrays = make_spec().to_arrays()
    meta = json.loads(str(arrays["spec_meta"][()]))
    meta["m"] = 17
    arrays["spec_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError, match="shape"):
        SketchSpec.from_arrays(arrays)


def test_meta_with_non_numeric_dimension_raises_spec_error():
    arrays = make_spec().to_arrays()
    meta = json.loads(str(arrays["spec_meta"][()]))
    meta["d"] = "three"
    arrays["spec_meta"] = np.array(json.dumps(meta))
    with pytest.raises(SpecError):
        SketchSpec.from_arrays(arrays)


# -- standardisation -------------------------------------------------------


def test_standardize_unstandardize_inverse():
    spec = make_spec()
    x = np.random.default_rng(0).normal(size=(10, 3)) * 5
    y = spec.standardize(x)
    assert np.allclose(y, (x - spec.mean) / spec.std)
    assert np.allclose(spec.unstandardize(y), x, rtol=0, atol=1e-12)
