"""Record decoding and validation: every bad value is rejected with a reason, never crashes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.decode import (
    F32_CONTENT_TYPE,
    REASONS,
    RecordError,
    check_range,
    decode_json_vectors,
    decode_value,
)

F32 = [("content-type", F32_CONTENT_TYPE.encode())]


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"[1, 2.5]", [[1.0, 2.5]]),
        (b"[[1, 2], [3, 4]]", [[1.0, 2.0], [3.0, 4.0]]),
        (b'{"x": [1, 2]}', [[1.0, 2.0]]),
        (b'{"x": [[1, 2], [-3e2, 4]]}', [[1.0, 2.0], [-300.0, 4.0]]),
        (b" [0, -0.5] ", [[0.0, -0.5]]),
    ],
)
def test_valid_json(value, expected):
    assert decode_value(value, [], d=2).tolist() == expected


def test_valid_f32_rows():
    rows = np.arange(12, dtype="<f4").reshape(6, 2)
    out = decode_value(rows.tobytes(), F32, d=2)
    assert out.dtype == np.float64 and out.shape == (6, 2)
    np.testing.assert_array_equal(out, rows)


def test_header_names_and_parameters_are_case_insensitive():
    rows = np.ones((2, 2), dtype="<f4")
    out = decode_value(rows.tobytes(), [("Content-Type", b"Application/X-Float32; v=1")], d=2)
    assert out.shape == (2, 2)


@pytest.mark.parametrize(
    "value, headers, reason",
    [
        (None, [], "empty"),
        (b"", [], "empty"),
        (b"[1, 2", [], "invalid_json"),
        (b"\xff\xfe", [], "invalid_json"),
        (b"[1, 2, 3]", [], "wrong_dimension"),
        (b"[[1, 2], [3]]", [], "wrong_dimension"),
        (b"[1, NaN]", [], "non_finite"),
        (b"[1, Infinity]", [], "non_finite"),
        (b"[1e400, 1]", [], "non_finite"),
        (b'["1", 2]', [], "bad_structure"),
        (b"[true, 2]", [], "bad_structure"),
        (b"[null, 2]", [], "bad_structure"),
        (b"[]", [], "bad_structure"),
        (b"{}", [], "bad_structure"),
        (b'{"x": [1, 2], "y": 1}', [], "bad_structure"),
        (b"3", [], "bad_structure"),
        (b"[[[1, 2]]]", [], "bad_structure"),
        (b"\x00\x00\x80\x7f" * 2, F32, "non_finite"),
        (b"\x00" * 7, F32, "bad_binary"),
        (b"[1, 2]", [("content-type", b"application/avro")], "unsupported_content_type"),
    ],
)
def test_rejections(value, headers, reason):
    with pytest.raises(RecordError) as info:
        decode_value(value, headers, d=2)
    assert info.value.reason == reason
    assert info.value.reason in REASONS
    assert info.value.detail


def test_ten_megabyte_blob_is_rejected_unparsed():
    with pytest.raises(RecordError) as info:
        decode_value(b"[" + b"1," * (5 << 20) + b"1]", [], d=2, max_bytes=4 << 20)
    assert info.value.reason == "too_large"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([[], F32]))
def test_fuzzed_bytes_either_decode_to_finite_rows_or_are_rejected(value, headers):
    try:
        rows = decode_value(value, headers, d=3)
    except RecordError as exc:
        assert exc.reason in REASONS
        return
    assert rows.ndim == 2 and rows.shape[1] == 3 and rows.shape[0] >= 1
    assert np.all(np.isfinite(rows))


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["x", "y"]), children),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_fuzzed_json_structures(obj):
    value = json.dumps(obj).encode()
    try:
        rows = decode_value(value, [], d=2)
    except RecordError as exc:
        assert exc.reason in REASONS
        return
    assert rows.shape[1] == 2 and np.all(np.isfinite(rows))


json_ish = st.lists(
    st.sampled_from([b"[", b"]", b",", b" ", b"1", b"-", b".", b"5", b"e", b"+", b"0", b"\x00", b"NaN", b'"']),
    max_size=12,
).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.binary(max_size=40) | json_ish, min_size=1, max_size=20))
def test_fast_path_never_accepts_what_the_slow_path_rejects(values):
    rows = decode_json_vectors(values, d=2)
    if rows is None:
        return
    slow = np.concatenate([decode_value(v, [], d=2) for v in values])
    np.testing.assert_array_equal(rows, slow)


def test_fast_path_matches_slow_path_on_valid_vectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    values = [json.dumps(r.tolist()).encode() for r in x]
    fast = decode_json_vectors(values, d=3)
    assert fast is not None
    np.testing.assert_array_equal(fast, x)


def test_fast_path_refuses_records_that_only_parse_when_joined():
    # "[1" and "2]" are invalid alone but would join into a valid row.
    assert decode_json_vectors([b"[1", b"2]", b"[3,4],[5,6]"], d=2) is None
    assert decode_json_vectors([b"[3,4],[5,6]"], d=2) is None
    assert decode_json_vectors([b'["1",2]'], d=2) is None
    assert decode_json_vectors([b"5[1,2]"], d=2) is None
    assert decode_json_vectors([b"[+1, 2]", b"[.5, 2]", b"[01, 2]"][:1], d=2) is None  # not JSON numbers
    assert decode_json_vectors([b" [1.5e-3 , -2]\n"], d=2).tolist() == [[1.5e-3, -2.0]]


def test_f32_rows_roundtrip_exactly():
    x = np.array([[1.5, -2.25], [3.0, 4.0]], dtype="<f4")
    packed = struct.pack("<4f", *x.ravel())
    np.testing.assert_array_equal(decode_value(packed, F32, d=2), x.astype(np.float64))


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"[1" + b"0" * 400 + b", 2]", "non_finite"),  # an integer beyond float64
        (b"[" * 100_000, "invalid_json"),  # nesting deeper than the parser's recursion limit
    ],
)
def test_values_that_once_crashed_the_parser(value, reason):
    with pytest.raises(RecordError) as info:
        decode_value(value, [], d=2)
    assert info.value.reason == reason
    assert decode_json_vectors([value], d=2) is None


def test_fast_path_respects_the_size_limit():
    big = b"[1," + b" " * 1000 + b"2]"
    assert decode_json_vectors([big], d=2, max_bytes=500) is None
    assert decode_json_vectors([big], d=2, max_bytes=5000) is not None


def test_range_check():
    rows = np.array([[0.0, 1.0], [1e300, 0.0], [-5e6, 0.0]])
    mask = check_range(rows, mean=np.zeros(2), std=np.ones(2))
    assert mask.tolist() == [True, False, False]
