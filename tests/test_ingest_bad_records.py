"""Malformed records against a real `sketchgen ingest` worker, Tansu (Kafka) and Redis.

Acceptance criterion: malformed records — fuzzed with hypothesis, plus invalid JSON, wrong
dimension, NaN/Inf, empty, a 10 MB blob — never crash a worker, never touch the sketch, all
reach the dead-letter topic with a reason, and are counted by reason.

:func:`test_malformed_records_are_dead_lettered_and_counted` produces one mix of valid and
bad records to a two-partition topic and checks, against the one worker process folding it:
the process survives and exits 0 on SIGTERM; the sketch holds exactly the valid rows (count
and sum); every bad record reaches ``TOPIC.dlq`` once, with the reason
:func:`ingest.decode.decode_value` gives (the worker uses the same function) in its header;
and the Prometheus counters match per reason.

:func:`test_poison_record` covers inputs that currently defeat the worker (library bugs, kept
visible as strict xfails): each runs its own worker on its own one-partition topic holding
``[valid, poison, valid]``.
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer

from ingest.dead_letters import DETAIL_HEADER, REASON_HEADER
from ingest.decode import F32_CONTENT_TYPE, MAX_VALUE_BYTES, REASONS, RecordError, check_range, decode_value
from sketch_store.errors import SpecError
from sketch_store.features import FeatureMap
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import free_port
from sketchgen.produce import ensure_topic
from tests.processes import SampleKey, scrape

pytestmark = pytest.mark.slow

D = 2
PARTITIONS = 2
F32 = [("content-type", F32_CONTENT_TYPE.encode())]
SOURCE_HEADER = "sketchgen-source"
BLOB_BYTES = 10 * 1024 * 1024  # "a 10 MB blob"; Tansu 0.6 takes it (measured up to 15 MiB)
# Fuzzed numbers stay within this magnitude (beyond 1e6 stds the worker rejects rows as out_of_range).
SAFE_MAGNITUDE = 1e6


# ---------------------------------------------------------------------------------------------
# The records
# ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One produced record, what decode_value makes of it, and where it landed."""

    label: str
    value: bytes | None
    headers: list[tuple[str, bytes]]
    rows: np.ndarray | None = None  # decoded rows of a valid record
    reason: str | None = None  # RecordError.reason of a bad one
    key: bytes | None = None
    partition: int = -1
    offset: int = -1


def classify(label: str, value: bytes | None, headers: list[tuple[str, bytes]]) -> Record:
    """A record classified as the worker does: its decoder (D, default size limit), then its range check."""
    try:
        rows = decode_value(value, headers, D)
        if not np.all(check_range(rows, np.zeros(D), np.ones(D))):
            raise RecordError("out_of_range", "far from the data")
    except RecordError as exc:
        return Record(label, value, headers, reason=exc.reason)
    except Exception as exc:  # the decoder must only ever raise RecordError
        raise AssertionError(f"decode_value crashed on {label} {value[:80]!r}: {exc!r}") from exc
    return Record(label, value, headers, rows=rows)


def draw(strategy: st.SearchStrategy, n: int) -> list:
    """Up to ``n`` deterministic examples of ``strategy`` (derandomized hypothesis run, no database)."""
    out: list = []

    @settings(
        max_examples=n, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example):
        out.append(example)

    collect()
    return out[:n]


CONTENT_TYPES = ["", "application/json", "text/json", F32_CONTENT_TYPE, "APPLICATION/X-FLOAT32; v=1", "text/csv"]
_scalars = (
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(-SAFE_MAGNITUDE, SAFE_MAGNITUDE)
    | st.sampled_from([math.nan, math.inf, -math.inf]) | st.text(max_size=4)
)
_json_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["x", "y", ""]), kids, max_size=2),
    max_leaves=8,
)
_near_rows = st.lists(st.floats(-SAFE_MAGNITUDE, SAFE_MAGNITUDE) | st.sampled_from([math.nan, math.inf]), max_size=4)


def fuzz_values() -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """~270 fuzzed values: hypothesis (bytes, text, JSON trees) and mutations of valid JSON rows."""
    out = []
    for i, (raw, ctype) in enumerate(draw(st.tuples(st.binary(max_size=48), st.sampled_from(CONTENT_TYPES)), 90)):
        out.append((f"hypothesis binary #{i} ({ctype or 'no content-type'})", raw,
                    [("content-type", ctype.encode())] if ctype else []))
    for i, text in enumerate(draw(st.text(max_size=40), 40)):
        out.append((f"hypothesis text #{i}", text.encode("utf-8", "surrogatepass"), []))
    for i, obj in enumerate(draw(_json_values, 50)):
        out.append((f"hypothesis JSON #{i}", json.dumps(obj).encode(), []))
    for i, obj in enumerate(draw(_near_rows | st.fixed_dictionaries({"x": _near_rows}), 30)):
        out.append((f"hypothesis near-row #{i}", json.dumps(obj).encode(), []))

    rng = random.Random(1234)
    alphabet = b'[]{},.-+eE" :aNx0123456789\x00\xff'
    for i in range(60):
        row = [round(rng.gauss(0, 1), rng.randint(0, 17)) for _ in range(rng.choice([1, 2, 2, 2, 3]))]
        base = bytearray(json.dumps(rng.choice([row, [row, row], {"x": row}])).encode())
        pos = rng.randrange(len(base))
        op = rng.choice(["truncate", "insert", "swap", "delete", "replace"])
        if op == "truncate":
            del base[pos:]
        elif op == "insert":
            base.insert(pos, rng.choice(alphabet))
        elif op == "swap" and pos + 1 < len(base):
            base[pos], base[pos + 1] = base[pos + 1], base[pos]
        elif op == "delete":
            del base[pos]
        else:
            base[pos] = rng.choice(alphabet)
        out.append((f"mutated JSON #{i} ({op})", bytes(base), []))
    return out


def f32(rows: list[list[float]]) -> bytes:
    return np.asarray(rows, dtype="<f4").tobytes()


# Hand-written bad records and the reason expected by hand (cross-checked against decode_value).
HAND_BAD: list[tuple[str, bytes | None, list[tuple[str, bytes]], str]] = [
    ("huge finite JSON", b"[1e300, 1e300]", [], "out_of_range"),
    ("huge finite f32", np.array([[1e30, 0.0]], dtype="<f4").tobytes(), F32, "out_of_range"),
    ("truncated JSON", b"[1, 2", [], "invalid_json"),
    ("not JSON", b"hello, world", [], "invalid_json"),
    ("invalid UTF-8", b"\xff\xfe\x00[1, 2]", [], "invalid_json"),
    ("missing comma", b"[1 2]", [], "invalid_json"),
    ("single quotes", b"{'x': [1, 2]}", [], "invalid_json"),
    ("JSON content-type, broken", b"[1,, 2]", [("content-type", b"application/json")], "invalid_json"),
    ("three numbers", b"[1, 2, 3]", [], "wrong_dimension"),
    ("one number", b"[1]", [], "wrong_dimension"),
    ("ragged rows", b"[[1, 2], [3]]", [], "wrong_dimension"),
    ("x with 3-d rows", b'{"x": [[1, 2, 3], [4, 5, 6]]}', [], "wrong_dimension"),
    ("NaN", b"[NaN, 1]", [], "non_finite"),
    ("Infinity", b"[1, Infinity]", [], "non_finite"),
    ("-Infinity in a batch", b"[[0, 0], [-Infinity, 0]]", [], "non_finite"),
    ("overflowing float literal", b"[1e400, 1]", [], "non_finite"),
    ("f32 NaN", f32([[1, 2], [math.nan, 0]]), F32, "non_finite"),
    ("f32 Inf", f32([[math.inf, 2]]), F32, "non_finite"),
    ("empty value", b"", [], "empty"),
    ("tombstone (None value)", None, [], "empty"),
    ("empty f32 value", b"", F32, "empty"),
    ("strings in the array", b'["1", "2"]', [], "bad_structure"),
    ("one string in the array", b'[1, "2"]', [], "bad_structure"),
    ("string in a row", b'[[1, "a"], [2, 3]]', [], "bad_structure"),
    ("booleans", b"[true, false]", [], "bad_structure"),
    ("null in the array", b"[null, 1]", [], "bad_structure"),
    ("empty object", b"{}", [], "bad_structure"),
    ("wrong key", b'{"y": [1, 2]}', [], "bad_structure"),
    ("extra key", b'{"x": [1, 2], "t": 3}', [], "bad_structure"),
    ("empty array", b"[]", [], "bad_structure"),
    ("array of an empty row", b"[[]]", [], "bad_structure"),
    ("bare number", b"42", [], "bad_structure"),
    ("bare string", b'"[1, 2]"', [], "bad_structure"),
    ("JSON null", b"null", [], "bad_structure"),
    ("f32 of 12 bytes (not a multiple of 8)", f32([[1, 2, 3]]), F32, "bad_binary"),
    ("f32 of 7 bytes", b"\x00" * 7, F32, "bad_binary"),
    ("f32 of 1 byte", b"\x01", F32, "bad_binary"),
    ("text/csv content-type", b"[1, 2]", [("content-type", b"text/csv")], "unsupported_content_type"),
    ("protobuf content-type", f32([[1, 2]]), [("content-type", b"application/x-protobuf")],
     "unsupported_content_type"),
    ("f32 just over the 4 MiB limit", b"\x00" * (MAX_VALUE_BYTES + 8), F32, "too_large"),
]


def build_corpus() -> list[Record]:
    """Valid and bad records, shuffled; each classified by decode_value."""
    rng = np.random.default_rng(1234)
    records: list[Record] = []

    def valid(label: str, value: bytes, headers: list[tuple[str, bytes]], rows: np.ndarray) -> None:
        rec = classify(label, value, headers)
        assert rec.rows is not None and np.array_equal(rec.rows, rows), (label, rec.reason)
        records.append(rec)

    for i in range(300):
        row = rng.normal(size=D)
        valid(f"JSON row #{i}", json.dumps(row.tolist()).encode(), [], row[None, :])
    for i in range(20):
        rows = rng.normal(size=(5, D))
        valid(f"JSON batch #{i}", json.dumps(rows.tolist()).encode(), [], rows)
    for i in range(10):
        rows = rng.normal(size=(i % 3 + 1, D))
        obj = {"x": rows.tolist()} if i % 2 else {"x": rows[0].tolist()}
        valid(f"JSON object #{i}", json.dumps(obj).encode(), [], rows if i % 2 else rows[:1])
    for i in range(10):
        row = rng.normal(size=D)
        valid(f"JSON with content-type #{i}", json.dumps(row.tolist()).encode(),
              [("content-type", b"application/json; charset=utf-8")], row[None, :])
    for i in range(20):
        rows = rng.normal(size=(8, D)).astype("<f4")
        valid(f"f32 batch #{i}", rows.tobytes(), F32, rows.astype(np.float64))

    for label, value, headers, reason in HAND_BAD:
        rec = classify(label, value, headers)
        assert rec.reason == reason, (label, rec.reason)
        records.append(rec)
    blob = np.random.default_rng(10).bytes(BLOB_BYTES)
    records.append(classify("10 MiB random blob", blob, []))
    assert records[-1].reason == "too_large"

    for label, value, headers in fuzz_values():
        rec = classify(label, value, headers)
        records.append(rec)

    random.Random(99).shuffle(records)
    for i, rec in enumerate(records):
        rec.key = f"k{i}".encode()
        rec.partition = i % PARTITIONS
    # a valid sentinel ends each partition: once the sketch counts every valid row, every
    # offset (bad records included) has been consumed and flushed
    for p in range(PARTITIONS):
        row = rng.normal(size=D)
        rec = classify(f"sentinel of partition {p}", json.dumps(row.tolist()).encode(), [])
        rec.key, rec.partition = f"sentinel{p}".encode(), p
        records.append(rec)
    return records


def produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Send ``records`` in order to their partitions; fill in their offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=16 << 20)
    try:
        futures = [
            producer.send(topic, value=r.value, key=r.key, headers=r.headers or None, partition=r.partition)
            for r in records
        ]
        producer.flush(timeout=60)
        for rec, fut in zip(records, futures, strict=True):
            meta = fut.get(timeout=60)
            assert meta.partition == rec.partition
            rec.offset = meta.offset
    finally:
        producer.close(timeout=10)


# ---------------------------------------------------------------------------------------------
# The worker and what it exposes
# ---------------------------------------------------------------------------------------------


class Worker:
    """One `sketchgen ingest` subprocess with its log in a file."""

    def __init__(self, tmp: Path, kafka: str, redis_url: str, stream: str, topic: str) -> None:
        self.metrics_port = free_port()
        self.log_path = tmp / f"worker-{stream}.log"
        cmd = [
            sys.executable, "-m", "sketchgen", "ingest", stream, "--topic", topic, "--kafka", kafka,
            "--redis", redis_url, "--flush-ms", "200", "--metrics-port", str(self.metrics_port),
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def metrics(self) -> dict[SampleKey, float]:
        """Scrape ``/metrics``: {(sample name, sorted labels): value}."""
        return scrape(self.metrics_port)


def wait_for_count(store: SketchStore, stream: str, target: int, worker: Worker, timeout: float) -> int:
    """Poll the sketch's count until it reaches ``target``, the worker dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline and worker.alive():
        count = store.total_count(stream)
        if count >= target:
            break
        time.sleep(0.25)
    return count


def read_dead_letters(bootstrap: str, topics: list[str], expected: int, timeout: float = 60.0) -> list:
    """Every record of the dead-letter ``topics``: waits for ``expected`` of them, then drains a little longer.

    Topics that do not exist after ``timeout``/4 seconds are read as empty.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=100,
        max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20,
    )
    out: list = []
    try:
        start = time.monotonic()
        while not set(topics) <= consumer.topics() and time.monotonic() - start < timeout / 4:
            time.sleep(0.2)
        existing = sorted(set(topics) & consumer.topics())
        if not existing:
            return out
        consumer.subscribe(existing)
        while time.monotonic() - start < timeout:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
            if len(out) >= expected and not batch:
                break
    finally:
        consumer.close()
    return out


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# The mixed corpus, end to end
# ---------------------------------------------------------------------------------------------


def test_malformed_records_are_dead_lettered_and_counted(tmp_path, kafka_server, redis_server):
    stream = unique_name("badrec")
    topic = f"{stream}-events"
    spec = SketchSpec.create(d=D, m=32, law="adapted-radius", sigma=1.0, seed=5, name=stream)
    store = SketchStore(connect(redis_server.url))
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, PARTITIONS)

    records = build_corpus()
    good = [r for r in records if r.rows is not None]
    bad = [r for r in records if r.reason is not None]
    valid_rows = np.concatenate([r.rows for r in good])
    by_reason = collections.Counter(r.reason for r in bad)
    # the corpus covers every reason, the fuzz included both outcomes
    assert set(by_reason) == set(REASONS), by_reason
    assert len(bad) >= 250 and len(good) >= 300, (len(bad), len(good))
    assert any(r.label.startswith(("hypothesis", "mutated")) for r in good)

    worker = Worker(tmp_path, kafka_server.bootstrap, redis_server.url, stream, topic)
    try:
        produce(kafka_server.bootstrap, topic, records)
        count = wait_for_count(store, stream, len(valid_rows), worker, timeout=120)
        assert worker.alive(), f"the worker died (exit {worker.proc.returncode}):\n{worker.log_tail()}"
        assert count >= len(valid_rows), f"only {count} of {len(valid_rows)} rows counted:\n{worker.log_tail()}"
        time.sleep(1.0)  # anything that would wrongly land after the last valid row

        # the sketch holds exactly the valid rows
        state = store.state(stream)
        assert state.sketch.count == len(valid_rows)
        expected, _ = FeatureMap(spec).feature_sum(valid_rows)
        assert np.all(np.isfinite(state.sketch.total))
        rel = np.linalg.norm(state.sketch.total - expected) / np.linalg.norm(expected)
        assert rel <= 1e-9, rel
        window = store.read_window(stream, 600)  # the time buckets, updated in the same atomic step
        assert window.count == len(valid_rows)
        np.testing.assert_allclose(window.total, state.sketch.total, rtol=1e-9, atol=1e-9)
        # each partition's offset moved past every record, bad ones included
        produced = collections.Counter(r.partition for r in records)
        assert {p.partition: p.next_offset for p in state.partitions} == dict(produced)
        assert {p.partition: p.count for p in state.partitions} == {
            p: sum(r.rows.shape[0] for r in good if r.partition == p) for p in range(PARTITIONS)
        }

        # every bad record reached the dead-letter topic exactly once, with decode_value's reason
        dead = read_dead_letters(kafka_server.bootstrap, [f"{topic}.dlq"], len(bad))
        by_source = {f"{topic}:{r.partition}:{r.offset}": r for r in records}
        seen = collections.Counter()
        for dl in dead:
            headers = dict(dl.headers)
            rec = by_source.get(headers.get(SOURCE_HEADER, b"").decode())
            assert rec is not None, f"dead letter with unknown source {headers.get(SOURCE_HEADER)!r}"
            assert rec.reason is not None, f"valid record {rec.label} was dead-lettered: {headers}"
            seen[rec.label, rec.partition, rec.offset] += 1
            assert headers.get(REASON_HEADER) == rec.reason.encode(), (rec.label, headers.get(REASON_HEADER))
            assert headers.get(DETAIL_HEADER), rec.label
            for name, value in rec.headers:  # the original headers travel along
                assert headers.get(name) == value, (rec.label, name)
            assert dl.key == rec.key, rec.label
            too_big = rec.value is not None and len(rec.value) > MAX_VALUE_BYTES
            assert dl.value == (b"" if rec.value is None or too_big else rec.value), rec.label
        missing = [r.label for r in bad if (r.label, r.partition, r.offset) not in seen]
        assert not missing, f"{len(missing)} bad records never reached the dead-letter topic: {missing[:10]}"
        duplicated = {k: n for k, n in seen.items() if n > 1}
        assert not duplicated, f"dead-lettered more than once: {duplicated}"

        # Prometheus: rejected by reason, rows folded, and the (5-s) sketch-size gauge
        metrics = worker.metrics()
        for reason in REASONS:
            key = ("sketchgen_ingest_rejected_total", (("reason", reason), ("stream", stream)))
            assert metrics.get(key) == by_reason[reason], (reason, metrics.get(key), by_reason[reason])
        assert metrics[("sketchgen_ingest_records_total", (("stream", stream),))] == len(valid_rows)
        gauge = ("sketchgen_sketch_records", (("stream", stream),))
        deadline = time.monotonic() + 30
        while metrics.get(gauge) != len(valid_rows) and time.monotonic() < deadline:
            time.sleep(0.5)
            metrics = worker.metrics()
        assert metrics.get(gauge) == len(valid_rows), metrics.get(gauge)

        # a clean stop; nothing changes afterwards
        assert worker.alive(), worker.log_tail()
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(30) == 0, worker.log_tail()
        after = store.state(stream)
        assert after.sketch.count == len(valid_rows)
        np.testing.assert_array_equal(after.sketch.total, state.sketch.total)
    finally:
        worker.kill()


# ---------------------------------------------------------------------------------------------
# Poison records: inputs that once broke the worker (each found by this file, now fixed)
# ---------------------------------------------------------------------------------------------


POISON: dict[str, tuple[bytes, list[tuple[str, bytes]]]] = {
    # an integer literal beyond float range: np.asarray(..., float64) raises OverflowError, caught neither
    # in decode.py decode_json_vectors (the fast path this header-less record takes) nor in
    # rows_from_json (decode_value); the worker dies, and again on every restart (a poison pill).
    "huge_integer": (b"[1" + b"0" * 400 + b", 2]", []),
    # decode.py decode_value: json.loads raises RecursionError (caught: only ValueError) on deep nesting.
    "deep_nesting": (b"[" * 100_000, []),
    # worker.py _dead_letter: the dead-letter producer keeps kafka-python's 1 MiB max_request_size
    # while values up to --max-record-bytes (4 MiB) are forwarded: send() raises MessageSizeTooLargeError.
    "dlq_value_over_1mib": (b"{" + b"x" * (2 << 20), []),
    # decode.py decode_json_vectors (the worker's fast path for header-less records) has no size
    # limit: a 5 MiB plain JSON row is folded into the sketch instead of rejected as too_large.
    "oversized_plain_row": (b"[1," + b" " * (5 << 20) + b"2]", []),
    # features.py FeatureMap._phases rounds phases to float32: a finite 1e300 overflows to inf, and
    # cos/sin(inf) = NaN enters the all-time sum for good (decode only checks isfinite).
    "huge_finite_value": (b"[1e300, 1e300]", []),
}


@dataclass
class PoisonRun:
    worker: Worker
    stream: str
    topic: str
    spec: SketchSpec
    good_rows: np.ndarray
    poison_offset: int
    dead: list | None = None


@pytest.fixture(scope="module")
def poison_runs(tmp_path_factory, kafka_server, redis_server):
    """One worker per poison case, all at once; each topic holds [valid, poison, valid]."""
    tmp = tmp_path_factory.mktemp("poison")
    store = SketchStore(connect(redis_server.url))
    rng = np.random.default_rng(7)
    runs: dict[str, PoisonRun] = {}
    try:
        for case, (value, headers) in POISON.items():
            stream = unique_name(f"poison-{case.replace('_', '-')}")
            topic = f"{stream}-events"
            spec = SketchSpec.create(d=D, m=32, law="adapted-radius", sigma=1.0, seed=5, name=stream)
            store.create_stream(spec)
            ensure_topic(kafka_server.bootstrap, topic, 1)
            rows = rng.normal(size=(2, D))
            records = [
                Record("before", json.dumps(rows[0].tolist()).encode(), []),
                Record(case, value, headers),
                Record("after", json.dumps(rows[1].tolist()).encode(), []),
            ]
            for r in records:
                r.partition = 0
            produce(kafka_server.bootstrap, topic, records)
            worker = Worker(tmp, kafka_server.bootstrap, redis_server.url, stream, topic)
            runs[case] = PoisonRun(worker, stream, topic, spec, rows, records[1].offset)
        deadline = time.monotonic() + 90
        for run in runs.values():
            wait_for_count(store, run.stream, 2, run.worker, timeout=max(1.0, deadline - time.monotonic()))
        time.sleep(1.0)
        # dead letters are flushed to Kafka before offsets to Redis: once a live worker's offset is past
        # the poison record, its dead letter is there; a dead worker may never have created its topic
        dead = read_dead_letters(
            kafka_server.bootstrap, [f"{run.topic}.dlq" for run in runs.values()], len(runs), timeout=20
        )
        for run in runs.values():
            run.dead = [dl for dl in dead if dl.topic == f"{run.topic}.dlq"]
        yield store, runs
    finally:
        for run in runs.values():
            run.worker.kill()


@pytest.mark.parametrize("case", list(POISON))
def test_poison_record(case, poison_runs):
    store, runs = poison_runs
    run = runs[case]
    assert run.worker.alive(), f"the worker died (exit {run.worker.proc.returncode}):\n{run.worker.log_tail()}"
    try:
        state = store.state(run.stream)
    except SpecError as exc:  # Sketch refuses a non-finite sum: the stream can no longer be read
        raise AssertionError(f"the sketch was corrupted: {exc}") from exc
    assert state.partitions and state.partitions[0].next_offset == 3, state.partitions
    sources = [dict(dl.headers).get(SOURCE_HEADER) for dl in run.dead or []]
    rejected = f"{run.topic}:0:{run.poison_offset}".encode() in sources
    assert rejected, f"the poison record is not in the dead-letter topic: {sources}"
    assert state.sketch.count == 2
    expected, _ = FeatureMap(run.spec).feature_sum(run.good_rows)
    np.testing.assert_allclose(state.sketch.total, expected, rtol=1e-9, atol=1e-12)
    reason = dict(run.dead[sources.index(f"{run.topic}:0:{run.poison_offset}".encode())].headers)[REASON_HEADER]
    assert reason.decode() in REASONS
    if case == "oversized_plain_row":
        assert reason == b"too_large"
    if case == "dlq_value_over_1mib":
        assert reason == b"invalid_json"
    if case == "huge_finite_value":
        assert reason == b"out_of_range"
