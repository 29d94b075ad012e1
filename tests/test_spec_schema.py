"""The typed part of a sketch spec: validation, fingerprint, storage (no pickle), and typed_spec_from_pilot."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from sketch_store.errors import SpecError
from sketch_store.pilot import spec_from_pilot, typed_spec_from_pilot
from sketch_store.schema import Field, Schema
from sketch_store.spec import SketchSpec
from sketch_store.typed_encoding import Encoder, EncodingStats, RecordError

SCHEMA = Schema((Field("carat", "float"), Field("cut", "category", ("Fair", "Good", "Ideal")),
                 Field("certified", "bool", nullable=True)))
STATS = EncodingStats({"carat": (0.8, 0.4)})
D = Encoder(SCHEMA, STATS).dim  # 1 + 3 + 2


def typed_spec(**changes) -> SketchSpec:
    fields = {"d": D, "m": 16, "law": "gaussian", "sigma": 1.0, "seed": 3, "schema": SCHEMA, "encoding": STATS}
    fields.update(changes)
    return SketchSpec.create(**fields)


def pilot_records(n: int = 400, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    cuts = rng.choice(["Fair", "Good", "Ideal"], size=n, p=[0.2, 0.3, 0.5])
    return [{"carat": float(c), "cut": str(k), "certified": None if i % 7 == 0 else bool(i % 2)}
            for i, (c, k) in enumerate(zip(np.exp(rng.normal(-0.3, 0.4, n)), cuts, strict=True))]


# -- numeric specs keep their fingerprints ------------------------------------------------------------


def test_numeric_fingerprints_are_unchanged():
    """Values computed before the typed fields existed: a numeric spec must hash exactly as it did."""
    plain = SketchSpec.create(d=3, m=16, law="gaussian", sigma=0.7, mean=np.array([1.0, 2, 3]),
                              std=np.array([1.0, 2, 3]), seed=5)
    ladder = SketchSpec.create(d=2, m=12, law="adapted-radius", sigma=2.0, seed=1, scales=np.array([2.0, 1.0, 0.5]),
                               scale_method="multiscale")
    x = np.random.default_rng(3).normal(size=(500, 3)) * [1, 2, 3] + [4, 5, 6]
    assert plain.fingerprint == "23137343827e1a7a"
    assert ladder.fingerprint == "5ea237c1df01ce73"
    # one σ: the default ladder's scales may change with its design, the typed fields must change nothing
    assert spec_from_pilot(x, m=32, seed=0, kernel="single").fingerprint == "85512986783850a8"
    assert plain.encoder is None and plain.schema is None and "typed" not in plain.describe()
    assert not any(k.endswith(("schema", "encoding")) for k in plain.to_arrays())


# -- typed specs ----------------------------------------------------------------------------------------


def test_typed_spec_round_trips_through_bytes_and_a_file_without_pickle(tmp_path):
    spec = typed_spec()
    back = SketchSpec.from_bytes(spec.to_bytes())
    assert back.fingerprint == spec.fingerprint
    assert back.schema == SCHEMA and back.encoding == STATS
    assert back.encoder.column_names == ("carat", "cut=Fair", "cut=Good", "cut=Ideal", "certified", "certified=null")
    spec.save(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        assert npz["spec_schema"].dtype == np.uint8 and npz["spec_encoding"].dtype == np.uint8
        assert Schema.from_json(npz["spec_schema"].tobytes()) == SCHEMA
    assert SketchSpec.load(tmp_path / "s.npz").fingerprint == spec.fingerprint


def test_describe_and_encoder():
    spec = typed_spec()
    assert "typed: 3 fields (carat, cut, certified)" in spec.describe()
    assert spec.encoder.dim == spec.d
    assert spec.with_name("other").fingerprint == spec.fingerprint


@pytest.mark.parametrize("change", [
    {"schema": Schema((Field("carat", "float"), Field("cut", "category", ("Fair", "Good", "Premium")),
                       Field("certified", "bool", nullable=True)))},
    {"encoding": EncodingStats({"carat": (0.8, 0.5)})},
    {"encoding": EncodingStats({"carat": (0.8, 0.4)}, category_scale=1.0)},
    {"encoding": EncodingStats({"carat": (0.8, 0.4)}, unknown="other"), "d": D + 1},
])
def test_fingerprint_covers_schema_and_encoding(change):
    assert typed_spec(**change).fingerprint != typed_spec().fingerprint


def test_typed_and_numeric_specs_of_one_omega_differ():
    spec = typed_spec()
    numeric = dataclasses.replace(spec, schema=None, encoding=None)
    assert numeric.fingerprint != spec.fingerprint


@pytest.mark.parametrize("change, message", [
    ({"encoding": None}, "both a schema and its encoding"),
    ({"schema": None}, "both a schema and its encoding"),
    ({"d": D + 1}, "differs from its encoding's dimension"),
    ({"mean": np.full(D, 0.5)}, "must not standardise again"),
    ({"std": np.full(D, 2.0)}, "must not standardise again"),
    ({"encoding": EncodingStats({"price": (1.0, 1.0)})}, "does not fit its schema"),
    ({"schema": Schema.numeric(2), "encoding": EncodingStats({"x0": (0, 1), "x1": (0, 1)}), "d": 2},
     "numeric spec"),
])
def test_inconsistent_typed_specs_are_refused(change, message):
    with pytest.raises(SpecError, match=message):
        typed_spec(**change)


def _arrays(spec: SketchSpec) -> dict[str, np.ndarray]:
    return dict(np.load(io.BytesIO(spec.to_bytes()), allow_pickle=False))


def test_stored_schema_without_encoding_is_refused():
    arrays = _arrays(typed_spec())
    del arrays["spec_encoding"]
    with pytest.raises(SpecError, match="has schema but not encoding"):
        SketchSpec.from_arrays(arrays)


def test_stored_schema_that_is_not_json_is_refused():
    arrays = _arrays(typed_spec())
    arrays["spec_schema"] = np.frombuffer(b"{not json", dtype=np.uint8)
    with pytest.raises(SpecError, match="not valid JSON"):
        SketchSpec.from_arrays(arrays)


def test_stored_schema_of_the_wrong_dtype_is_refused():
    arrays = _arrays(typed_spec())
    arrays["spec_schema"] = arrays["spec_schema"].astype(np.float64)
    with pytest.raises(SpecError, match="uint8 array of JSON bytes"):
        SketchSpec.from_arrays(arrays)


def test_tampered_schema_fails_the_fingerprint_check():
    arrays = _arrays(typed_spec())
    text = arrays["spec_schema"].tobytes().replace(b'"Ideal"', b'"Ideas"')
    arrays["spec_schema"] = np.frombuffer(text, dtype=np.uint8)
    with pytest.raises(SpecError, match="fingerprint mismatch"):
        SketchSpec.from_arrays(arrays)


def test_tampered_encoding_fails_the_fingerprint_check():
    arrays = _arrays(typed_spec())
    text = arrays["spec_encoding"].tobytes().replace(b'"mean":0.8', b'"mean":0.9')
    assert text != arrays["spec_encoding"].tobytes()
    arrays["spec_encoding"] = np.frombuffer(text, dtype=np.uint8)
    with pytest.raises(SpecError, match="fingerprint mismatch"):
        SketchSpec.from_arrays(arrays)


# -- typed_spec_from_pilot ----------------------------------------------------------------------------------


def test_typed_spec_from_pilot_designs_the_kernel_on_the_encoded_pilot():
    records = pilot_records()
    spec = typed_spec_from_pilot(records, SCHEMA, m=64, seed=1)
    encoder = spec.encoder
    assert spec.d == encoder.dim == D
    assert np.all(spec.mean == 0) and np.all(spec.std == 1)
    carat = np.array([r["carat"] for r in records])
    assert spec.encoding.numeric["carat"] == pytest.approx((carat.mean(), carat.std()))
    same = spec_from_pilot(encoder.encode_many(records), m=64, seed=1, standardize=False)
    assert spec.scale_method == same.scale_method == "multiscale"
    np.testing.assert_array_equal(spec.omega, same.omega)
    np.testing.assert_array_equal(spec.scales, same.scales)


def test_typed_spec_from_pilot_single_kernel_and_given_sigma():
    records = pilot_records()
    single = typed_spec_from_pilot(records, SCHEMA, m=32, kernel="single")
    given = typed_spec_from_pilot(records, SCHEMA, m=32, sigma=0.5)
    assert single.scale_method == "sketch" and single.scales is None
    assert given.scale_method == "given" and float(given.sigma) == 0.5 and given.schema == SCHEMA


def test_typed_spec_from_pilot_of_a_numeric_schema_is_the_numeric_spec():
    x = np.random.default_rng(2).normal(loc=3.0, size=(300, 2))
    records = [{"a": float(u), "b": float(v)} for u, v in x]
    schema = Schema((Field("a", "float"), Field("b", "float")))
    spec = typed_spec_from_pilot(records, schema, m=32, seed=0)
    assert spec.schema is None
    assert spec.fingerprint == spec_from_pilot(x, m=32, seed=0).fingerprint


def test_typed_spec_from_pilot_names_a_bad_record():
    records = pilot_records(20)
    records[4] = {**records[4], "cut": "Poor"}
    with pytest.raises(RecordError, match="pilot record 5: field 'cut': unknown category 'Poor'"):
        typed_spec_from_pilot(records, SCHEMA, m=16)
