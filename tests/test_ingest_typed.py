"""Typed records on the streaming path, against a real Tansu broker and Redis (docs/ingest.md, "Typed records").

`create --estimate-from` a mixed-type pilot CSV (schema inferred, or `--schema`), `produce --file` records
from a CSV and a JSON Lines file (cells typed: ints as JSON ints, booleans, empty cells null), malformed
typed records of every kind beside them, and one `sketchgen ingest` subprocess: the sketch holds exactly the
valid records' encoded rows, every bad record is in the dead-letter topic once with its own reason and
counted by reason, and the worker is alive at the end. The `create` flags' consistency (``--dim``,
``--schema``, ``--estimate-from``) and the unchanged numeric specs are checked in-process.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from ingest.dead_letters import REASON_HEADER, SOURCE_HEADER
from ingest.decode import ALL_REASONS, F32_CONTENT_TYPE
from sketch_store.features import FeatureMap
from sketch_store.pilot import spec_from_pilot, typed_spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketchgen.cli import main
from sketchgen.datafiles import load_data
from sketchgen.local_stack import free_port
from sketchgen.records_files import infer_schema_from_file, read_typed_records
from tests.processes import Proc, scrape, wait_for
from tests.test_decode_typed import BAD_VALUES, GOOD, SCHEMA

CUTS = ("Fair", "Good", "Ideal")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(args: list[str]) -> tuple[int, str, str]:
    """``sketchgen.cli.main`` in-process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    return status, out.getvalue(), err.getvalue()


def one_error(status: int, err: str, expected: str) -> None:
    """Exit 2 with one line ``sketchgen: error: …`` containing ``expected``."""
    assert status == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sketchgen: error:") and expected in lines[0], err


def write_records_csv(path: Path, n: int, seed: int) -> Path:
    """A CSV of SCHEMA's records: float price, int qty (some empty), category cut, bool cert, device.model."""
    rng = np.random.default_rng(seed)
    lines = ["price,qty,cut,cert,device.model"]
    for i in range(n):
        qty = "" if i % 7 == 3 else str(int(rng.integers(0, 9)))
        model = "" if i % 5 == 1 else "ab"[int(rng.integers(2))]
        cert = "true" if rng.random() < 0.4 else "false"
        lines.append(f"{rng.normal(100, 20):.6f},{qty},{CUTS[int(rng.integers(3))]},{cert},{model}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("typed")
    write_records_csv(folder / "pilot.csv", 400, seed=0)
    write_records_csv(folder / "data.csv", 150, seed=1)
    records = read_typed_records(folder / "data.csv", infer_schema_from_file(folder / "pilot.csv"))
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:40]))
    infer_schema_from_file(folder / "pilot.csv").save(folder / "schema.json")
    numeric = np.random.default_rng(2).normal(size=(500, 3))
    np.save(folder / "numeric.npy", numeric)
    np.savetxt(folder / "numeric.csv", numeric, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    return folder


# -- create ----------------------------------------------------------------------------------------------


def test_create_from_a_mixed_pilot_csv_infers_the_schema_and_designs_a_typed_spec(work, redis_server):
    name = unique("typed-create")
    status, out, err = call(["create", name, "--estimate-from", str(work / "pilot.csv"), "--m", "64",
                             "--redis", redis_server.url])
    assert status == 0, err
    spec = SketchStore(connect(redis_server.url)).get_spec(name)
    schema = infer_schema_from_file(work / "pilot.csv")
    assert schema == SCHEMA
    expected = typed_spec_from_pilot(read_typed_records(work / "pilot.csv", schema), schema, m=64, name=name)
    assert spec.fingerprint == expected.fingerprint and spec.encoder is not None and spec.d == expected.d
    assert "typed: 5 fields" in out
    status, out, err = call(["status", name, "--json", "--redis", redis_server.url])
    assert status == 0, err
    shown = json.loads(out)["spec"]
    assert shown["fields"] == ["price", "qty", "cut", "cert", "device.model"] and shown["unknown"] == "reject"


def test_create_with_a_schema_file_a_jsonl_pilot_and_the_other_policy(work, redis_server):
    name = unique("typed-schema")
    status, _, err = call(["create", name, "--schema", str(work / "schema.json"), "--estimate-from",
                           str(work / "data.jsonl"), "--m", "32", "--dim", "12", "--unknown", "other",
                           "--redis", redis_server.url])
    assert status == 0, err
    spec = stored_spec(redis_server, name)
    assert spec.schema == SCHEMA and spec.encoding.unknown == "other" and spec.d == 12
    assert "cut=__other__" in spec.encoder.column_names


def stored_spec(redis_server, name: str):
    return SketchStore(connect(redis_server.url)).get_spec(name)


def test_a_numeric_pilot_gives_exactly_todays_spec(work, redis_server):
    today = spec_from_pilot(load_data(work / "numeric.npy"), m=64, name="n", seed=0)
    for i, (pilot, extra) in enumerate([("numeric.npy", ["--dim", "3"]), ("numeric.npy", []),
                                        ("numeric.csv", []), ("numeric.csv", ["--dim", "3"])]):
        name = unique(f"numeric-{i}")
        status, _, err = call(["create", name, "--estimate-from", str(work / pilot), "--m", "64", *extra,
                               "--redis", redis_server.url])
        assert status == 0, (pilot, extra, err)
        spec = stored_spec(redis_server, name)
        assert spec.encoder is None and spec.fingerprint == today.fingerprint, (pilot, extra)
    status, out, _ = call(["status", name, "--json", "--redis", redis_server.url])
    assert json.loads(out)["spec"]["fields"] is None


@pytest.mark.parametrize("case", ["schema without pilot", "neither dim nor pilot", "typed dim mismatch",
                                  "numeric dim mismatch", "unknown on vectors", "unknown without pilot",
                                  "pilot misfits the schema", "schema for an npy pilot"])
def test_create_refuses_inconsistent_flags_in_one_line(case, work, redis_server, tmp_path):
    bad_pilot = tmp_path / "bad.csv"
    bad_pilot.write_text("price,qty,cut,cert,device.model\n1.0,2,Poor,true,a\n")
    flags, expected = {
        "schema without pilot": (["--schema", str(work / "schema.json"), "--dim", "9"],
                                 "means and stds need a pilot file"),
        "neither dim nor pilot": ([], "--dim"),
        "typed dim mismatch": (["--estimate-from", str(work / "pilot.csv"), "--dim", "5"],
                               "the schema's encoding gives dimension 10, not --dim 5"),
        "numeric dim mismatch": (["--estimate-from", str(work / "numeric.csv"), "--dim", "2"], "dimension 3"),
        "unknown on vectors": (["--estimate-from", str(work / "numeric.npy"), "--unknown", "other"],
                               "--unknown applies to typed records"),
        "unknown without pilot": (["--dim", "2", "--unknown", "other"], "--unknown applies to typed records"),
        "pilot misfits the schema": (["--schema", str(work / "schema.json"), "--estimate-from", str(bad_pilot)],
                                     "unknown_category"),
        "schema for an npy pilot": (["--schema", str(work / "schema.json"), "--estimate-from",
                                     str(work / "numeric.npy")], "non-nullable float fields"),
    }[case]
    name = unique("typed-bad")
    one_error(*call(["create", name, *flags, "--redis", redis_server.url])[::2], expected)
    one_error(*call(["status", name, "--redis", redis_server.url])[::2], name)  # nothing was created


# -- produce ---------------------------------------------------------------------------------------------


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[bytes]:
    """The values of ``topic``'s records (reads until ``expected`` of them or ``timeout``)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                             fetch_max_wait_ms=100, consumer_timeout_ms=1000)
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            values.extend(r.value for batch in consumer.poll(timeout_ms=500).values() for r in batch)
    finally:
        consumer.close()
    return values


def test_produce_a_records_csv_sends_typed_json_objects(work, kafka_server):
    topic = unique("typed-csv")
    status, out, err = call(["produce", topic, "--file", str(work / "data.csv"), "--count", "60",
                             "--partitions", "1", "--kafka", kafka_server.bootstrap])
    assert status == 0, err
    assert json.loads(out)["rows"] == 60
    got = [json.loads(v) for v in consume(kafka_server.bootstrap, topic, 60)]
    assert got == read_typed_records(work / "data.csv", SCHEMA)[:60]
    assert {type(r["qty"]) for r in got} == {int, type(None)} and {type(r["cert"]) for r in got} == {bool}
    assert any(r["device.model"] is None for r in got) and all(isinstance(r["price"], float) for r in got)


def test_produce_types_a_csv_by_the_schema_given(work, kafka_server, tmp_path):
    (tmp_path / "codes.csv").write_text("code,cut\n1,Good\n2,Fair\n")
    (tmp_path / "codes.json").write_text(json.dumps({"fields": [
        {"name": "code", "type": "category", "categories": ["1", "2"]},
        {"name": "cut", "type": "category", "categories": ["Fair", "Good"]}]}))
    for schema, code in ((["--schema", str(tmp_path / "codes.json")], "1"), ([], 1)):
        topic = unique("typed-codes")
        status, _, err = call(["produce", topic, "--file", str(tmp_path / "codes.csv"), *schema, "--partitions", "1",
                               "--kafka", kafka_server.bootstrap])
        assert status == 0, err
        assert json.loads(consume(kafka_server.bootstrap, topic, 2)[0]) == {"code": code, "cut": "Good"}


def test_produce_a_jsonl_file_sends_its_objects(work, kafka_server):
    topic = unique("typed-jsonl")
    status, out, err = call(["produce", topic, "--file", str(work / "data.jsonl"), "--partitions", "1",
                             "--kafka", kafka_server.bootstrap])
    assert status == 0, err
    assert json.loads(out)["rows"] == 40
    expected = [json.loads(line) for line in (work / "data.jsonl").read_text().splitlines()]
    assert [json.loads(v) for v in consume(kafka_server.bootstrap, topic, 40)] == expected


@pytest.mark.parametrize("flags, expected", [
    (["--format", "f32"], "one JSON object per record"),
    (["--batch-rows", "3"], "one JSON object per record"),
])
def test_produce_refuses_vector_options_for_records(work, kafka_server, flags, expected):
    one_error(*call(["produce", unique("t"), "--file", str(work / "data.csv"), *flags,
                     "--kafka", kafka_server.bootstrap])[::2], expected)


def test_produce_refuses_a_schema_for_vectors_and_a_nan_record(work, kafka_server, tmp_path):
    one_error(*call(["produce", unique("t"), "--file", str(work / "numeric.npy"), "--schema",
                     str(work / "schema.json"), "--kafka", kafka_server.bootstrap])[::2], "float fields")
    nan = tmp_path / "nan.csv"
    nan.write_text("price,cut\n1.5,Good\nnan,Fair\n")
    one_error(*call(["produce", unique("t"), "--file", str(nan), "--kafka", kafka_server.bootstrap])[::2],
              "record 2")


# -- the whole path: create → produce --file + malformed records → ingest --------------------------------

MAX_RECORD_BYTES = 1 << 16


def extra_records() -> list[tuple[str, bytes | None, list[tuple[str, bytes]], str | None, dict | None]]:
    """(label, value, headers, expected reason or None, the record a valid one encodes as)."""
    valid = [
        ("extra keys", {**GOOD, "note": "x", "more": [1, {"a": None}]}, GOOD),
        ("missing nullable", {"price": 80.5, "cut": "Ideal", "cert": False},
         {"price": 80.5, "cut": "Ideal", "cert": False}),
        ("integral float for an int", {**GOOD, "qty": 4.0}, {**GOOD, "qty": 4}),
        ("literal dotted key", {"price": 99.0, "cut": "Fair", "cert": True, "device.model": "b", "qty": None},
         {"price": 99.0, "cut": "Fair", "cert": True, "device.model": "b", "qty": None}),
    ]
    out = [(label, json.dumps(obj).encode(), [], None, rec) for label, obj, rec in valid]
    out.append(("duplicate keys", b'{"price": "x", "price": 101.0, "cut": "Poor", "cut": "Good", '
                b'"cert": true, "qty": 1}', [], "duplicate_key", None))
    out += [(label, value, [], reason, None) for label, (value, reason) in BAD_VALUES.items()]
    f32 = [("content-type", F32_CONTENT_TYPE.encode())]
    out += [
        ("float32 vector", np.zeros(9, dtype="<f4").tobytes(), f32, "unsupported_content_type", None),
        ("text/plain", json.dumps(GOOD).encode(), [("content-type", b"text/plain")], "unsupported_content_type",
         None),
        ("plain numeric row", json.dumps([0.0] * 9).encode(), [], "bad_structure", None),
        ("far out of range", json.dumps({**GOOD, "price": 1e12}).encode(), [], "out_of_range", None),
    ]
    return out


def read_dead_letters(bootstrap: str, topic: str, expected: int, timeout: float = 90.0) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                             fetch_max_wait_ms=100, max_partition_fetch_bytes=16 << 20)
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            out.extend(r for records in batch.values() for r in records)
            if len(out) >= expected and not batch:
                break
    finally:
        consumer.close()
    return out


def test_typed_records_end_to_end(work, redis_server, kafka_server, tmp_path):
    stream, store = unique("typed-e2e"), SketchStore(connect(redis_server.url))
    topic = f"{stream}-events"
    status, _, err = call(["create", stream, "--estimate-from", str(work / "pilot.csv"), "--m", "64",
                           "--redis", redis_server.url])
    assert status == 0, err
    spec = store.get_spec(stream)
    status, _, err = call(["produce", topic, "--file", str(work / "data.csv"), "--partitions", "2",
                           "--kafka", kafka_server.bootstrap])
    assert status == 0, err
    valid = read_typed_records(work / "data.csv", spec.schema)

    extras = extra_records()
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all", max_request_size=8 << 20)
    expected_reason: dict[str, str] = {}
    try:
        for _label, value, headers, reason, record in extras:
            meta = producer.send(topic, key=b"k", value=value, headers=headers).get(timeout=30)
            if reason is None:
                valid.append(record)
            else:
                expected_reason[f"{topic}:{meta.partition}:{meta.offset}"] = reason
    finally:
        producer.close()
    by_reason = collections.Counter(expected_reason.values())
    assert set(by_reason) >= {"wrong_type", "unknown_category", "null_not_allowed", "non_finite", "too_long",
                              "nested_too_deep", "duplicate_key", "bad_structure", "invalid_json", "empty", "too_large",
                              "unsupported_content_type", "out_of_range"}

    port = free_port()
    worker = Proc(tmp_path, "worker", ["ingest", stream, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                       "--redis", redis_server.url, "--flush-ms", "200", "--metrics-port", str(port),
                                       "--max-record-bytes", str(MAX_RECORD_BYTES)])
    try:
        wait_for(lambda: worker.proc.poll() is not None or store.total_count(stream) >= len(valid), 120,
                 "the valid records to be counted")
        assert worker.proc.poll() is None, f"the worker died:\n{worker.tail()}"
        time.sleep(1.0)  # anything that would wrongly land after the last valid record
        state = store.state(stream)
        assert state.sketch.count == len(valid), worker.tail()
        expected, _ = FeatureMap(spec).feature_sum(spec.encoder.encode_many(valid))
        rel = np.linalg.norm(state.sketch.total - expected) / np.linalg.norm(expected)
        assert rel <= 1e-9, rel
        # `status` shows each numeric field's range over exactly the valid records (none of the bad widened it)
        status, out, err = call(["status", stream, "--json", "--redis", redis_server.url])
        assert status == 0, err
        typed = [spec.encoder.read_record(r) for r in valid]
        numeric = [f.name for f in spec.schema.fields if f.type in ("int", "float")]
        seen = {k: [v for t in typed if (v := t[k]) is not None] for k in numeric}
        ranges = json.loads(out)["ranges"]
        assert numeric and set(ranges) == set(numeric)
        for k, values in seen.items():
            assert ranges[k] == pytest.approx([min(values), max(values)], rel=1e-12, abs=1e-12), k

        dead = read_dead_letters(kafka_server.bootstrap, f"{topic}.dlq", len(expected_reason))
        got = {dict(dl.headers)[SOURCE_HEADER].decode(): dict(dl.headers)[REASON_HEADER].decode() for dl in dead}
        assert len(dead) == len(expected_reason), (len(dead), len(expected_reason))
        assert got == expected_reason

        wait_for(lambda: scrape(port).get(("sketchgen_ingest_records_total", (("stream", stream),))) == len(valid),
                 30, "the records metric")
        metrics = scrape(port)
        for reason in ALL_REASONS:
            key = ("sketchgen_ingest_rejected_total", (("reason", reason), ("stream", stream)))
            assert metrics.get(key) == by_reason.get(reason, 0), (reason, metrics.get(key))
        assert worker.proc.poll() is None, f"the worker died:\n{worker.tail()}"
    finally:
        assert worker.stop() == 0, worker.tail()
