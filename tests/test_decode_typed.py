"""Decoding typed records on the streaming path: ingest.decode.decode_typed_value and the fold's typed branch.

A stream whose spec has an encoder takes one JSON object per record value (docs/ingest.md, "Typed records");
every other value, and every value the encoder refuses, is an ingest RecordError with a reason from
ALL_REASONS. Hypothesis feeds arbitrary JSON values and arbitrary objects over the schema's keys: nothing
may raise anything else, and no accepted row may be non-finite.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.decode import (
    ALL_REASONS,
    F32_CONTENT_TYPE,
    REASONS,
    TYPED_REASONS,
    RecordError,
    decode_typed_value,
)
from ingest.fold import Job, decode_job
from ingest.metrics import IngestMetrics
from sketch_store.features import FeatureMap
from sketch_store.pilot import typed_spec_from_pilot
from sketch_store.schema import MAX_DEPTH, MAX_STRING_BYTES, Field, Schema
from sketch_store.typed_encoding import Encoder, EncodingStats

SCHEMA = Schema((
    Field("price", "float"),
    Field("qty", "int", nullable=True),
    Field("cut", "category", ("Fair", "Good", "Ideal")),
    Field("cert", "bool"),
    Field("device.model", "category", ("a", "b"), nullable=True),
))
STATS = EncodingStats({"price": (100.0, 20.0), "qty": (3.0, 2.0)})
ENCODER = Encoder(SCHEMA, STATS)
GOOD = {"price": 120.0, "qty": 5, "cut": "Good", "cert": True, "device": {"model": "a"}}


def pilot(n: int = 300, seed: int = 0) -> list[dict[str, object]]:
    """Mixed-type pilot records of SCHEMA."""
    rng = np.random.default_rng(seed)
    return [{"price": float(rng.normal(100, 20)), "qty": int(rng.integers(0, 9)) if i % 7 else None,
             "cut": ["Fair", "Good", "Ideal"][i % 3], "cert": bool(i % 2),
             "device": {"model": "ab"[i % 2]} if i % 5 else {}} for i in range(n)]


@pytest.fixture(scope="module")
def spec():
    return typed_spec_from_pilot(pilot(), SCHEMA, m=16, seed=1, name="typed")


def encoded(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason_of(value: bytes | None, headers=None, encoder: Encoder = ENCODER) -> str:
    with pytest.raises(RecordError) as info:
        decode_typed_value(value, headers, encoder, max_bytes=1 << 16)
    return info.value.reason


# -- the accepted form ---------------------------------------------------------------------------------


def test_a_record_object_becomes_its_encoded_row():
    row = decode_typed_value(encoded(GOOD), None, ENCODER)
    assert row.shape == (1, ENCODER.dim)
    np.testing.assert_array_equal(row[0], ENCODER.encode(GOOD))


def test_extra_keys_are_ignored_and_a_missing_nullable_field_is_null():
    bare = {"price": 90.0, "cut": "Fair", "cert": False}
    with_extras = {**bare, "other": [1, {"x": None}], "note": "anything"}
    expected = ENCODER.encode({**bare, "qty": None, "device.model": None})
    np.testing.assert_array_equal(decode_typed_value(encoded(with_extras), None, ENCODER)[0], expected)
    np.testing.assert_array_equal(decode_typed_value(encoded(bare), None, ENCODER)[0], expected)


def test_dotted_names_read_nested_objects_or_literal_keys():
    nested = decode_typed_value(encoded(GOOD), None, ENCODER)
    flat = {k: v for k, v in GOOD.items() if k != "device"} | {"device.model": "a"}
    np.testing.assert_array_equal(decode_typed_value(encoded(flat), None, ENCODER), nested)


@pytest.mark.parametrize("text", [
    b'{"price": "oops", "price": 120.0, "qty": 5, "cut": "Good", "cert": true, "device": {"model": "a"}}',
    b'{"price": 120.0, "qty": 5, "cut": "Good", "cert": true, "device": {"model": "a"}, "cert": true}',
    b'{"price": 120.0, "qty": 5, "cut": "Good", "cert": true, "device": {"model": "a", "model": "b"}}',
    b'{"price": 120.0, "qty": 5, "cut": "Good", "cert": true, "extra": [{"k": 1, "k": 1}]}',
])
def test_a_repeated_key_anywhere_is_refused_whichever_value_it_repeats(text):
    """Which of a repeated key's values is meant is ambiguous (parsers differ): the record is refused."""
    with pytest.raises(RecordError) as info:
        decode_typed_value(text, None, ENCODER)
    assert info.value.reason == "duplicate_key" and "appears more than once" in info.value.detail


def test_json_content_types_and_integral_floats_are_accepted():
    row = decode_typed_value(encoded({**GOOD, "qty": 5.0}), [("content-type", b"application/json; charset=utf-8")],
                             ENCODER)
    np.testing.assert_array_equal(row[0], ENCODER.encode(GOOD))


def test_the_other_policy_sketches_an_unknown_category_in_its_slot():
    encoder = Encoder(SCHEMA, EncodingStats(STATS.numeric, unknown="other"))
    row = decode_typed_value(encoded({**GOOD, "cut": "Poor"}), None, encoder)[0]
    names = encoder.column_names
    assert row[names.index("cut=__other__")] == pytest.approx(STATS.category_scale)
    assert row[names.index("cut=Good")] == 0.0
    assert reason_of(encoded({**GOOD, "cut": "Poor"})) == "unknown_category"  # the default policy refuses


# -- every refusal, with its reason --------------------------------------------------------------------

DEEP: dict[str, object] = {}
_node = DEEP
for _ in range(MAX_DEPTH + 1):
    _node["x"] = {}
    _node = _node["x"]  # type: ignore[assignment]

BAD_VALUES = {
    "string for a float": (encoded({**GOOD, "price": "120"}), "wrong_type"),
    "bool for an int": (encoded({**GOOD, "qty": True}), "wrong_type"),
    "fractional int": (encoded({**GOOD, "qty": 2.5}), "wrong_type"),
    "number for a bool": (encoded({**GOOD, "cert": 1}), "wrong_type"),
    "number for a category": (encoded({**GOOD, "cut": 3}), "wrong_type"),
    "array for a scalar": (encoded({**GOOD, "price": [120.0]}), "wrong_type"),
    "object for a scalar": (encoded({**GOOD, "cut": {"name": "Good"}}), "wrong_type"),
    "unknown category": (encoded({**GOOD, "cut": "Poor"}), "unknown_category"),
    "unknown nested category": (encoded({**GOOD, "device": {"model": "z"}}), "unknown_category"),
    "null where not nullable": (encoded({**GOOD, "cert": None}), "null_not_allowed"),
    "missing field": (encoded({k: v for k, v in GOOD.items() if k != "price"}), "null_not_allowed"),
    "NaN": (encoded({**GOOD, "price": math.nan}), "non_finite"),
    "Infinity": (b'{"price": Infinity, "cut": "Good", "cert": true}', "non_finite"),
    "float overflow": (b'{"price": 1e400, "cut": "Good", "cert": true}', "non_finite"),
    "huge int": (encoded({**GOOD, "qty": 10**400}), "non_finite"),
    "huge string": (encoded({**GOOD, "cut": "G" * (MAX_STRING_BYTES + 1)}), "too_long"),
    "deeply nested extra key": (encoded({**GOOD, "extra": DEEP}), "nested_too_deep"),
    "array record": (encoded([120.0, 5, 1, 0, 0, 1, 1, 0, 0]), "bad_structure"),
    "string record": (encoded("price=120"), "bad_structure"),
    "number record": (b"42", "bad_structure"),
    "null record": (b"null", "bad_structure"),
    "invalid JSON": (b'{"price": 120.0,', "invalid_json"),
    "not UTF-8": (b'{"cut": "\xff"}', "invalid_json"),
    "over the size limit": (b"[" * 100_000 + b"]" * 100_000, "too_large"),
    "JSON past the parser's recursion": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "invalid_json"),
    "tombstone": (None, "empty"),
    "empty value": (b"", "empty"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_record_is_refused_with_its_reason(case):
    value, expected = BAD_VALUES[case]
    got = reason_of(value)
    assert got == expected, case
    assert got in ALL_REASONS


def test_a_scalar_where_a_nested_object_belongs_reads_the_field_as_missing():
    row = decode_typed_value(encoded({**GOOD, "device": "a"}), None, ENCODER)[0]
    np.testing.assert_array_equal(row, ENCODER.encode({**GOOD, "device": None}))
    strict = Encoder(Schema((Field("device.model", "category", ("a",)),)), EncodingStats({}))
    assert reason_of(encoded({"device": "a"}), encoder=strict) == "null_not_allowed"


def test_float32_values_and_other_content_types_are_refused():
    f32 = [("content-type", F32_CONTENT_TYPE.encode())]
    assert reason_of(np.zeros(ENCODER.dim, dtype="<f4").tobytes(), f32) == "unsupported_content_type"
    assert reason_of(encoded(GOOD), [("content-type", b"text/plain")]) == "unsupported_content_type"


def test_a_value_over_the_limit_is_refused_unread():
    with pytest.raises(RecordError) as info:
        decode_typed_value(encoded({**GOOD, "pad": "x" * 200}), None, ENCODER, max_bytes=100)
    assert info.value.reason == "too_large"


def test_the_reason_sets():
    assert REASONS == ("too_large", "empty", "invalid_json", "bad_structure", "wrong_dimension", "non_finite",
                       "bad_binary", "unsupported_content_type", "out_of_range")  # numeric streams: as before
    assert set(TYPED_REASONS) == {"wrong_type", "unknown_category", "null_not_allowed", "too_long",
                                  "nested_too_deep", "duplicate_key"}
    assert ALL_REASONS == REASONS + TYPED_REASONS and len(set(ALL_REASONS)) == len(ALL_REASONS)


def test_the_metrics_export_every_typed_reason_at_zero():
    metrics = IngestMetrics("s")
    samples = {s.labels["reason"]: s.value for f in metrics.registry.collect() for s in f.samples
               if s.name == "sketchgen_ingest_rejected_total"}
    assert set(samples) == set(ALL_REASONS) and not any(samples.values())


# -- the fold child's typed branch ---------------------------------------------------------------------


def test_a_typed_job_folds_the_valid_records_and_rejects_the_rest(spec):
    records = pilot(20, seed=3)
    values = [encoded(r) for r in records]
    bad = {3: (b"[1, 2, 3]", "bad_structure"), 7: (encoded({**records[7], "cut": "Poor"}), "unknown_category"),
           11: (encoded({**records[11], "price": 1e12}), "out_of_range"), 15: (None, "empty")}
    for i, (value, _) in bad.items():
        values[i] = value
    rows, times, rejects = decode_job(Job(values, None, [1000] * len(values)), spec, 1 << 16)
    assert [(i, reason) for i, reason, _ in rejects] == [(i, reason) for i, (_, reason) in sorted(bad.items())]
    valid = [r for i, r in enumerate(records) if i not in bad]
    np.testing.assert_array_equal(rows, spec.encoder.encode_many(valid))
    assert times.tolist() == [1.0] * len(valid)


def test_a_plain_row_never_takes_the_numeric_fast_path_of_a_typed_stream(spec):
    row = b"[" + b", ".join(b"0.5" for _ in range(spec.d)) + b"]"
    job = Job.plain([row, row], np.array([0, 0]))
    rows, _, rejects = decode_job(job, spec, 1 << 16)
    assert rows.shape == (0, spec.d)
    assert [reason for _, reason, _ in rejects] == ["bad_structure", "bad_structure"]


def test_a_typed_job_with_headers_refuses_float32(spec):
    f32 = [("content-type", F32_CONTENT_TYPE.encode())]
    values = [np.zeros(spec.d, dtype="<f4").tobytes(), encoded(pilot(1)[0])]
    rows, _, rejects = decode_job(Job(values, [f32, []], [0, 0]), spec, 1 << 16)
    assert rows.shape == (1, spec.d) and [(i, r) for i, r, _ in rejects] == [(0, "unsupported_content_type")]
    total, n = FeatureMap(spec).feature_sum(rows)
    assert n == 1 and np.all(np.isfinite(total))


# -- fuzzing -------------------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(["Fair", "Good", "Ideal", "a", "b", "__other__", "true", "1e400", ""])
           | st.just("x" * (MAX_STRING_BYTES + 1)) | st.just("\ud800"))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)
KEYS = st.sampled_from(["price", "qty", "cut", "cert", "device", "device.model", "model", "other"])
RECORDS = st.dictionaries(KEYS, JSON_VALUES, max_size=7) | st.fixed_dictionaries(
    {"price": JSON_VALUES, "cut": SCALARS, "cert": SCALARS},
    optional={"qty": SCALARS, "device": st.dictionaries(st.sampled_from(["model"]), JSON_VALUES) | SCALARS})


def check_decodes_or_refuses(value: bytes, encoder: Encoder) -> None:
    """Only ingest's RecordError (with a known reason) may come out; an accepted row is finite."""
    try:
        row = decode_typed_value(value, None, encoder)
    except RecordError as exc:
        assert exc.reason in ALL_REASONS, exc.reason
        return
    assert row.shape == (1, encoder.dim) and np.all(np.isfinite(row))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=JSON_VALUES | RECORDS)
def test_fuzz_any_json_value_is_decoded_or_refused(obj):
    check_decodes_or_refuses(json.dumps(obj).encode(), ENCODER)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=RECORDS, unknown=st.sampled_from(["reject", "other"]))
def test_fuzz_records_over_the_schema_keys_are_decoded_or_refused(obj, unknown):
    check_decodes_or_refuses(json.dumps(obj).encode(), Encoder(SCHEMA, EncodingStats(STATS.numeric,
                                                                                       unknown=unknown)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_fuzz_arbitrary_bytes_are_decoded_or_refused(data):
    check_decodes_or_refuses(data, ENCODER)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(objs=st.lists(JSON_VALUES | RECORDS, min_size=1, max_size=8))
def test_fuzz_a_typed_job_never_raises_and_folds_only_finite_rows(spec, objs):
    values = [json.dumps(o).encode() for o in objs]
    rows, _, rejects = decode_job(Job(values, None, [0] * len(values)), spec, 1 << 16)
    assert rows.shape[0] + len(rejects) == len(values)
    assert np.all(np.isfinite(rows)) and np.all(np.abs(rows) <= 1e6)
    assert all(reason in ALL_REASONS for _, reason, _ in rejects)
