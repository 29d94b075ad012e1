"""Typed records offline, end to end: ``schema`` → ``sketch --schema`` → ``fit`` → ``sample`` to .csv and .jsonl.

The data are a diamonds-like table: carat (lognormal float), cut (5 categories of unequal shares), price (an
int that grows with carat), certified (bool) and depth (float, 20 % null). One 20 s fit at m = 300 is shared by
the module; everything runs in-process through ``sketchgen.cli.main``.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from learner.checkpoint import Checkpoint, load_model_dir
from sketch_store.errors import CheckpointError
from sketch_store.pilot import spec_from_pilot
from sketch_store.schema import Schema
from sketch_store.sketch import load_sketch
from sketch_store.spec import SketchSpec
from sketchgen.cli import main
from sketchgen.datafiles import load_data

N_ROWS = 3000
CUTS = ("Fair", "Good", "Very Good", "Premium", "Ideal")
CUT_SHARES = (0.05, 0.10, 0.20, 0.25, 0.40)
NULL_RATE = 0.2
FIT_SECONDS = "20"
M = "300"
#: Largest absolute gap allowed between a category's (or the null's, or true's) share in the samples and in the
#: data. Measured on these 3000 rows after 20 s at m = 300 with fit seeds 0-3: the largest cut gap 0.074, 0.048,
#: 0.082, 0.040 (the small cuts Good and Fair are under-drawn), null-rate gaps 0.012-0.023, certified 0.002-0.04.
#: A decoder that ignored the generator (uniform cuts: 0.2 vs 0.4 for Ideal), a null indicator read the wrong
#: way round (0.8 vs 0.2) or a collapsed category block (one cut everywhere) is off by 0.15 or more.
TOLERANCE = 0.12


def make_diamonds(n: int = N_ROWS, seed: int = 0) -> list[dict[str, object]]:
    """Typed records of the diamonds-like table (depth None for the nulls)."""
    rng = np.random.default_rng(seed)
    carat = np.exp(rng.normal(-0.4, 0.5, n))
    cut = rng.choice(CUTS, size=n, p=CUT_SHARES)
    price = np.round(4000 * carat**1.6 * np.exp(rng.normal(0, 0.15, n))).astype(int)
    certified = rng.random(n) < 0.6
    depth = np.round(rng.normal(61.7, 1.4, n), 1)
    null = rng.random(n) < NULL_RATE
    return [{"carat": round(float(carat[i]), 3), "cut": str(cut[i]), "price": int(price[i]),
             "certified": bool(certified[i]), "depth": None if null[i] else float(depth[i])} for i in range(n)]


def write_csv(path, records: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(records[0])
        for r in records:
            writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in r.values()])


def run(*args: str) -> int:
    return main(["-q", *args])


def read_csv(path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(autouse=True)
def no_default_redis(monkeypatch):
    """`sample NAME` may look for a stream in Redis: never let it reach a server these tests did not start."""
    monkeypatch.setenv("SKETCHGEN_REDIS", "redis://127.0.0.1:1/0")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """schema → sketch --schema → fit 20 s → sample 2000 to .csv and .jsonl, once for the module."""
    work = tmp_path_factory.mktemp("typed")
    records = make_diamonds()
    write_csv(work / "diamonds.csv", records)
    assert run("schema", str(work / "diamonds.csv"), "--out", str(work / "schema.json")) == 0
    assert run("sketch", str(work / "diamonds.csv"), "--schema", str(work / "schema.json"), "--out",
               str(work / "d.npz"), "--m", M) == 0
    assert run("fit", str(work / "d.npz"), "--out", str(work / "model"), "--seconds", FIT_SECONDS) == 0
    for suffix in ("csv", "jsonl"):
        assert run("sample", str(work / "model"), "-n", "2000", "--out", str(work / f"s.{suffix}"), "--seed", "0") == 0
    return work, records


def shares(values: list[object], labels) -> dict[object, float]:
    return {label: sum(v == label for v in values) / len(values) for label in labels}


# -- the happy path ---------------------------------------------------------------------------------------


def test_schema_command_infers_the_table(pipeline):
    work, _ = pipeline
    schema = Schema.load(work / "schema.json")
    assert [(f.name, f.type, f.nullable) for f in schema.fields] == [
        ("carat", "float", False), ("cut", "category", False), ("price", "int", False),
        ("certified", "bool", False), ("depth", "float", True)]
    assert set(schema.field("cut").categories) == set(CUTS)


def test_sketch_file_and_model_carry_the_typed_spec(pipeline):
    work, _ = pipeline
    schema = Schema.load(work / "schema.json")
    spec, sketch = load_sketch(work / "d.npz")
    assert spec.schema == schema and sketch.count == N_ROWS
    assert spec.d == spec.encoder.dim == 1 + 5 + 1 + 1 + 2 and spec.m == int(M)
    assert np.all(spec.mean == 0) and np.all(spec.std == 1)
    ckpt = load_model_dir(work / "model")
    assert ckpt.fingerprint == spec.fingerprint
    assert ckpt.encoder.schema == schema and ckpt.encoder.stats == spec.encoding


def test_checkpoint_with_an_encoding_of_the_wrong_width_is_refused(pipeline):
    work, _ = pipeline
    ckpt = load_model_dir(work / "model")
    typed = dict(ckpt.meta["typed"])
    typed["schema"] = {"fields": [f for f in typed["schema"]["fields"] if f["name"] != "certified"]}
    with pytest.raises(CheckpointError, match="encoding has dimension 9, the generator outputs 10"):
        Checkpoint({**ckpt.meta, "typed": typed}, ckpt.tensors)
    with pytest.raises(CheckpointError, match="'typed' is invalid"):
        Checkpoint({**ckpt.meta, "typed": {"schema": {"fields": []}, "encoding": typed["encoding"]}}, ckpt.tensors)


def test_sampled_csv_has_the_schemas_columns_and_types(pipeline):
    work, _ = pipeline
    header, rows = read_csv(work / "s.csv")
    assert header == ["carat", "cut", "price", "certified", "depth"]
    assert len(rows) == 2000
    assert all(re.fullmatch(r"-?[0-9]+", r["price"]) for r in rows)
    assert {r["cut"] for r in rows} <= set(CUTS)
    assert {r["certified"] for r in rows} <= {"true", "false"}
    assert all(float(r["carat"]) == float(r["carat"]) for r in rows)
    assert all(r[name] != "" for r in rows for name in ("carat", "cut", "price", "certified"))


def test_sampled_jsonl_has_typed_values(pipeline):
    work, _ = pipeline
    records = [json.loads(line) for line in (work / "s.jsonl").read_text().splitlines()]
    assert len(records) == 2000
    assert all(list(r) == ["carat", "cut", "price", "certified", "depth"] for r in records)
    assert all(type(r["price"]) is int and type(r["certified"]) is bool and type(r["carat"]) is float for r in records)
    assert all(r["cut"] in CUTS for r in records)
    assert all(r["depth"] is None or type(r["depth"]) is float for r in records)


def test_sampled_shares_and_null_rate_match_the_data(pipeline):
    work, data = pipeline
    samples = [json.loads(line) for line in (work / "s.jsonl").read_text().splitlines()]
    want, got = shares([r["cut"] for r in data], CUTS), shares([r["cut"] for r in samples], CUTS)
    for cut in CUTS:
        assert abs(got[cut] - want[cut]) <= TOLERANCE, (cut, got, want)
    data_null = np.mean([r["depth"] is None for r in data])
    sample_null = np.mean([r["depth"] is None for r in samples])
    assert abs(sample_null - data_null) <= TOLERANCE, (sample_null, data_null)
    data_cert = np.mean([r["certified"] for r in data])
    assert abs(np.mean([r["certified"] for r in samples]) - data_cert) <= TOLERANCE
    # the numbers: carat's median within 20 %, and price still rises with carat
    assert np.median([r["carat"] for r in samples]) == pytest.approx(np.median([r["carat"] for r in data]), rel=0.2)
    assert np.corrcoef([r["carat"] for r in samples], [r["price"] for r in samples])[0, 1] > 0.7


def test_sampled_numbers_stay_in_the_data_range_unless_no_clip(pipeline):
    work, data = pipeline
    samples = [json.loads(line) for line in (work / "s.jsonl").read_text().splitlines()]
    for name in ("carat", "price", "depth"):
        values = [r[name] for r in data if r[name] is not None]
        got = [r[name] for r in samples if r[name] is not None]
        assert min(values) <= min(got) and max(got) <= max(values), name
    clipped, _ = load_sketch(work / "d.npz")
    assert set(clipped.encoding.ranges) == {"carat", "price", "depth"}
    assert run("sketch", str(work / "diamonds.csv"), "--schema", str(work / "schema.json"), "--out",
               str(work / "free.npz"), "--m", M, "--no-clip") == 0
    free = SketchSpec.from_arrays(np.load(work / "free.npz"))
    assert free.encoding.ranges == {}
    assert free.fingerprint != clipped.fingerprint


def test_sample_to_stdout_is_csv_records(pipeline, capsys):
    work, _ = pipeline
    capsys.readouterr()
    assert run("sample", str(work / "model"), "-n", "5", "--out", "-", "--seed", "1") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "carat,cut,price,certified,depth" and len(lines) == 6


# -- numeric CSVs keep today's spec -----------------------------------------------------------------


def test_numeric_csv_gives_todays_spec_with_or_without_header_or_schema(tmp_path):
    x = np.random.default_rng(5).normal(loc=[1.0, -2.0, 0.5], scale=[1.0, 3.0, 0.2], size=(1500, 3))
    np.savetxt(tmp_path / "head.csv", x, delimiter=",", header="a,b,c", comments="", fmt="%.6f")
    np.savetxt(tmp_path / "bare.csv", x, delimiter=",", fmt="%.6f")
    expected = spec_from_pilot(load_data(tmp_path / "bare.csv"), m=int(M), seed=0).fingerprint
    assert run("schema", str(tmp_path / "head.csv"), "--out", str(tmp_path / "schema.json")) == 0
    assert Schema.load(tmp_path / "schema.json").is_numeric
    runs = {"head": ["head.csv"], "bare": ["bare.csv"], "schema": ["head.csv", "--schema", "schema.json"]}
    for out, args in runs.items():
        assert run("sketch", *[str(tmp_path / a) if a.endswith((".csv", ".json")) else a for a in args],
                   "--out", str(tmp_path / f"{out}.npz"), "--m", M) == 0
        spec, _ = load_sketch(tmp_path / f"{out}.npz")
        assert spec.schema is None and spec.fingerprint == expected, out


def test_numeric_model_still_samples_npy(tmp_path):
    x = np.random.default_rng(6).normal(size=(400, 2))
    np.savetxt(tmp_path / "xy.csv", x, delimiter=",", header="x,y", comments="", fmt="%.6f")
    assert run("sketch", str(tmp_path / "xy.csv"), "--out", str(tmp_path / "xy.npz"), "--m", "64") == 0
    assert run("fit", str(tmp_path / "xy.npz"), "--out", str(tmp_path / "m"), "--steps", "3", "--hidden", "8") == 0
    assert run("sample", str(tmp_path / "m"), "-n", "7", "--out", str(tmp_path / "s.npy")) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)


# -- JSON Lines with nested objects -------------------------------------------------------------------


def test_jsonl_records_with_nested_objects_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    lines = []
    for i in range(600):
        stone = {"carat": round(float(np.exp(rng.normal(-0.4, 0.5))), 3), "cut": str(rng.choice(["Good", "Ideal"]))}
        lines.append(json.dumps({"stone": stone, "sold": bool(i % 3), "id": i}))
    (tmp_path / "gems.jsonl").write_text("\n".join(lines) + "\n")
    assert run("sketch", str(tmp_path / "gems.jsonl"), "--out", str(tmp_path / "g.npz"), "--m", "64") == 0
    spec, _ = load_sketch(tmp_path / "g.npz")
    assert spec.schema.names == ("stone.carat", "stone.cut", "sold", "id")
    assert run("fit", str(tmp_path / "g.npz"), "--out", str(tmp_path / "m"), "--steps", "5", "--hidden", "8") == 0
    assert run("sample", str(tmp_path / "m"), "-n", "20", "--out", str(tmp_path / "s.jsonl")) == 0
    out = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(out) == 20 and all(set(r) == {"stone", "sold", "id"} and set(r["stone"]) == {"carat", "cut"}
                                  for r in out)
    assert all(r["stone"]["cut"] in ("Good", "Ideal") and type(r["id"]) is int for r in out)
    assert run("sample", str(tmp_path / "m"), "-n", "3", "--out", str(tmp_path / "s.csv")) == 0
    assert read_csv(tmp_path / "s.csv")[0] == ["stone.carat", "stone.cut", "sold", "id"]


# -- failures: exit 2, one clear line, nothing written --------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small diamonds CSV, its schema, and bad variants of both."""
    work = tmp_path_factory.mktemp("typed_bad")
    records = make_diamonds(200, seed=1)
    write_csv(work / "d.csv", records)
    assert run("schema", str(work / "d.csv"), "--out", str(work / "schema.json")) == 0
    schema = json.loads((work / "schema.json").read_text())
    schema["fields"].append({"name": "color", "type": "category", "categories": ["D", "E"], "nullable": False})
    (work / "extra_field.json").write_text(json.dumps(schema))
    (work / "bad.json").write_text('{"fields": [{"name": "carat", "type": "float"},')
    (work / "typo.json").write_text('{"fields": [{"name": "carat", "type": "floaat"}]}')
    poor = [dict(r) for r in records]
    poor[9]["cut"], poor[30]["cut"] = "Poor", "Poor"
    write_csv(work / "poor.csv", poor)
    (work / "poor.jsonl").write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 3 else "")
                                             for i, r in enumerate(poor)))
    np.save(work / "vectors.npy", np.ones((10, 3)))
    trained = tmp_path_factory.mktemp("typed_model")
    assert run("sketch", str(work / "d.csv"), "--out", str(trained / "d.npz"), "--m", "32") == 0
    assert run("fit", str(trained / "d.npz"), "--out", str(trained / "model"), "--steps", "2", "--hidden", "8") == 0
    return work, trained


FAILURES: dict[str, tuple[list[str], str]] = {
    "schema with a column the data lack": (
        ["sketch", "d.csv", "--schema", "extra_field.json", "--out", "x.npz"],
        "schema field(s) 'color' are absent or null in every record (its columns: carat, cut, price, certified, "
        "depth): the schema does not fit the data"),
    "schema that is not JSON": (["sketch", "d.csv", "--schema", "bad.json", "--out", "x.npz"],
                                "bad.json: schema: not valid JSON"),
    "schema with an unknown type": (["sketch", "d.csv", "--schema", "typo.json", "--out", "x.npz"],
                                    "unknown type 'floaat'"),
    "missing schema file": (["sketch", "d.csv", "--schema", "nothing.json", "--out", "x.npz"], "no such file"),
    "unknown category in a csv": (
        ["sketch", "poor.csv", "--schema", "schema.json", "--out", "x.npz"],
        "poor.csv: 2 of 200 records do not fit the schema, nothing sketched; first at line 11 (unknown_category): "
        "field 'cut': unknown category 'Poor'"),
    "unknown category in a jsonl": (
        ["sketch", "poor.jsonl", "--schema", "schema.json", "--out", "x.npz"],
        "2 of 200 records do not fit the schema, nothing sketched; first at line 11 (unknown_category)"),
    "typed records without standardisation": (["sketch", "d.csv", "--no-standardize", "--out", "x.npz"],
                                              "--no-standardize applies to numeric data only"),
    "typed schema for an npy": (["sketch", "vectors.npy", "--schema", "schema.json", "--out", "x.npz"],
                                "a .npy file holds 3-dimensional vectors"),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_failures_are_one_clear_line(small, name, capsys, monkeypatch):
    work, _ = small
    monkeypatch.chdir(work)
    args, expected = FAILURES[name]
    capsys.readouterr()
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sketchgen: error:"), lines
    assert expected in lines[0], lines[0]
    assert not (work / "x.npz").exists()


@pytest.mark.parametrize("suffix", ["npy", "txt"])
def test_sample_of_a_typed_model_refuses_other_formats(small, suffix, capsys):
    _, trained = small
    capsys.readouterr()
    assert main(["sample", str(trained / "model"), "-n", "5", "--out", str(trained / f"s.{suffix}")]) == 2
    err = capsys.readouterr().err
    assert f"a model of typed records writes records: use .csv or .jsonl (or - for CSV on standard output), " \
           f"not .{suffix}" in err
    assert not (trained / f"s.{suffix}").exists()


def test_typed_spec_loads_with_pickles_disabled(small):
    _, trained = small
    with np.load(trained / "d.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert SketchSpec.from_arrays(arrays).schema is not None
