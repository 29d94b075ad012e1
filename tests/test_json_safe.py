"""learner.json_safe: every reply is strict JSON (no NaN/Infinity), numpy values included, the same in blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from learner.json_safe import dumps, finite

floats = st.floats(allow_nan=True, allow_infinity=True)
values = st.recursive(st.none() | st.booleans() | st.integers(-(2**62), 2**62) | floats | st.text(max_size=5),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                   max_size=4), max_leaves=20)


def strict_loads(body: bytes) -> object:
    """Parse refusing NaN and Infinity, as browsers do."""
    def refuse(token: str) -> float:
        raise AssertionError(f"{token} in a reply")
    return json.loads(body, parse_constant=refuse)


@given(values)
def test_any_value_encodes_as_strict_json_with_non_finite_floats_as_null(value):
    assert strict_loads(dumps(value)) == finite(value)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_arrays_of_every_float_width_encode_their_values_and_null(dtype):
    array = np.array([[1.5, np.nan], [-np.inf, 0.25]], dtype=dtype)
    assert strict_loads(dumps({"x": array})) == {"x": [[1.5, None], [None, 0.25]]}


def test_numpy_scalars_sliced_and_object_arrays_and_non_string_keys():
    grid = np.arange(12.0).reshape(3, 4)
    body = {"col": grid[:, 1], "t": grid.T, "n": np.int64(7), "f": np.float32(0.5), "b": np.bool_(True),
            "o": np.array([1.0, None, float("nan")], dtype=object), 3: "three"}
    assert strict_loads(dumps(body)) == {"col": [1.0, 5.0, 9.0], "t": grid.T.tolist(), "n": 7, "f": 0.5, "b": True,
                                         "o": [1.0, None, None], "3": "three"}


def test_large_arrays_in_blocks_read_back_the_same_as_in_one_piece():
    rows = np.random.default_rng(0).normal(size=(2500, 3)).astype(np.float32)
    rows[7, 1] = np.nan
    whole, blocks = dumps({"samples": rows, "n": 2500}, rows_per_block=10**6), dumps({"samples": rows, "n": 2500},
                                                                                     rows_per_block=100)
    assert whole == blocks
    got = strict_loads(blocks)["samples"]
    assert got[7][1] is None
    got[7][1] = float("nan")
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), rows)  # float32 written in its shortest form


def test_what_json_cannot_hold_is_refused_clearly():
    with pytest.raises(TypeError):
        dumps({"x": object()})
