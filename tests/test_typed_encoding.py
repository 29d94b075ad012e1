"""The encoding of typed records into vectors (docs/design.md §1, "Typed records"): formulas, distances, round trips,
and every reason a record is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sketch_store.errors import DataError, SpecError, SpecMismatchError
from sketch_store.schema import OTHER, Field, Schema
from sketch_store.typed_encoding import (
    DEFAULT_CATEGORY_SCALE,
    REASONS,
    Encoder,
    EncodingStats,
    RecordError,
    check_depth,
    fit_encoding_stats,
    lookup,
    parse_text_record,
)

C = DEFAULT_CATEGORY_SCALE
SCHEMA = Schema((
    Field("carat", "float"),
    Field("cut", "category", ("Fair", "Good", "Ideal", "Premium")),
    Field("price", "int"),
    Field("has_cert", "bool"),
    Field("depth", "float", nullable=True),
    Field("lab", "category", ("GIA", "IGI"), nullable=True),
    Field("fluor", "bool", nullable=True),
    Field("seller.rating", "int", nullable=True),
))
STATS = EncodingStats({"carat": (0.8, 0.5), "price": (4000.0, 4000.0), "depth": (61.0, 1.5),
                       "seller.rating": (3.0, 2.0)})
BASE = {"carat": 0.8, "cut": "Good", "price": 4000, "has_cert": True, "depth": 61.0, "lab": "GIA", "fluor": False,
        "seller": {"rating": 3}}


def encoder(unknown: str = "reject") -> Encoder:
    return Encoder(SCHEMA, EncodingStats(STATS.numeric, C, unknown))  # type: ignore[arg-type]


def dist(a: dict, b: dict, enc: Encoder | None = None) -> float:
    enc = enc or encoder()
    return float(np.linalg.norm(enc.encode(a) - enc.encode(b)))


# -- the formula -----------------------------------------------------------------------------------------


def test_the_scale_c_makes_two_categories_the_median_distance_of_a_standard_normal_coordinate():
    assert C == pytest.approx(0.6744897501960817)
    x, y = np.random.default_rng(0).standard_normal((2, 400_000))
    assert math.sqrt(2) * C == pytest.approx(float(np.median(np.abs(x - y))), abs=4e-3)


def test_layout_and_values_of_each_block():
    enc = encoder()
    assert enc.dim == 1 + 4 + 1 + 1 + 2 + 3 + 2 + 2 == len(enc.column_names)
    assert enc.column_names == ("carat", "cut=Fair", "cut=Good", "cut=Ideal", "cut=Premium", "price", "has_cert",
                                "depth", "depth=null", "lab=GIA", "lab=IGI", "lab=null", "fluor", "fluor=null",
                                "seller.rating", "seller.rating=null")
    record = {"carat": 1.3, "cut": "Premium", "price": 12000, "has_cert": False, "depth": None, "lab": None,
              "fluor": None, "seller": {"rating": 5}}
    expected = [1.0, 0, 0, 0, C, 2.0, -C / math.sqrt(2), 0, math.sqrt(2) * C, 0, 0, C, 0, math.sqrt(1.5) * C, 1.0, 0]
    np.testing.assert_allclose(enc.encode(record), expected, rtol=0, atol=1e-15)
    u = enc.encode(BASE)
    assert u.dtype == np.float64 and u.shape == (enc.dim,)
    assert u[6] == pytest.approx(C / math.sqrt(2)) and u[9] == C and u[12] == pytest.approx(-C / math.sqrt(2))


def test_numeric_schema_encodes_as_the_plain_standardisation():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(50, 3))
    schema = Schema.numeric(3)
    records = [dict(zip(schema.names, row.tolist(), strict=True)) for row in x]
    stats = fit_encoding_stats(schema, records)
    np.testing.assert_allclose(Encoder(schema, stats).encode_many(records), (x - x.mean(0)) / x.std(0), atol=1e-12)


@pytest.mark.parametrize(("change", "expected"), [
    ({"cut": "Ideal"}, math.sqrt(2) * C),  # two different categories
    ({"lab": "IGI"}, math.sqrt(2) * C),
    ({"has_cert": False}, math.sqrt(2) * C),  # true against false
    ({"lab": None}, math.sqrt(2) * C),  # a null against a category
    ({"fluor": None}, math.sqrt(2) * C),  # a null against a bool
    ({"depth": None}, math.sqrt(2) * C),  # a null against a numeric field's mean
    ({"seller": {}}, math.sqrt(2) * C),  # missing = null
    ({"carat": 1.8}, 2.0),  # |Δ| / std
    ({"price": 0}, 1.0),
    ({"depth": 64.0}, 2.0),
])
def test_distance_between_records_differing_in_one_field(change, expected):
    assert dist(BASE, {**BASE, **change}) == pytest.approx(expected, rel=1e-12)


def test_a_null_is_one_more_category_of_its_field():
    values = {"fluor": [True, False, None], "lab": ["GIA", "IGI", None]}
    for name, options in values.items():
        pairs = [(a, b) for i, a in enumerate(options) for b in options[i + 1:]]
        dists = [dist({**BASE, name: a}, {**BASE, name: b}) for a, b in pairs]
        assert dists == pytest.approx([math.sqrt(2) * C] * 3), name
    null_depth = {**BASE, "depth": None}
    assert dist(null_depth, {**BASE, "depth": 64.0}) == pytest.approx(math.sqrt(2.0**2 + 2 * C**2))


def test_other_slot_for_unknown_categories():
    enc = encoder("other")
    assert enc.dim == encoder().dim + 2
    assert "cut=__other__" in enc.column_names and "lab=__other__" in enc.column_names
    assert enc.column_names.index("lab=__other__") + 1 == enc.column_names.index("lab=null")
    poor = {**BASE, "cut": "Poor"}
    assert dist(BASE, poor, enc) == pytest.approx(math.sqrt(2) * C)
    assert dist(poor, {**BASE, "cut": "Very good"}, enc) == 0.0  # every unknown value is the same slot
    assert enc.decode_many(enc.encode_many([poor]))[0]["cut"] == OTHER
    with pytest.raises(RecordError, match="unknown category 'Poor'") as info:
        encoder().encode(poor)
    assert (info.value.reason, info.value.field) == ("unknown_category", "cut")


# -- round trips -----------------------------------------------------------------------------------------


def test_decode_inverts_encode_on_a_batch():
    enc = encoder()
    records = [BASE, {**BASE, "cut": "Fair", "price": 326, "depth": None, "lab": None, "fluor": True,
                      "seller": {"rating": None}, "has_cert": False}]
    decoded = enc.decode_many(enc.encode_many(records))
    assert decoded[0] == BASE
    assert decoded[1] == {**records[1], "seller": {"rating": None}}
    flat = enc.decode_many(enc.encode_many(records), nested=False)
    assert flat[0]["seller.rating"] == 3 and "seller" not in flat[0]
    assert type(decoded[0]["price"]) is int and type(decoded[0]["has_cert"]) is bool
    assert type(decoded[0]["carat"]) is float


def test_decode_of_generated_vectors_rounds_and_takes_arg_max():
    enc = encoder()
    u = enc.encode(BASE)
    noisy = u + np.random.default_rng(2).normal(0, 0.05, size=u.shape)
    noisy[5] = (4400.7 - 4000.0) / 4000.0  # price 4400.7 → 4401
    decoded = enc.decode_many(noisy[None, :])[0]
    assert decoded["price"] == 4401
    assert [decoded[k] for k in ("cut", "has_cert", "lab", "fluor")] == [BASE[k] for k in
                                                                         ("cut", "has_cert", "lab", "fluor")]
    half = u.copy()
    half[8] = math.sqrt(2) * C / 2 + 1e-9  # indicator just past half its null value
    assert enc.decode_many(half[None, :])[0]["depth"] is None
    half[8] = math.sqrt(2) * C / 2 - 1e-9
    assert enc.decode_many(half[None, :])[0]["depth"] == pytest.approx(61.0)
    winner = u.copy()
    winner[11] = C + 0.01  # the null slot of 'lab' beats 'GIA'
    assert enc.decode_many(winner[None, :])[0]["lab"] is None


def test_decode_refuses_bad_arrays():
    enc = encoder()
    with pytest.raises(DataError, match=f"dimension {enc.dim}, got an array of shape"):
        enc.decode_many(np.zeros((2, enc.dim + 1)))
    with pytest.raises(DataError, match=f"dimension {enc.dim}"):
        enc.decode_many(np.zeros(enc.dim))
    bad = np.zeros((1, enc.dim))
    bad[0, 3] = np.nan
    with pytest.raises(DataError, match="NaN or Inf"):
        enc.decode_many(bad)
    huge = np.zeros((1, enc.dim))
    huge[0, 5] = 1e308
    with pytest.raises(DataError, match="'price': decoded values overflow"):
        enc.decode_many(huge)
    assert enc.decode_many(np.zeros((0, enc.dim))) == []


FIELD_TYPES = st.sampled_from(["float", "int", "bool", "category"])
NAMES = st.lists(st.from_regex(r"[a-z]{1,6}(\.[a-z]{1,6}){0,2}", fullmatch=True), min_size=1, max_size=6,
                 unique=True)


@st.composite
def schemas_and_records(draw):
    """A random schema (nested names, every type, nullable or not), stats for it, and records of it."""
    names = [n for n in draw(NAMES) if n]
    kept: list[str] = []
    for name in names:  # no name may be the parent object of another
        if not any(name.startswith(k + ".") or k.startswith(name + ".") for k in kept):
            kept.append(name)
    fields = []
    for name in kept:
        type_ = draw(FIELD_TYPES)
        cats = tuple(draw(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=5, unique=True)
                          .filter(lambda c: "__other__" not in c))) if type_ == "category" else ()
        fields.append(Field(name, type_, cats, draw(st.booleans())))
    schema = Schema(tuple(fields))
    numeric = {f.name: (draw(st.floats(-1e6, 1e6)), draw(st.floats(1e-3, 1e6))) for f in fields
               if f.type in ("float", "int")}
    stats = EncodingStats(numeric, draw(st.floats(0.1, 3.0)), draw(st.sampled_from(["reject", "other"])))

    def value(f: Field):
        options = {"float": st.floats(-1e9, 1e9), "int": st.integers(-10**12, 10**12), "bool": st.booleans(),
                   "category": st.sampled_from(f.categories)}[f.type]
        return draw(st.none() | options) if f.nullable else draw(options)

    records = []
    for _ in range(draw(st.integers(1, 5))):
        record: dict = {}
        for f in fields:
            *parents, leaf = f.name.split(".")
            node = record
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value(f)
        records.append(record)
    return schema, stats, records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas_and_records())
def test_encode_decode_round_trips_typed_records(case):
    schema, stats, records = case
    enc = Encoder(schema, stats)
    u = enc.encode_many(records)
    assert u.shape == (len(records), enc.dim) and u.dtype == np.float64
    decoded = enc.decode_many(u)
    for original, back in zip(records, decoded, strict=True):
        for field in schema.fields:
            want, got = lookup(original, field.name), lookup(back, field.name)
            if field.type == "float" and want is not None:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-6 * stats.numeric[field.name][1])
            else:
                assert got == want and type(got) is type(want), (field, want, got)
    np.testing.assert_array_equal(enc.encode_many(decoded)[:, _exact_columns(enc)], u[:, _exact_columns(enc)])


def _exact_columns(enc: Encoder) -> list[int]:
    """Coordinates of every field but float ones (those round trip up to rounding)."""
    floats = {f.name for f in enc.schema.fields if f.type == "float"}
    return [i for i, name in enumerate(enc.column_names) if name.split("=")[0] not in floats]


# -- bad values --------------------------------------------------------------------------------------------


def test_the_reasons_are_the_documented_fixed_set():
    assert set(REASONS) == {"wrong_type", "unknown_category", "null_not_allowed", "not_finite", "too_long",
                            "nested_too_deep", "duplicate_key"}
    with pytest.raises(ValueError, match="unknown reject reason"):
        RecordError("bad_vibes", "x")


def deep(levels: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(levels - 1):
        node = {"n": node}
    return node


@pytest.mark.parametrize(("change", "reason", "field"), [
    ({"price": True}, "wrong_type", "price"),  # a bool is not an int
    ({"has_cert": 1}, "wrong_type", "has_cert"),  # an int is not a bool
    ({"has_cert": "true"}, "wrong_type", "has_cert"),
    ({"carat": "0.3"}, "wrong_type", "carat"),
    ({"carat": False}, "wrong_type", "carat"),
    ({"price": 326.5}, "wrong_type", "price"),
    ({"cut": 3}, "wrong_type", "cut"),
    ({"carat": {"value": 1.0}}, "wrong_type", "carat"),
    ({"carat": [1.0]}, "wrong_type", "carat"),
    ({"seller": {"rating": "5"}}, "wrong_type", "seller.rating"),
    ({"cut": "Poor"}, "unknown_category", "cut"),
    ({"cut": "good"}, "unknown_category", "cut"),
    ({"cut": None}, "null_not_allowed", "cut"),
    ({"carat": None}, "null_not_allowed", "carat"),
    ({"has_cert": None}, "null_not_allowed", "has_cert"),
    ({"carat": float("nan")}, "not_finite", "carat"),
    ({"carat": float("-inf")}, "not_finite", "carat"),
    ({"depth": float("inf")}, "not_finite", "depth"),
    ({"price": float("inf")}, "not_finite", "price"),
    ({"carat": 10**400}, "not_finite", "carat"),
    ({"cut": "x" * 1025}, "too_long", "cut"),
    ({"cut": "é" * 513}, "too_long", "cut"),  # 1026 bytes in UTF-8
    ({"carat": "9" * 2000}, "too_long", "carat"),
    ({"extra": deep(8)}, "nested_too_deep", None),  # 9 levels with the record itself, even in an ignored key
    ({"extra": [[[[[[[[1]]]]]]]]}, "nested_too_deep", None),
])
def test_each_bad_value_is_refused_with_its_reason(change, reason, field):
    with pytest.raises(RecordError) as info:
        encoder().encode({**BASE, **change})
    assert (info.value.reason, info.value.field) == (reason, field)
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)
    if field:
        assert str(info.value).startswith(f"field {field!r}: ")


def test_missing_fields_are_nulls():
    record = {k: v for k, v in BASE.items() if k not in ("depth", "lab", "fluor", "seller")}
    enc = encoder()
    assert enc.decode_many(enc.encode_many([record]))[0] == {**record, "depth": None, "lab": None, "fluor": None,
                                                             "seller": {"rating": None}}
    for name in ("carat", "cut", "price", "has_cert"):
        with pytest.raises(RecordError, match=f"field '{name}': is null or missing") as info:
            enc.encode({k: v for k, v in BASE.items() if k != name})
        assert info.value.reason == "null_not_allowed"


def test_what_is_accepted():
    enc = encoder()
    u = enc.encode(BASE)
    np.testing.assert_array_equal(enc.encode({**BASE, "carat": 1}), enc.encode({**BASE, "carat": 1.0}))  # int→float
    np.testing.assert_array_equal(enc.encode({**BASE, "price": 4000.0}), u)  # an integral float for an int
    np.testing.assert_array_equal(enc.encode({**BASE, "price": np.int64(4000), "has_cert": np.bool_(True)}), u)
    np.testing.assert_array_equal(enc.encode({**BASE, "unknown": [1, 2], "note": "x" * 5000}), u)  # extra keys
    np.testing.assert_array_equal(enc.encode({**BASE, "extra": deep(7)}), u)  # 8 levels: allowed
    assert enc.encode({**BASE, "cut": "Fair"})[1] == C  # the longest string allowed is 1 KiB
    one_kib = Field("t", "category", ("é" * 512,))
    Encoder(Schema((one_kib,)), EncodingStats({})).encode({"t": "é" * 512})


def test_a_record_that_is_not_an_object():
    for bad in ([1, 2], "x", None, 3):
        with pytest.raises(RecordError, match="a record must be an object") as info:
            encoder().encode(bad)  # type: ignore[arg-type]
        assert info.value.reason == "wrong_type" and info.value.field is None


def test_encode_many_names_the_record_and_keeps_the_reason():
    with pytest.raises(RecordError, match=r"^record 3: field 'price': expected an int") as info:
        encoder().encode_many([BASE, BASE, {**BASE, "price": True}])
    assert (info.value.reason, info.value.field) == ("wrong_type", "price")
    assert encoder().encode_many([]).shape == (0, encoder().dim)


def test_check_depth_counts_objects_and_lists():
    check_depth(deep(8))
    with pytest.raises(RecordError, match="more than 8 levels"):
        check_depth(deep(9))
    check_depth({"a": [{"b": 1}]}, max_depth=3)
    with pytest.raises(RecordError, match="more than 3 levels"):
        check_depth({"a": [{"b": [1]}]}, max_depth=3)


# -- dotted names -----------------------------------------------------------------------------------------


def test_dotted_names_find_nested_and_literal_keys_the_longest_key_winning():
    assert lookup({"device": {"model": "a"}}, "device.model") == "a"
    assert lookup({"device.model": "b"}, "device.model") == "b"
    assert lookup({"device.model": "b", "device": {"model": "a"}}, "device.model") == "b"  # the literal key wins
    assert lookup({"a.b": {"c": 1}}, "a.b.c") == 1 and lookup({"a": {"b.c": 2}}, "a.b.c") == 2
    assert lookup({"a.b": {"x": 1}, "a": {"b": {"c": 3}}}, "a.b.c") == 3  # a dead end falls back to a shorter key
    assert lookup({"device": "flat"}, "device.model") is None and lookup({}, "a") is None
    enc = Encoder(Schema((Field("device.model", "category", ("a", "b")),)), EncodingStats({}))
    np.testing.assert_array_equal(enc.encode({"device.model": "b"}), enc.encode({"device": {"model": "b"}}))


# -- stats ----------------------------------------------------------------------------------------------------


def test_fit_encoding_stats():
    records = [{**BASE, "carat": 0.5, "depth": None, "seller": {"rating": 4}},
               {**BASE, "carat": 1.5, "depth": 60.0, "seller": {"rating": 4}},
               {**BASE, "carat": 1.0, "depth": 62.0, "seller": {}}]
    stats = fit_encoding_stats(SCHEMA, records)
    assert stats.numeric["carat"] == pytest.approx((1.0, math.sqrt(1 / 6)))
    assert stats.numeric["depth"] == (61.0, 1.0)  # nulls left out
    assert stats.numeric["price"] == (4000.0, 1.0)  # constant: std 1
    assert stats.numeric["seller.rating"] == (4.0, 1.0)
    assert list(stats.numeric) == ["carat", "price", "depth", "seller.rating"]
    assert (stats.category_scale, stats.unknown) == (C, "reject")
    u = Encoder(SCHEMA, stats).encode_many(records)
    assert u[:, 0].mean() == pytest.approx(0.0) and u[:, 0].std() == pytest.approx(1.0)


def test_fit_encoding_stats_refusals():
    with pytest.raises(RecordError, match="pilot record 2: field 'price'") as info:
        fit_encoding_stats(SCHEMA, [BASE, {**BASE, "price": "4000"}])
    assert info.value.reason == "wrong_type"
    with pytest.raises(RecordError, match="unknown category"):
        fit_encoding_stats(SCHEMA, [{**BASE, "cut": "Poor"}])
    assert fit_encoding_stats(SCHEMA, [{**BASE, "cut": "Poor"}], unknown="other").unknown == "other"
    with pytest.raises(DataError, match="'depth' is null in every pilot record"):
        fit_encoding_stats(SCHEMA, [{**BASE, "depth": None}])
    with pytest.raises(DataError, match="no pilot records"):
        fit_encoding_stats(SCHEMA, [])
    with pytest.raises(SpecError, match="category_scale must be a finite number > 0"):
        fit_encoding_stats(SCHEMA, [BASE], category_scale=0.0)
    with pytest.raises(SpecError, match="unknown must be one of reject, other"):
        fit_encoding_stats(SCHEMA, [BASE], unknown="drop")  # type: ignore[arg-type]


def test_stats_round_trip_as_json_exactly():
    stats = EncodingStats({"carat": (0.1 + 0.2, 1 / 3), "price": (3932.799721913237, 3989.439738146379)}, 0.7,
                          "other")
    text = stats.to_json()
    assert EncodingStats.from_json(text) == stats and EncodingStats.from_json(text).to_json() == text
    assert EncodingStats.from_json(EncodingStats({}).to_json()) == EncodingStats({})
    assert "pickle" not in text and text.isascii()


def test_kept_ranges_clip_decoded_numbers_and_round_trip():
    records = [{**BASE, "carat": 0.5, "price": 400}, {**BASE, "carat": 1.5, "price": 9000, "depth": None}]
    kept = fit_encoding_stats(SCHEMA, records, keep_ranges=True)
    assert kept.ranges == {"carat": (0.5, 1.5), "price": (400.0, 9000.0), "depth": (61.0, 61.0),
                           "seller.rating": (3.0, 3.0)}
    assert fit_encoding_stats(SCHEMA, records).ranges == {}
    assert "range" not in fit_encoding_stats(SCHEMA, records).to_json()  # old specs keep their fingerprints
    assert EncodingStats.from_json(kept.to_json()) == kept
    enc, free = Encoder(SCHEMA, kept), Encoder(SCHEMA, fit_encoding_stats(SCHEMA, records))
    u = enc.encode_many(records)
    far = u.copy()
    far[:, 0] = [-50.0, 50.0]  # carat far below and above the data
    far[:, 5] = [-50.0, 50.0]  # price too
    clipped = enc.decode_many(far)
    assert [r["carat"] for r in clipped] == [0.5, 1.5] and [r["price"] for r in clipped] == [400, 9000]
    assert [r["carat"] < 0.5 or r["carat"] > 1.5 for r in free.decode_many(far)] == [True, True]
    assert [r["carat"] for r in enc.decode_many(u)] == pytest.approx([0.5, 1.5])  # inside: unchanged


@pytest.mark.parametrize(("ranges", "message"), [
    ({"carat": (2.0, 1.0)}, "min <= max"),
    ({"carat": (0.0, math.inf)}, "finite"),
    ({"carat": (True, 2.0)}, "finite numbers"),
    ({"carat": 1.0}, "the range of 'carat'"),
    ({"cut": (0.0, 1.0)}, "for a float or int field"),
])
def test_bad_ranges_are_refused(ranges, message):
    with pytest.raises(SpecError, match=message):
        EncodingStats(STATS.numeric, ranges=ranges)


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"numeric": {}, "extra": 1}', "expected keys"),
    ('{"unknown": "other"}', "expected keys"),
    ('{"numeric": []}', "numeric must be an object"),
    ('{"numeric": {"a": [0, 1]}}', r"field 'a' must be \{\"mean\""),
    ('{"numeric": {"a": {"mean": 0}}}', "field 'a' must be"),
    ('{"numeric": {"a": {"mean": 0, "std": 0}}}', "field 'a' needs a finite mean and a finite std > 0"),
    ('{"numeric": {"a": {"mean": NaN, "std": 1}}}', "field 'a' needs a finite mean"),
    ('{"numeric": {"a": {"mean": "0", "std": 1}}}', "field 'a' needs a finite mean"),
    ('{"numeric": {"a": {"mean": true, "std": 1}}}', "field 'a' needs a finite mean"),
    ('{"numeric": {}, "category_scale": -1}', "category_scale must be"),
    ('{"numeric": {}, "category_scale": true}', "category_scale must be"),
    ('{"numeric": {}, "unknown": "ignore"}', "unknown must be one of"),
    ('{"numeric": {"a": {"mean": 0, "std": 1}}, "range": []}', "range must be an object"),
    ('{"numeric": {"a": {"mean": 0, "std": 1}}, "range": {"b": [0, 1]}}', "the range of 'b'"),
])
def test_bad_stats_json_is_refused(text, message):
    with pytest.raises(SpecError, match=message):
        EncodingStats.from_json(text)


def test_stats_must_fit_the_schema():
    with pytest.raises(SpecMismatchError, match=r"no stats for \['seller.rating'\]"):
        Encoder(SCHEMA, EncodingStats({k: v for k, v in STATS.numeric.items() if k != "seller.rating"}))
    with pytest.raises(SpecMismatchError, match=r"unknown fields \['cut'\]"):
        Encoder(SCHEMA, EncodingStats({**STATS.numeric, "cut": (0.0, 1.0)}))
    with pytest.raises(SpecError, match="needs a Schema and EncodingStats"):
        Encoder(SCHEMA, STATS.to_dict())  # type: ignore[arg-type]


# -- text cells ---------------------------------------------------------------------------------------------


def test_parse_text_record_converts_csv_cells_by_the_schema():
    row = {"carat": "0.31", "cut": "Good", "price": "335", "has_cert": "FALSE", "depth": None, "lab": "",
           "fluor": " True ", "seller.rating": "4.0", "note": "kept"}
    typed = parse_text_record(SCHEMA, row)
    assert typed == {"carat": 0.31, "cut": "Good", "price": 335, "has_cert": False, "depth": None, "lab": None,
                     "fluor": True, "seller.rating": 4, "note": "kept"}
    assert type(typed["seller.rating"]) is int
    encoder().encode(typed)
    for name, text in [("carat", "abc"), ("price", "3.5"), ("price", "1_000"), ("has_cert", "yes"),
                       ("has_cert", "1")]:
        with pytest.raises(RecordError, match=f"field '{name}': '{text}' is not a") as info:
            parse_text_record(SCHEMA, {**row, name: text})
        assert info.value.reason == "wrong_type"
    with pytest.raises(RecordError) as info:
        parse_text_record(SCHEMA, {**row, "cut": "G" * 1500})
    assert info.value.reason == "too_long"
    with pytest.raises(RecordError) as info:
        encoder().encode(parse_text_record(SCHEMA, {**row, "carat": "nan"}))
    assert info.value.reason == "not_finite"
