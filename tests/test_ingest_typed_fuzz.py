"""Fuzzed bad typed records against a real `sketchgen ingest` worker, Tansu (Kafka) and Redis (docs/ingest.md).

One worker folds a two-partition topic of a typed stream (tests.test_decode_typed's SCHEMA: a float, a nullable
int, a category, a bool and a nullable dotted ``device.model``) holding a derandomized hypothesis mix of valid
records and bad ones of every kind: wrong types, unknown categories (the reject policy), nulls and missing
fields where not allowed, arrays and objects where scalars belong, nesting beyond the depth limit, strings
beyond the string limit, values beyond the size limit and numbers beyond the range, duplicate keys (raw JSON
text repeating a field, with a bad or a valid value last: refused either way), invalid JSON and UTF-8, and JSON
that is not an object. Each record is classified in-process by the worker's own decoding function
(:func:`ingest.fold.decode_job`); each kind's expected reason is cross-checked against it.

Asserted against the worker: it never dies and exits 0 on SIGTERM; the sketch holds exactly the valid
records (count, and the feature sum of the encoder's rows of the valid records, relative error ≤ 1e-9); each
bad record is in ``TOPIC.dlq`` exactly once with the decoder's reason; the per-reason counters match.
"""

from __future__ import annotations

import collections
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import strategies as st

from ingest.dead_letters import REASON_HEADER, SOURCE_HEADER
from ingest.decode import ALL_REASONS, F32_CONTENT_TYPE, TYPED_REASONS, RecordError, decode_value
from ingest.fold import Job, decode_job
from sketch_store.features import FeatureMap
from sketch_store.pilot import typed_spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.schema import MAX_DEPTH, MAX_STRING_BYTES
from sketchgen.local_stack import free_port
from sketchgen.produce import ensure_topic
from tests.processes import Proc, scrape, wait_for
from tests.test_decode_typed import SCHEMA, pilot
from tests.test_ingest_bad_records import draw, produce, read_dead_letters, unique_name

pytestmark = pytest.mark.slow

PARTITIONS = 2
#: The worker's --max-record-bytes: small, so that oversized values stay cheap to produce.
MAX_RECORD_BYTES = 1 << 16
CUTS = ("Fair", "Good", "Ideal")
MODELS = ("a", "b")
REQUIRED = ("price", "cut", "cert")
#: Per bad kind, how many hypothesis examples.
PER_KIND = 40
VALID_EXAMPLES = 300


@dataclass
class Case:
    """One produced record: its bytes, the record a valid one stands for, the reason a bad one is expected to get."""

    label: str
    value: bytes | None
    headers: list[tuple[str, bytes]]
    record: dict | None = None  # the logical record of a valid case (what the encoder is given)
    expected: str | None = None  # the kind's reason; None when only the decoder says (free fuzz)
    row: np.ndarray | None = None  # the decoder's row of a valid record
    reason: str | None = None  # the decoder's reason of a bad record
    key: bytes | None = None
    partition: int = -1
    offset: int = -1


# -- valid records -----------------------------------------------------------------------------------------

_prices = st.floats(-1e5, 1e5, allow_nan=False) | st.integers(-10**5, 10**5)
_qty = st.none() | st.integers(-10**6, 10**6) | st.integers(-1000, 1000).map(float)
_model = st.none() | st.sampled_from(MODELS)
_junk = st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=6),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=2),
                     max_leaves=6)


@st.composite
def valid_records(draw_: Callable) -> dict:
    """A valid record of SCHEMA: the device's model nested, as a literal dotted key, or absent; maybe extra keys."""
    rec = {"price": draw_(_prices), "cut": draw_(st.sampled_from(CUTS)), "cert": draw_(st.booleans())}
    if draw_(st.booleans()):
        rec["qty"] = draw_(_qty)
    form = draw_(st.sampled_from(["nested", "dotted", "absent", "empty object"]))
    if form == "nested":
        rec["device"] = {"model": draw_(_model)}
    elif form == "dotted":
        rec["device.model"] = draw_(_model)
    elif form == "empty object":
        rec["device"] = {}
    if draw_(st.booleans()):
        rec["note"] = draw_(_junk)
    keys = list(rec)
    random.Random(draw_(st.integers(0, 1000))).shuffle(keys)
    return {k: rec[k] for k in keys}


def set_field(rec: dict, name: str, value: object) -> dict:
    """A copy of ``rec`` with field ``name`` (``device.model`` nested) set to ``value``."""
    out = {k: v for k, v in rec.items() if k not in ("device", "device.model")} if name == "device.model" else dict(rec)
    if name == "device.model":
        out["device"] = {"model": value}
    else:
        out[name] = value
    return out


def text(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- bad records, one strategy per kind: (label, value bytes) -----------------------------------------------

_not_category = st.text(max_size=12).filter(lambda s: s not in CUTS + MODELS)
_fractional = st.floats(-1e4, 1e4, allow_nan=False).filter(lambda v: not float(v).is_integer())
_wrong = {  # field → values of a wrong type for it (and never valid)
    "price": st.text(max_size=6) | st.booleans(),
    "qty": st.text(max_size=6) | st.booleans() | _fractional,
    "cut": st.integers() | st.booleans() | st.floats(allow_nan=False),
    "cert": st.integers() | st.text(max_size=6) | st.floats(allow_nan=False),
    "device.model": st.integers() | st.booleans(),
}
_scalar = st.none() | st.booleans() | st.integers(-100, 100) | st.text(max_size=4)
_fields = st.sampled_from([f.name for f in SCHEMA.fields])


def _deep(depth: int, containers: list[bool]) -> object:
    """A chain of ``depth`` nested containers (object if the flag is set, else array) around a number."""
    node: object = 1
    for is_object in containers[:depth]:
        node = {"k": node} if is_object else [node]
    return node


def _with(strategy: st.SearchStrategy, fn: Callable) -> st.SearchStrategy:
    return st.tuples(valid_records(), strategy).map(lambda pair: fn(*pair))


def _duplicate_bad(rec: dict, pair: tuple[str, object]) -> bytes:
    """Raw text with ``name`` repeated: the valid value (a null where the record has none) first, a bad one last."""
    name, bad = pair
    body = json.dumps({name: None} | rec)[1:-1]
    return ("{" + body + (", " if body else "") + f"{json.dumps(name)}: {json.dumps(bad)}" + "}").encode()


BAD_KINDS: dict[str, tuple[str, st.SearchStrategy]] = {
    "wrong type": ("wrong_type", _with(_fields.flatmap(lambda f: st.tuples(st.just(f), _wrong[f])),
                                       lambda r, p: text(set_field(r, *p)))),
    "unknown category": ("unknown_category", _with(st.tuples(st.sampled_from(["cut", "device.model"]), _not_category),
                                                   lambda r, p: text(set_field(r, *p)))),
    "null where not allowed": ("null_not_allowed", _with(st.sampled_from(REQUIRED),
                                                         lambda r, f: text(set_field(r, f, None)))),
    "missing field": ("null_not_allowed", _with(st.sampled_from(REQUIRED),
                                                lambda r, f: text({k: v for k, v in r.items() if k != f}))),
    "array for a scalar": ("wrong_type", _with(st.tuples(_fields, st.lists(_scalar, max_size=3)),
                                               lambda r, p: text(set_field(r, *p)))),
    "object for a scalar": ("wrong_type", _with(st.tuples(_fields, st.dictionaries(st.text(max_size=3), _scalar,
                                                                                   max_size=2)),
                                                lambda r, p: text(set_field(r, *p)))),
    "nested too deep": ("nested_too_deep", _with(st.tuples(st.sampled_from(["note", "device.model", "price"]),
                                                           st.integers(MAX_DEPTH, 60),
                                                           st.lists(st.booleans(), min_size=60, max_size=60)),
                                                 lambda r, p: text(set_field(r, p[0], _deep(p[1], p[2]))))),
    "huge string": ("too_long", _with(st.tuples(_fields, st.integers(MAX_STRING_BYTES + 1, 3 * MAX_STRING_BYTES),
                                                st.sampled_from(["x", "é", "€", "😀"])),
                                      lambda r, p: text(set_field(r, p[0], p[2] * (p[1] // len(p[2].encode())
                                                                                   + 1))))),
    "value over the size limit": ("too_large", _with(st.integers(MAX_RECORD_BYTES, 2 * MAX_RECORD_BYTES),
                                                     lambda r, n: text({**r, "pad": "p" * n}))),
    "number beyond the range": ("out_of_range", _with(st.tuples(st.sampled_from(["price", "qty"]),
                                                                st.integers(10**12, 10**300), st.booleans()),
                                                      lambda r, p: text(set_field(r, p[0], p[1] * (-1) ** p[2])))),
    "number beyond float64": ("non_finite", _with(st.tuples(st.sampled_from(["price", "qty"]),
                                                            st.integers(400, 2000)),
                                                  lambda r, p: text(set_field(r, p[0], 0))
                                                  .replace(f'"{p[0]}": 0'.encode(), f'"{p[0]}": 1e{p[1]}'.encode()))),
    "duplicate key, bad last": ("duplicate_key", _with(_fields.flatmap(lambda f: st.tuples(st.just(f), _wrong[f])),
                                                    lambda r, p: _duplicate_bad(
                                                        {k: v for k, v in r.items() if k != "device"}, p))),
    "truncated JSON": ("invalid_json", _with(st.floats(0.01, 0.99),
                                             lambda r, q: text(r)[: max(1, int(len(text(r)) * q))])),
    "invalid UTF-8": ("invalid_json", _with(st.tuples(st.floats(0, 1), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0"
                                                                                         b"\x80", b"\x80"])),
                                            lambda r, p: _insert_in_string(text(r), p[0], p[1]))),
    "not an object": ("bad_structure", st.recursive(_scalar, lambda kids: st.lists(kids, max_size=3), max_leaves=5)
                      .filter(lambda v: not isinstance(v, dict)).map(text)),
}


def _insert_in_string(raw: bytes, where: float, junk: bytes) -> bytes:
    """``junk`` inserted right after a quote of ``raw`` (inside a key or a string: never valid UTF-8 there)."""
    quotes = [i for i, b in enumerate(raw) if b == ord('"')]
    at = quotes[min(len(quotes) - 1, int(where * len(quotes)))] + 1
    return raw[:at] + junk + raw[at:]


@st.composite
def duplicate_valid(draw_: Callable) -> tuple[bytes, dict]:
    """Raw text repeating a field: a decoy (bad or valid) value first, the record's own value last (still refused:
    which value is meant is ambiguous)."""
    rec = draw_(valid_records())
    rec.pop("device", None)
    name = draw_(st.sampled_from(REQUIRED))
    decoy = draw_(_wrong[name] | _not_category | st.none())
    body = json.dumps({k: v for k, v in rec.items() if k != name})[1:-1]
    last = f"{json.dumps(name)}: {json.dumps(rec[name])}"
    raw = "{" + f"{json.dumps(name)}: {json.dumps(decoy)}, " + (body + ", " if body else "") + last + "}"
    return raw.encode(), rec


# free fuzz: objects over the schema's keys with arbitrary JSON values; only the decoder says what they are
_any = st.recursive(_scalar | st.floats() | st.sampled_from([*CUTS, *MODELS, "__other__", "x" * 1100]),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["model", "k"]), kids,
                                                                              max_size=2), max_leaves=10)
FREE = st.dictionaries(st.sampled_from(["price", "qty", "cut", "cert", "device", "device.model", "note"]), _any,
                       max_size=7) | st.fixed_dictionaries(
    {"price": _prices | _any, "cut": st.sampled_from(CUTS) | _any, "cert": st.booleans() | _any},
    optional={"qty": _qty | _any, "device": st.fixed_dictionaries({}, optional={"model": _model | _any}) | _any,
              "device.model": _model | _any, "note": _any})

HAND: list[tuple[str, bytes | None, list[tuple[str, bytes]], str]] = [
    ("tombstone", None, [], "empty"),
    ("empty value", b"", [], "empty"),
    ("float32 vector", np.zeros(9, dtype="<f4").tobytes(), [("content-type", F32_CONTENT_TYPE.encode())],
     "unsupported_content_type"),
    ("text/plain", text({"price": 1.0, "cut": "Good", "cert": True}), [("content-type", b"text/plain")],
     "unsupported_content_type"),
    ("NaN literal", b'{"price": NaN, "cut": "Good", "cert": true}', [], "non_finite"),
    ("past the parser's recursion", b'{"a":' * 5000 + b"1" + b"}" * 5000, [], "invalid_json"),
]


# -- the corpus ----------------------------------------------------------------------------------------------


def classify(case: Case, spec) -> Case:
    """Fill in the worker's verdict: ingest.fold.decode_job on the one record (decoder, then range check)."""
    rows, _, rejects = decode_job(Job([case.value], [case.headers], [0]), spec, MAX_RECORD_BYTES)
    if rejects:
        case.reason = rejects[0][1]
    else:
        case.row = rows[0]
        if case.record is None:  # a free-fuzz object the decoder took: the record is the JSON text's object
            case.record = json.loads(case.value)
    return case


def build_corpus(spec) -> list[Case]:
    """Valid and bad cases, classified, each kind's expectation checked; shuffled over the partitions."""
    cases = [Case(f"valid #{i}", text(r), [], record=r) for i, r in enumerate(draw(valid_records(), VALID_EXAMPLES))]
    cases += [Case(f"duplicate key, valid last #{i}", raw, [], expected="duplicate_key")
              for i, (raw, _) in enumerate(draw(duplicate_valid(), 30))]
    for kind, (reason, strategy) in BAD_KINDS.items():
        cases += [Case(f"{kind} #{i}", raw, [], expected=reason) for i, raw in enumerate(draw(strategy, PER_KIND))]
    cases += [Case(label, value, headers, expected=reason) for label, value, headers, reason in HAND]
    cases += [Case(f"free fuzz #{i}", text(obj), []) for i, obj in enumerate(draw(FREE, 300))]
    for case in cases:
        classify(case, spec)
    random.Random(7).shuffle(cases)
    for i, case in enumerate(cases):
        case.key, case.partition = f"k{i}".encode(), i % PARTITIONS
    for p in range(PARTITIONS):  # a valid sentinel ends each partition (see test_ingest_bad_records)
        rec = {"price": 100.0 + p, "cut": "Fair", "cert": False}
        cases.append(classify(Case(f"sentinel {p}", text(rec), [], record=rec, key=f"s{p}".encode(), partition=p),
                              spec))
    return cases


@pytest.fixture(scope="module")
def spec():
    return typed_spec_from_pilot(pilot(), SCHEMA, m=32, seed=3, name=unique_name("typed-fuzz"))


@pytest.fixture(scope="module")
def corpus(spec) -> list[Case]:
    return build_corpus(spec)


def test_the_corpus_is_what_each_kind_says(corpus, spec):
    """Every kind gets its reason from the decoder, valid records decode to their encoder rows, all reasons met."""
    wrong = [(c.label, c.expected, c.reason, c.value[:200]) for c in corpus
             if c.expected is not None and c.reason != c.expected]
    assert not wrong, wrong[:10]
    for case in corpus:
        if case.record is not None:
            assert case.reason is None, (case.label, case.reason, case.value[:120])
            np.testing.assert_array_equal(case.row, spec.encoder.encode(case.record), err_msg=case.label)
    reasons = collections.Counter(c.reason for c in corpus if c.reason is not None)
    assert set(TYPED_REASONS) | {"invalid_json", "bad_structure", "too_large", "out_of_range", "non_finite",
                                 "empty", "unsupported_content_type"} <= set(reasons), reasons
    free = [c for c in corpus if c.label.startswith("free fuzz")]
    assert any(c.reason is None for c in free) and any(c.reason is not None for c in free)


def test_fuzzed_typed_records_against_a_real_worker(corpus, spec, tmp_path, kafka_server, redis_server):
    stream = spec.name
    topic = f"{stream}-events"
    store = SketchStore(connect(redis_server.url))
    store.create_stream(spec)
    ensure_topic(kafka_server.bootstrap, topic, PARTITIONS)
    good = [c for c in corpus if c.reason is None]
    bad = [c for c in corpus if c.reason is not None]
    produce(kafka_server.bootstrap, topic, corpus)  # type: ignore[arg-type]  # Record-like: value, key, headers

    port = free_port()
    worker = Proc(tmp_path, "worker", ["ingest", stream, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                       "--redis", redis_server.url, "--flush-ms", "200", "--metrics-port", str(port),
                                       "--max-record-bytes", str(MAX_RECORD_BYTES)])
    try:
        wait_for(lambda: worker.proc.poll() is not None or store.total_count(stream) >= len(good), 120,
                 "the valid records to be counted")
        assert worker.proc.poll() is None, f"the worker died:\n{worker.tail()}"
        time.sleep(1.0)  # anything that would wrongly land after the last valid record
        check_sketch(store, stream, spec, good, corpus)
        check_dead_letters(kafka_server.bootstrap, topic, bad)
        check_counters(port, stream, good, bad)
        assert worker.proc.poll() is None, f"the worker died:\n{worker.tail()}"
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()


def check_sketch(store: SketchStore, stream: str, spec, good: list[Case], corpus: list[Case]) -> None:
    """Exactly the valid records: their count, the feature sum of the encoder's rows of their records, and
    those rows' coordinate bounds (no rejected record widened them)."""
    state = store.state(stream)
    assert state.sketch.count == len(good)
    rows = spec.encoder.encode_many([c.record for c in good])
    expected, _ = FeatureMap(spec).feature_sum(rows)
    rel = np.linalg.norm(state.sketch.total - expected) / np.linalg.norm(expected)
    assert rel <= 1e-9, rel
    assert state.sketch.bounds is not None
    np.testing.assert_array_equal(state.sketch.bounds.lo, rows.min(axis=0))
    np.testing.assert_array_equal(state.sketch.bounds.hi, rows.max(axis=0))
    produced = collections.Counter(c.partition for c in corpus)
    assert {p.partition: p.next_offset for p in state.partitions} == dict(produced)


def check_dead_letters(bootstrap: str, topic: str, bad: list[Case]) -> None:
    """Each bad record in ``TOPIC.dlq`` exactly once, with the decoder's reason; no valid record there."""
    dead = read_dead_letters(bootstrap, [f"{topic}.dlq"], len(bad), timeout=90)
    expected = {f"{topic}:{c.partition}:{c.offset}": c for c in bad}
    seen = collections.Counter(dict(dl.headers)[SOURCE_HEADER].decode() for dl in dead)
    assert not [s for s in seen if s not in expected], "a valid record (or an unknown one) was dead-lettered"
    assert not {s: n for s, n in seen.items() if n > 1}, "dead-lettered more than once"
    missing = [c.label for s, c in expected.items() if s not in seen]
    assert not missing, f"{len(missing)} bad records never reached the dead-letter topic: {missing[:10]}"
    for dl in dead:
        headers = dict(dl.headers)
        case = expected[headers[SOURCE_HEADER].decode()]
        assert headers[REASON_HEADER].decode() == case.reason, (case.label, headers[REASON_HEADER])
        assert dl.key == case.key, case.label


def check_counters(port: int, stream: str, good: list[Case], bad: list[Case]) -> None:
    """``sketchgen_ingest_rejected_total{reason}`` per reason (0 for the absent ones) and the records folded."""
    by_reason = collections.Counter(c.reason for c in bad)
    records = ("sketchgen_ingest_records_total", (("stream", stream),))
    wait_for(lambda: scrape(port).get(records) == len(good), 30, "the records metric")
    metrics = scrape(port)
    for reason in ALL_REASONS:
        key = ("sketchgen_ingest_rejected_total", (("reason", reason), ("stream", stream)))
        assert metrics.get(key) == by_reason.get(reason, 0), (reason, metrics.get(key), by_reason.get(reason, 0))


# -- found by this file: text that is not UTF-8 --------------------------------------------------------------

NOT_UTF8 = {
    "an encoded surrogate in a key": b'{"\xed\xa0\x80note": 1, "price": 1.0, "cut": "Good", "cert": true}',
    "an encoded surrogate in a category": b'{"price": 1.0, "cut": "Good\xed\xb0\x80", "cert": true}',
    "UTF-16 with a byte-order mark": '{"price": 1.0, "cut": "Good", "cert": true}'.encode("utf-16"),
    "UTF-32 without a byte-order mark": '{"price": 1.0, "cut": "Good", "cert": true}'.encode("utf-32-le"),
}


@pytest.mark.parametrize("case", list(NOT_UTF8))
def test_a_value_that_is_not_utf8_is_invalid_json(case, spec):
    """JSON records are UTF-8 (docs/ingest.md, bad records): ``json.loads`` of bytes would also take UTF-16/32 and,
    with ``surrogatepass``, encoded surrogates; the decoder refuses them as ``invalid_json``, typed or numeric."""
    assert classify(Case(case, NOT_UTF8[case], []), spec).reason == "invalid_json"
    numeric = NOT_UTF8[case].replace(b'"price": 1.0, "cut": "Good', b'"x": [1.0, 2.0], "y": "')
    with pytest.raises(RecordError) as info:
        decode_value(numeric, None, d=2)
    assert info.value.reason == "invalid_json"


def test_a_utf8_byte_order_mark_is_still_accepted(spec):
    """A leading UTF-8 BOM is ignored, as before (RFC 8259 lets a parser ignore it)."""
    value = "\ufeff".encode() + text({"price": 1.0, "cut": "Good", "cert": True})
    assert classify(Case("bom", value, []), spec).reason is None
