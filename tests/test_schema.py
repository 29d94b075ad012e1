"""Schemas of typed records: validation, the JSON form, inference from pilot records and files, ``sketchgen schema``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from sketch_store.errors import DataError, SpecError
from sketch_store.schema import Field, Schema, SchemaError, flatten_record, infer_schema
from sketchgen.cli import main
from sketchgen.records_files import infer_schema_from_file, read_records, read_typed_records

DIAMONDS_CSV = """carat,cut,color,price,has_cert,depth
0.23,Ideal,E,326,true,61.5
0.21,Premium,E,326,FALSE,59.8
0.23,Good,E,327,True,
0.29,Premium,I,334,,62.4
0.31,Good,J,335,false,63.3
1.5,Ideal,J,18823,TRUE,60.0
"""

NESTED_JSONL = "\n".join(json.dumps(r) for r in [
    {"user": {"age": 31, "plan": "pro"}, "device": {"model": "a1", "battery": 0.8}, "active": True, "id": "u1"},
    {"user": {"age": 45, "plan": "free"}, "device": {"model": "b2", "battery": 0.35}, "active": False, "id": "u2"},
    {"user": {"age": 22, "plan": "free"}, "device": {"model": "a1"}, "active": True, "id": "u3"},
]) + "\n\n"


def diamonds_schema() -> Schema:
    return Schema((Field("carat", "float"), Field("cut", "category", ("Good", "Ideal", "Premium")),
                   Field("price", "int"), Field("has_cert", "bool", nullable=True),
                   Field("device.model", "category", ("a1", "b2"), nullable=True)))


# -- construction --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Schema(()), "at least one field"),
    (lambda: Schema((Field("a", "float"), Field("a", "int"))), "'a' is listed twice"),
    (lambda: Field("", "float"), "must not be empty"),
    (lambda: Field("   ", "float"), "must not be empty"),
    (lambda: Field(3, "float"), "must be a string"),
    (lambda: Field("a..b", "float"), "empty part"),
    (lambda: Field(".a", "float"), "empty part"),
    (lambda: Field(".".join("abcdefghi"), "float"), "nested 9 levels"),
    (lambda: Field("a", "string"), "unknown type 'string'"),
    (lambda: Field("a", "category"), "at least one category"),
    (lambda: Field("a", "category", ("x", "y", "x")), "category 'x' is listed twice"),
    (lambda: Field("a", "category", ("x", 1)), "categories must be strings"),
    (lambda: Field("a", "category", "xy"), "must be a list of strings"),
    (lambda: Field("a", "category", ("__other__",)), "reserved"),
    (lambda: Field("a", "category", ("x" * 1025,)), "over 1024 bytes"),
    (lambda: Field("a", "int", ("x",)), "only allowed on a category field, not on a int field"),
    (lambda: Field("a", "bool", nullable=1), "nullable must be true or false"),
    (lambda: Schema((Field("device", "float"), Field("device.model", "category", ("a",)))),
     "'device' is also the parent object of field 'device.model'"),
])
def test_bad_schemas_are_refused_in_one_line(make, message):
    with pytest.raises(SchemaError, match=message) as info:
        make()
    assert "\n" not in str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, SpecError)


def test_dotted_names_and_categories_as_lists_are_accepted():
    field = Field("device.model", "category", ["b", "a"])  # type: ignore[arg-type]
    assert field.categories == ("b", "a") and field.parts == ("device", "model")
    assert hash(Schema((field,))) == hash(Schema((Field("device.model", "category", ("b", "a")),)))


def test_numeric_schema():
    schema = Schema.numeric(3)
    assert schema.names == ("x0", "x1", "x2") and schema.is_numeric
    assert all(f.type == "float" and not f.nullable for f in schema.fields)
    assert not Schema((Field("x0", "float", nullable=True),)).is_numeric
    assert not Schema((Field("x0", "int"),)).is_numeric
    for d in (0, -1, True, 2.0):
        with pytest.raises(SchemaError, match="d >= 1"):
            Schema.numeric(d)  # type: ignore[arg-type]


def test_field_lookup_and_describe():
    schema = diamonds_schema()
    assert schema.field("price").type == "int"
    with pytest.raises(SchemaError, match="no field 'weight'"):
        schema.field("weight")
    assert schema.describe()[1] == "cut: category (3 values: Good, Ideal, Premium)"
    assert schema.describe()[3] == "has_cert: bool, nullable"


# -- JSON ----------------------------------------------------------------------------------------------


def test_json_form_is_exactly_the_documented_one():
    obj = json.loads(diamonds_schema().to_json())
    assert obj == {"fields": [
        {"name": "carat", "type": "float", "nullable": False},
        {"name": "cut", "type": "category", "categories": ["Good", "Ideal", "Premium"], "nullable": False},
        {"name": "price", "type": "int", "nullable": False},
        {"name": "has_cert", "type": "bool", "nullable": True},
        {"name": "device.model", "type": "category", "categories": ["a1", "b2"], "nullable": True},
    ]}
    assert list(obj["fields"][1]) == ["name", "type", "categories", "nullable"]  # stable key order


def test_json_round_trip_keeps_field_order_and_is_deterministic():
    schema = diamonds_schema()
    text = schema.to_json()
    assert Schema.from_json(text) == schema
    assert Schema.from_json(text).to_json() == text
    reordered = Schema(tuple(reversed(schema.fields)))
    assert Schema.from_json(reordered.to_json()).names == tuple(reversed(schema.names))
    assert reordered.fingerprint_bytes() != schema.fingerprint_bytes()


def test_fingerprint_bytes_are_canonical():
    schema = diamonds_schema()
    fp = schema.fingerprint_bytes()
    assert fp == Schema.from_json(schema.to_json()).fingerprint_bytes()
    assert json.loads(fp) == schema.to_dict() and b" " not in fp and b"\n" not in fp
    # the same schema written differently (categories absent vs empty, nullable defaulted, keys shuffled)
    loose = ('{"fields": [{"type": "float", "name": "a", "categories": []},'
             ' {"nullable": false, "name": "b", "type": "int"}]}')
    strict = Schema((Field("a", "float"), Field("b", "int")))
    assert Schema.from_json(loose).fingerprint_bytes() == strict.fingerprint_bytes()
    assert Schema((Field("a", "float", nullable=True), Field("b", "int"))).fingerprint_bytes() != fp
    non_ascii = Schema((Field("größe", "category", ("klein", "groß")),))
    assert Schema.from_json(non_ascii.to_json()) == non_ascii and non_ascii.fingerprint_bytes().isascii()


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"fields": [], "version": 1}', "unknown key.*'version'"),
    ("{}", "missing key 'fields'"),
    ('{"fields": {"a": 1}}', "'fields' must be a list"),
    ('{"fields": []}', "at least one field"),
    ('{"fields": [3]}', "schema field 1: must be a JSON object"),
    ('{"fields": [{"name": "a", "type": "float", "size": 4}]}', r"schema field 1 \('a'\): unknown key.*'size'"),
    ('{"fields": [{"name": "a"}]}', r"field 1 \('a'\): missing key 'type'"),
    ('{"fields": [{"type": "int"}]}', "field 1: missing key 'name'"),
    ('{"fields": [{"name": 7, "type": "int"}]}', "'name' must be a string"),
    ('{"fields": [{"name": "a", "type": "float"}, {"name": "b", "type": ["int"]}]}',
     r"field 2 \('b'\): 'type' must be a string"),
    ('{"fields": [{"name": "a", "type": "int", "nullable": "yes"}]}', r"\('a'\): 'nullable' must be true or false"),
    ('{"fields": [{"name": "a", "type": "int", "nullable": 1}]}', "'nullable' must be true or false"),
    ('{"fields": [{"name": "c", "type": "category", "categories": "xy"}]}', r"\('c'\): 'categories' must be a list"),
    ('{"fields": [{"name": "c", "type": "category", "categories": [1]}]}', r"\('c'\).*categories must be strings"),
    ('{"fields": [{"name": "c", "type": "category"}]}', r"\('c'\).*at least one category"),
    ('{"fields": [{"name": "a", "type": "double"}]}', r"\('a'\).*unknown type 'double'"),
    ('{"fields": [{"name": "p", "type": "int", "categories": ["x"]}]}', r"\('p'\).*only allowed on a category"),
])
def test_malformed_json_is_refused_naming_the_field(text, message):
    with pytest.raises(DataError, match=message) as info:
        Schema.from_json(text)
    assert "\n" not in str(info.value)


def test_save_and_load(tmp_path):
    path = tmp_path / "schema.json"
    diamonds_schema().save(path)
    assert Schema.load(path) == diamonds_schema()
    path.write_text('{"fields": [{"name": "a", "type": "int", "nullable": 0}]}')
    with pytest.raises(DataError, match=r"schema.json: .*'nullable' must be true or false"):
        Schema.load(path)
    with pytest.raises(DataError, match="no such file"):
        Schema.load(tmp_path / "missing.json")


# -- inference -----------------------------------------------------------------------------------------


def test_infer_from_typed_records():
    records = [
        {"carat": 0.23, "cut": "Ideal", "price": 326, "has_cert": True, "ratio": 1},
        {"carat": 1, "cut": "Good", "price": 18823, "has_cert": False, "ratio": 1.5},
        {"carat": 0.5, "cut": "Fair", "price": 2000, "has_cert": None, "ratio": 2, "note": None, "x": 3.0},
    ]
    with pytest.raises(DataError, match="'note' is null or missing in every pilot record"):
        infer_schema(records)
    schema = infer_schema([{k: v for k, v in r.items() if k != "note"} for r in records])
    assert schema == Schema((
        Field("carat", "float"), Field("cut", "category", ("Fair", "Good", "Ideal")), Field("price", "int"),
        Field("has_cert", "bool", nullable=True), Field("ratio", "float"), Field("x", "float", nullable=True),
    ))


def test_booleans_are_not_integers_when_inferring():
    assert infer_schema([{"a": True}, {"a": False}]).fields[0].type == "bool"
    assert infer_schema([{"a": 1}, {"a": 0}]).fields[0].type == "int"
    with pytest.raises(DataError, match="column 'a' mixes bool and int"):
        infer_schema([{"a": True}, {"a": 1}])
    with pytest.raises(DataError, match="column 'a' mixes int and str"):
        infer_schema([{"a": "x"}, {"a": 1}])


def test_nested_records_flatten_to_dotted_names():
    assert flatten_record({"a": {"b": {"c": 1}, "d": 2}, "e": 3, "f": {}}) == {"a.b.c": 1, "a.d": 2, "e": 3}
    schema = infer_schema([{"device": {"model": "a1", "os": {"version": 14}}}, {"device": {"model": "b2"}}])
    assert schema == Schema((Field("device.model", "category", ("a1", "b2")),
                             Field("device.os.version", "int", nullable=True)))
    deep: dict = {"v": 1}
    for _ in range(8):
        deep = {"n": deep}
    with pytest.raises(DataError, match="pilot record 2: record is nested more than 8 levels"):
        infer_schema([{"a": 1}, deep])


def test_free_text_and_identifiers_are_refused_with_advice():
    ids = [{"id": f"user-{i}", "age": i} for i in range(60)]
    with pytest.raises(DataError, match=r"'id' has 60 distinct strings .*more than 50.*free text or an identifier"
                                        r".*drop it, edit the schema"):
        infer_schema(ids)
    assert infer_schema(ids, max_categories=60).fields[0].categories[:2] == ("user-0", "user-1")
    with pytest.raises(DataError, match=r"over 1024 bytes.*free text"):
        infer_schema([{"review": "x" * 2000}])
    with pytest.raises(DataError, match="max_categories must be an integer >= 1"):
        infer_schema(ids, max_categories=0)


def test_other_inference_failures():
    with pytest.raises(DataError, match="no pilot records"):
        infer_schema([])
    with pytest.raises(DataError, match="pilot record 2 is a list, not an object"):
        infer_schema([{"a": 1}, [1]])  # type: ignore[list-item]
    with pytest.raises(DataError, match="column 'tags': a list is not a value"):
        infer_schema([{"tags": ["a", "b"]}])
    with pytest.raises(DataError, match=r"'device' is also the parent object of field 'device.model'"):
        infer_schema([{"device": "x"}, {"device": {"model": "a"}}])


def test_categories_are_sorted_whatever_the_order_of_the_records():
    rows = [{"c": v} for v in ("b", "a", "c", "a")]
    assert infer_schema(rows).fields[0].categories == ("a", "b", "c")
    assert infer_schema(reversed(rows)).fields[0].categories == ("a", "b", "c")


# -- files ---------------------------------------------------------------------------------------------


def test_diamonds_csv(tmp_path):
    path = tmp_path / "diamonds.csv"
    path.write_text(DIAMONDS_CSV)
    records = read_records(path)
    assert len(records) == 6 and records[2]["depth"] is None and records[3]["has_cert"] is None
    assert records[0] == {"carat": "0.23", "cut": "Ideal", "color": "E", "price": "326", "has_cert": "true",
                          "depth": "61.5"}
    schema = infer_schema_from_file(path)
    assert schema == Schema((
        Field("carat", "float"), Field("cut", "category", ("Good", "Ideal", "Premium")),
        Field("color", "category", ("E", "I", "J")), Field("price", "int"), Field("has_cert", "bool", nullable=True),
        Field("depth", "float", nullable=True),
    ))
    typed = read_typed_records(path, schema)
    assert typed[1] == {"carat": 0.21, "cut": "Premium", "color": "E", "price": 326, "has_cert": False, "depth": 59.8}
    assert typed[3]["has_cert"] is None and typed[5]["has_cert"] is True
    assert infer_schema_from_file(path, limit=2).field("has_cert").nullable is False


def test_csv_text_that_is_not_all_numbers_is_a_category(tmp_path):
    path = tmp_path / "sizes.csv"
    path.write_text("size,flag\n1,true\n2,no\nlarge,false\n")
    schema = infer_schema_from_file(path)
    assert schema.fields == (Field("size", "category", ("1", "2", "large")), Field("flag", "category",
                                                                                   ("false", "no", "true")))


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty CSV, expected a header row"),
    ("1.0,2.0\n3.0,4.0\n", "first row holds numbers, not column names"),
    ("a,,c\n1,2,3\n", "empty column name"),
    ("a,b,a\n1,2,3\n", "column 'a' appears twice"),
    ("a,b\n1,2\n3\n", "line 3: 1 cells, the header has 2"),
    ("a,b\n1,2\n3,4,5\n", "line 3: 3 cells"),
])
def test_bad_csv_files(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_nested_jsonl(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text(NESTED_JSONL)
    assert len(read_records(path)) == 3  # the blank line is skipped
    with pytest.raises(DataError, match="'id' has 3 distinct strings"):
        infer_schema_from_file(path, max_categories=2)
    schema = infer_schema_from_file(path, max_categories=3)
    assert schema.fields == (
        Field("user.age", "int"), Field("user.plan", "category", ("free", "pro")),
        Field("device.model", "category", ("a1", "b2")), Field("device.battery", "float", nullable=True),
        Field("active", "bool"), Field("id", "category", ("u1", "u2", "u3")),
    )
    assert read_typed_records(path, schema)[0]["user"] == {"age": 31, "plan": "pro"}


def test_a_column_null_everywhere_in_a_file_is_refused(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text('{"a": 1, "b": null}\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"users.jsonl: column 'b' is null or missing in every pilot record"):
        infer_schema_from_file(path)


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1}\n[1, 2]\n', "line 2: expected a JSON object, got list"),
    ('{"a": 1}\n\n"x"\n', "line 3: expected a JSON object, got str"),
    ('{"a": 1}\n{"a": \n', "line 2: not valid JSON"),
    ('{"a": 1}\n{"a": 1, "b": {"c": 2, "c": 3}}\n', "line 2: key 'c' appears more than once"),
])
def test_bad_jsonl_lines_are_refused_with_their_number(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_npy_gives_a_numeric_schema_and_other_suffixes_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 3)))
    np.save(tmp_path / "v.npy", np.zeros(5))
    assert infer_schema_from_file(tmp_path / "x.npy") == Schema.numeric(3)
    assert infer_schema_from_file(tmp_path / "v.npy") == Schema.numeric(1)
    np.save(tmp_path / "t.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="expected an N×d array"):
        infer_schema_from_file(tmp_path / "t.npy")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"unsupported record format .parquet"):
        infer_schema_from_file(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes("name\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_records(tmp_path / "latin1.csv")


# -- the command ---------------------------------------------------------------------------------------


def test_schema_command_on_csv(tmp_path, caplog):
    data, out = tmp_path / "diamonds.csv", tmp_path / "schema.json"
    data.write_text(DIAMONDS_CSV)
    out.write_text("old")  # overwritten, as other commands' --out
    with caplog.at_level(logging.INFO, logger="sketchgen"):
        assert main(["schema", str(data), "--out", str(out)]) == 0
    assert Schema.load(out) == infer_schema_from_file(data)
    assert "has_cert: bool, nullable" in caplog.text and f"6 field(s) from {data} -> {out}" in caplog.text


def test_schema_command_on_jsonl_and_its_errors(tmp_path, capsys):
    data, out = tmp_path / "users.jsonl", tmp_path / "schema.json"
    data.write_text(NESTED_JSONL)
    assert main(["schema", str(data), "--out", str(out)]) == 0
    assert Schema.load(out).field("device.battery").nullable
    assert main(["schema", str(data), "--out", str(out), "--max-categories", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sketchgen: error: ") and "'id' has 3 distinct strings" in err and err.count("\n") == 1
    assert main(["schema", str(data), "--out", str(out), "--max-categories", "0"]) == 2
    assert "--max-categories must be >= 1" in capsys.readouterr().err
    assert main(["schema", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert Schema.load(out).field("device.battery").nullable  # a failed run leaves the old file alone
