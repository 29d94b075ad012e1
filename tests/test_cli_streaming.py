"""The streaming command line (`create`, `produce`, `ingest`, `status`, `export`, `up`) against real servers.

Runs against the session's Redis and Tansu broker (``redis_server``, ``kafka_server``); every test
uses its own stream and topic names and never flushes the database. As in test_cli_offline, a few
flows run as real `python -m sketchgen …` processes and the many error cases run in-process
through :func:`sketchgen.cli.main` (same code path, without ~1.5 s of start-up each).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from learner.checkpoint import MODEL_FILE
from sketch_store.features import FeatureMap
from sketch_store.pilot import DEFAULT_LAW, DEFAULT_M, DEFAULT_M_HIGH_DIM
from sketch_store.redis_connect import connect
from sketch_store.redis_store import BucketDelta, SketchStore
from sketch_store.sketch import load_sketch
from sketchgen.cli import main
from sketchgen.datasets import make_dataset
from sketchgen.local_stack import free_port
from tests.processes import fetch

TIMEOUT = 180  # per subprocess; generous, other suites may be loading the machine
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_KAFKA = "127.0.0.1:1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: no inherited SKETCHGEN_* (so nothing reaches a server we did not start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKETCHGEN_")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = ""  # default warning filters (a warning would be a stray stderr line)
    env.update(extra)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sketchgen", *args]


def run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cmd(*args), cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=TIMEOUT
    )


def run_many(commands: dict[str, list[str]], **kwargs) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run, args, **kwargs) for name, args in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_one_error_line(status: int, err: str, expected: str = "") -> str:
    """Exit 2 and exactly one stderr line ``sketchgen: error: …`` containing ``expected``."""
    assert "Traceback" not in err, err
    assert status == 2, f"exit {status}; stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sketchgen: error:"), lines[0]
    assert expected in lines[0], lines[0]
    return lines[0]


def call(args: list[str]) -> tuple[int, str, str]:
    """Run ``sketchgen.cli.main`` in-process; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    return status, out.getvalue(), err.getvalue()


def store_of(redis_server) -> SketchStore:
    return SketchStore(connect(redis_server.url))


def status_json(name: str, url: str) -> dict:
    status, out, err = call(["status", name, "--json", "--redis", url])
    assert status == 0, err
    return json.loads(out)


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> tuple[set[int], list[bytes]]:
    """Partitions of ``topic`` and the values of all its records (reads until ``expected`` values or timeout)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100, consumer_timeout_ms=1000
    )
    try:
        deadline = time.monotonic() + timeout
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        while len(values) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
        return set(parts), values
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        consumer.close()


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _no_default_servers(monkeypatch):
    """In-process calls never fall back to localhost:6379/9092 (a server we did not start) by accident."""
    monkeypatch.setenv("SKETCHGEN_REDIS", UNREACHABLE_REDIS)
    monkeypatch.setenv("SKETCHGEN_KAFKA", UNREACHABLE_KAFKA)


# -- create ------------------------------------------------------------------------------------


def test_create_default(redis_server):
    name = unique("create-default")
    status, out, err = call(["create", name, "--dim", "3", "--redis", redis_server.url])
    assert status == 0, err
    assert f"created stream {name}" in out
    spec = store_of(redis_server).get_spec(name)
    assert (spec.d, spec.m, spec.law) == (3, DEFAULT_M, DEFAULT_LAW)
    assert np.all(np.isfinite(spec.sigma)) and np.all(spec.sigma > 0)
    assert spec.fingerprint in out
    assert status_json(name, redis_server.url)["count"] == 0


def test_create_defaults_to_a_larger_sketch_for_higher_dimensions(redis_server, tmp_path):
    name = unique("create-10d")
    assert call(["create", name, "--dim", "10", "--redis", redis_server.url])[0] == 0
    assert store_of(redis_server).get_spec(name).m == DEFAULT_M_HIGH_DIM
    np.save(tmp_path / "pilot.npy", np.random.default_rng(0).normal(size=(500, 10)))
    piloted = unique("create-10d-pilot")
    status, _, err = call(["create", piloted, "--dim", "10", "--estimate-from", str(tmp_path / "pilot.npy"),
                           "--redis", redis_server.url])
    assert status == 0, err
    assert store_of(redis_server).get_spec(piloted).m == DEFAULT_M_HIGH_DIM
    explicit = unique("create-10d-m")
    assert call(["create", explicit, "--dim", "10", "--m", "64", "--redis", redis_server.url])[0] == 0
    assert store_of(redis_server).get_spec(explicit).m == 64


def test_create_with_sigma(redis_server):
    name = unique("create-sigma")
    args = ["create", name, "--dim", "2", "--m", "64", "--law", "gaussian", "--sigma", "0.25", "--seed", "7"]
    status, _, err = call([*args, "--redis", redis_server.url])
    assert status == 0, err
    spec = store_of(redis_server).get_spec(name)
    assert (spec.d, spec.m, spec.law, spec.scale_method) == (2, 64, "gaussian", "given")
    assert float(spec.sigma) == pytest.approx(0.25)
    info = status_json(name, redis_server.url)
    assert info["spec"]["sigma"] == pytest.approx(0.25)
    assert info["spec"]["fingerprint"] == spec.fingerprint


def test_create_estimate_from_pilot(redis_server, tmp_path):
    name = unique("create-pilot")
    pilot = np.random.default_rng(0).normal(loc=[5.0, -1.0, 0.0], scale=[2.0, 0.5, 1.0], size=(2000, 3))
    np.save(tmp_path / "pilot.npy", pilot)
    status, _, err = call(
        ["create", name, "--dim", "3", "--m", "100", "--estimate-from", str(tmp_path / "pilot.npy"),
         "--redis", redis_server.url]
    )
    assert status == 0, err
    spec = store_of(redis_server).get_spec(name)
    assert (spec.d, spec.m) == (3, 100)
    assert spec.scale_method != "given"  # σ was estimated from the pilot
    assert np.all(np.isfinite(spec.sigma)) and np.all(spec.sigma > 0)
    assert np.allclose(spec.mean, pilot.mean(axis=0))
    assert np.allclose(spec.std, pilot.std(axis=0))


def test_create_refuses_to_overwrite_without_replace(redis_server):
    name = unique("create-replace")
    url = redis_server.url
    assert call(["create", name, "--dim", "2", "--m", "32", "--seed", "1", "--redis", url])[0] == 0
    store = store_of(redis_server)
    first = store.get_spec(name, refresh=True)
    # put some records in, as an ingest worker would
    x = make_dataset("circle", 10, seed=0)
    claim = store.claim(name, "t", 0)
    store.flush(name, claim, 0, 10, FeatureMap(first).feature_sum(x)[0], 10)
    assert status_json(name, url)["count"] == 10

    status, _, err = call(["create", name, "--dim", "2", "--m", "32", "--seed", "2", "--redis", url])
    assert_one_error_line(status, err, "already exists")
    assert store.get_spec(name, refresh=True).fingerprint == first.fingerprint  # untouched
    assert status_json(name, url)["count"] == 10  # data untouched

    status, _, err = call(["create", name, "--dim", "2", "--m", "32", "--seed", "2", "--replace", "--redis", url])
    assert status == 0, err
    second = store.get_spec(name, refresh=True)
    assert second.fingerprint != first.fingerprint
    info = status_json(name, url)
    assert info["count"] == 0 and info["partitions"] == []  # the old stream's data went with it
    assert info["spec"]["fingerprint"] == second.fingerprint


@pytest.mark.parametrize("name", ["has space", "a{b}", "x:y", "_underscore-first", "é", "a" * 201])
def test_create_bad_name(redis_server, name):
    status, _, err = call(["create", name, "--dim", "2", "--redis", redis_server.url])
    assert_one_error_line(status, err, "invalid stream name")


@pytest.mark.parametrize("flags", [["--dim", "0"], ["--dim", "2", "--m", "0"], ["--dim", "2", "--sigma", "-1"]])
def test_create_bad_numbers(redis_server, flags):
    status, _, err = call(["create", unique("create-bad"), *flags, "--redis", redis_server.url])
    assert_one_error_line(status, err)


# -- connection settings: flags, then environment, then defaults ---------------------------------


def test_env_var_fallbacks_in_subprocess(redis_server, kafka_server):
    name, topic = unique("envvars"), unique("t-envvars")
    env = _env(SKETCHGEN_REDIS=redis_server.url, SKETCHGEN_KAFKA=kafka_server.bootstrap)
    results = run_many(
        {
            "create": ["create", name, "--dim", "2", "--m", "16"],
            "produce": ["produce", topic, "--dataset", "gmm", "--count", "40", "--partitions", "1"],
        },
        env=env,
    )
    ok(results["create"])
    assert json.loads(ok(results["produce"]).stdout.strip().splitlines()[-1])["rows"] == 40
    info = json.loads(ok(run(["status", name, "--json"], env=env)).stdout)
    assert info["stream"] == name and info["count"] == 0
    assert store_of(redis_server).exists(name)
    parts, values = consume_all(kafka_server.bootstrap, topic, 40)
    assert parts == {0}
    assert len(values) == 40


def test_flag_wins_over_env(redis_server, monkeypatch):
    name = unique("flagwins")
    monkeypatch.setenv("SKETCHGEN_REDIS", redis_server.url)
    assert call(["create", name, "--dim", "2", "--m", "16"])[0] == 0  # env only
    monkeypatch.setenv("SKETCHGEN_REDIS", UNREACHABLE_REDIS)
    status, _, err = call(["status", name])  # env points nowhere: it is used
    assert_one_error_line(status, err, "127.0.0.1:1")
    status, out, err = call(["status", name, "--json", "--redis", redis_server.url])  # the flag wins
    assert status == 0, err
    assert json.loads(out)["stream"] == name


def test_kafka_env_is_used(kafka_server, monkeypatch):
    monkeypatch.setenv("SKETCHGEN_KAFKA", UNREACHABLE_KAFKA)
    status, _, err = call(["produce", unique("t-env"), "--dataset", "spiral", "--count", "5"])
    assert_one_error_line(status, err, "127.0.0.1:1")
    topic = unique("t-flag")
    status, out, err = call(
        ["produce", topic, "--dataset", "spiral", "--count", "5", "--kafka", kafka_server.bootstrap]
    )
    assert status == 0, err
    assert json.loads(out)["rows"] == 5


# -- the whole flow: create → produce (json, f32) → ingest → status → export → fit -------------------


@pytest.fixture(scope="module")
def flow(redis_server, kafka_server, tmp_path_factory):
    """Run the streaming pipeline once with real processes and collect everything the tests check."""
    work = tmp_path_factory.mktemp("stream-flow")
    name, topic, group = unique("flow"), unique("t-flow"), unique("g-flow")
    kafka, url = ["--kafka", kafka_server.bootstrap], ["--redis", redis_server.url]
    metrics_port = free_port()
    res: dict[str, object] = {"work": work, "name": name, "topic": topic, "group": group}

    res["create"] = run(["create", name, "--dim", "2", "--m", "200", *url])
    res["produce json"] = run(["produce", topic, "--dataset", "spiral", "--count", "3000", "--partitions", "4",
                               "--seed", "1", *kafka])
    res["produce f32"] = run(["produce", topic, "--dataset", "spiral", "--count", "2000", "--format", "f32",
                              "--batch-rows", "100", "--seed", "2", *kafka])

    log_path = work / "ingest.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            _cmd("ingest", name, "--topic", topic, "--group", group, "--metrics-port", str(metrics_port),
                 "--flush-ms", "200", *kafka, *url),
            stdout=log, stderr=subprocess.STDOUT, env=_env(),
        )
    try:
        deadline = time.monotonic() + 90
        info: dict = {}
        while time.monotonic() < deadline and worker.poll() is None:
            info = status_json(name, redis_server.url)
            if info["count"] >= 5000:
                break
            time.sleep(0.3)
        time.sleep(0.5)  # anything beyond 5000 (a double count) would show up here
        res["status json"] = status_json(name, redis_server.url)
        code, body = fetch(metrics_port, "/metrics", timeout=10)
        res["metrics"] = body.decode() if code == 200 else f"cannot scrape: HTTP {code or 'no answer'}"
        res["worker alive before SIGTERM"] = worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        try:
            res["worker exit"] = worker.wait(60)
        except subprocess.TimeoutExpired:
            res["worker exit"] = "timeout"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    res["worker log"] = log_path.read_text(errors="replace")
    res["committed"] = {g: committed_offsets(kafka_server.bootstrap, g, topic, 4) for g in (group, f"sketchgen-{name}")}

    res["status text"] = call(["status", name, *url])
    res["export"] = call(["export", name, "--out", str(work / "s.npz"), *url])
    res["export window"] = call(["export", name, "--out", str(work / "w.npz"), "--window", "600", *url])
    res["export halflife"] = call(["export", name, "--out", str(work / "h.npz"), "--halflife", "60", *url])
    if (work / "s.npz").exists():
        res["fit"] = run(["fit", "s.npz", "--out", "model", "--steps", "20", "--hidden", "16"], cwd=work)
    return res


def test_flow_create_and_produce(flow):
    assert f"created stream {flow['name']}" in ok(flow["create"]).stdout
    for key, rows in (("produce json", 3000), ("produce f32", 2000)):
        summary = json.loads(ok(flow[key]).stdout.strip().splitlines()[-1])
        assert summary["topic"] == flow["topic"] and summary["rows"] == rows


def test_flow_ingest_counts_every_record_once(flow):
    info = flow["status json"]
    assert flow["worker alive before SIGTERM"], flow["worker log"][-3000:]
    assert info["count"] == 5000, flow["worker log"][-3000:]
    parts = info["partitions"]
    assert {p["partition"] for p in parts} == {0, 1, 2, 3}
    for p in parts:
        assert {"topic", "partition", "count", "next_offset"} <= set(p)
        assert p["topic"] == flow["topic"]
        assert p["count"] > 0
    assert sum(p["count"] for p in parts) == 5000
    # 3000 one-row JSON records + 2000/100 f32 records, offsets from 0 on each partition
    assert sum(p["next_offset"] for p in parts) == 3000 + 20
    assert info["memory_bytes"] > 0
    assert info["spec"]["d"] == 2 and info["spec"]["m"] == 200
    assert info["updated"] is not None and abs(time.time() - info["updated"]) < 600
    for level in ("fine", "coarse"):  # bucket span: the records are recent, so both levels hold buckets
        span = info["buckets"][level]
        assert span is not None and span["buckets"] >= 1 and span["first"] <= span["last"] <= time.time()


def test_flow_ingest_uses_group_and_serves_metrics(flow):
    series = rf'sketchgen_ingest_records_total{{stream="{re.escape(flow["name"])}"}} 5000(\.0)?\b'
    assert re.search(series, flow["metrics"]), flow["metrics"][:3000]
    # offsets are committed to Kafka (for lag monitoring) under --group, not the default group
    assert all(c is not None for c in flow["committed"][flow["group"]]), flow["committed"]
    assert all(c is None for c in flow["committed"][f"sketchgen-{flow['name']}"]), flow["committed"]


def test_flow_worker_stops_cleanly_on_sigterm(flow):
    assert flow["worker exit"] == 0, flow["worker log"][-3000:]
    assert "Traceback" not in flow["worker log"]


def test_flow_status_human_readable(flow):
    status, out, err = flow["status text"]
    assert status == 0, err
    info = flow["status json"]
    assert flow["name"] in out
    assert info["spec"]["fingerprint"] in out and "d=2" in out and "m=200" in out
    assert re.search(r"\b5,?000\b", out), out
    for p in info["partitions"]:
        assert f"{flow['topic']}:{p['partition']}" in out
        assert re.search(rf"\b{p['count']:,}\b|\b{p['count']}\b", out), out


def test_flow_export_all_time(flow):
    status, _, err = flow["export"]
    assert status == 0, err
    spec, sketch = load_sketch(flow["work"] / "s.npz")
    assert sketch.count == 5000
    assert spec.fingerprint == flow["status json"]["spec"]["fingerprint"]
    assert spec.d == 2 and spec.m == 200
    assert np.all(np.abs(sketch.mean()) <= 1.0 + 1e-9)


def test_flow_export_window(flow):
    status, _, err = flow["export window"]
    assert status == 0, err
    _, total = load_sketch(flow["work"] / "s.npz")
    _, window = load_sketch(flow["work"] / "w.npz")
    assert window.count == 5000  # every record is recent
    assert np.allclose(window.total, total.total)


def test_flow_export_halflife(flow):
    status, _, err = flow["export halflife"]
    assert status == 0, err
    _, decayed = load_sketch(flow["work"] / "h.npz")
    assert math.isfinite(decayed.count)
    assert 0 < decayed.count <= 5000


def test_flow_fit_trains_on_export(flow):
    assert "fit" in flow, "export wrote no s.npz"
    result = ok(flow["fit"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 20
    assert summary["sketch_records"] == 5000
    assert (flow["work"] / "model" / MODEL_FILE).is_file()


# -- produce ---------------------------------------------------------------------------------------


def test_produce_csv_file(kafka_server, tmp_path):
    data = np.round(make_dataset("gmm", 250, seed=3), 6)
    np.savetxt(tmp_path / "rows.csv", data, delimiter=",", header="a,b", comments="", fmt="%.6f")
    topic = unique("t-csv")
    status, out, err = call(["produce", topic, "--file", str(tmp_path / "rows.csv"), "--partitions", "2",
                             "--kafka", kafka_server.bootstrap])
    assert status == 0, err
    assert json.loads(out)["rows"] == 250
    parts, values = consume_all(kafka_server.bootstrap, topic, 250)
    assert parts == {0, 1}
    assert len(values) == 250
    got = np.array([json.loads(v) for v in values])
    assert got.shape == (250, 2)
    assert np.allclose(np.sort(got, axis=0), np.sort(data, axis=0), atol=1e-9)


def test_produce_count_limits_file_rows(kafka_server, tmp_path):
    np.save(tmp_path / "rows.npy", make_dataset("circle", 100, seed=0))
    topic = unique("t-count")
    status, out, err = call(["produce", topic, "--file", str(tmp_path / "rows.npy"), "--count", "30",
                             "--format", "f32", "--batch-rows", "7", "--partitions", "1",
                             "--kafka", kafka_server.bootstrap])
    assert status == 0, err
    assert json.loads(out)["rows"] == 30
    _, values = consume_all(kafka_server.bootstrap, topic, 5)
    assert sorted(len(v) // 8 for v in values) == [2, 7, 7, 7, 7]  # 30 rows of 2 float32 in batches of 7


def test_produce_rate_limits(kafka_server):
    topic = unique("t-rate")
    start = time.monotonic()
    status, out, err = call(["produce", topic, "--dataset", "circle", "--count", "300", "--rate", "200",
                             "--partitions", "1", "--kafka", kafka_server.bootstrap])
    elapsed = time.monotonic() - start
    assert status == 0, err
    assert json.loads(out)["rows"] == 300
    assert elapsed >= 1.2, f"300 rows at 200 rows/s took only {elapsed:.2f} s"


# -- errors: one line, exit 2, no traceback ------------------------------------------------------------


@pytest.fixture(scope="module")
def error_fixtures(redis_server, tmp_path_factory):
    """Files and streams the error cases need."""
    work = tmp_path_factory.mktemp("stream-errors")
    np.save(work / "pilot3.npy", np.random.default_rng(0).normal(size=(100, 3)))
    bad = make_dataset("spiral", 50, seed=0)
    bad[17, 1] = np.nan
    np.save(work / "nan.npy", bad)
    np.savetxt(work / "nan.csv", bad, delimiter=",", fmt="%.10g")

    # a stream whose only records are two hours old: present all-time, absent from any recent window
    old = unique("old")
    assert call(["create", old, "--dim", "2", "--m", "16", "--redis", redis_server.url])[0] == 0
    store = store_of(redis_server)
    spec = store.get_spec(old)
    x = make_dataset("spiral", 10, seed=0)
    total, n = FeatureMap(spec).feature_sum(x)
    two_hours_ago = int(time.time()) - 7200
    buckets = [BucketDelta("fine", two_hours_ago // 10 * 10, total, n),
               BucketDelta("coarse", two_hours_ago // 300 * 300, total, n)]
    store.flush(old, store.claim(old, "old-topic", 0), 0, 10, total, n, buckets)

    empty = unique("empty")
    assert call(["create", empty, "--dim", "2", "--m", "16", "--redis", redis_server.url])[0] == 0
    return {"work": work, "old": old, "empty": empty}


def _error_cases() -> dict[str, tuple[list[str], str]]:
    """name -> (arguments with {redis} {kafka} {work} {old} {empty} placeholders, expected text)."""
    return {
        "status unknown stream": (["status", "no-such-stream-x", "--redis", "{redis}"], "no-such-stream-x"),
        "status --json unknown stream": (["status", "no-such-stream-x", "--json", "--redis", "{redis}"],
                                         "no-such-stream-x"),
        "export unknown stream": (["export", "no-such-stream-x", "--out", "{work}/u.npz", "--redis", "{redis}"],
                                  "no-such-stream-x"),
        "ingest unknown stream": (["ingest", "no-such-stream-x", "--topic", "t", "--redis", "{redis}",
                                   "--kafka", "{kafka}"], "no-such-stream-x"),
        "create unreachable redis": (["create", "x", "--dim", "2", "--redis", UNREACHABLE_REDIS], "127.0.0.1:1"),
        "status unreachable redis": (["status", "{old}", "--redis", UNREACHABLE_REDIS], "127.0.0.1:1"),
        "export unreachable redis": (["export", "{old}", "--out", "{work}/r.npz", "--redis", UNREACHABLE_REDIS],
                                     "127.0.0.1:1"),
        "ingest unreachable redis": (["ingest", "{old}", "--topic", "t", "--redis", UNREACHABLE_REDIS,
                                      "--kafka", "{kafka}"], "127.0.0.1:1"),
        "produce unreachable kafka": (["produce", "t-unreachable", "--dataset", "spiral", "--count", "10",
                                       "--kafka", UNREACHABLE_KAFKA], "127.0.0.1:1"),
        "pilot dimension mismatch": (["create", "dim-mismatch", "--dim", "2", "--estimate-from", "{work}/pilot3.npy",
                                      "--redis", "{redis}"], "dimension 3"),
        "pilot file missing": (["create", "no-pilot", "--dim", "2", "--estimate-from", "{work}/none.npy",
                                "--redis", "{redis}"], "none.npy"),
        "produce npy with NaN": (["produce", "t-nan", "--file", "{work}/nan.npy", "--kafka", "{kafka}"], "NaN"),
        "produce csv with NaN": (["produce", "t-nan", "--file", "{work}/nan.csv", "--kafka", "{kafka}"], "NaN"),
        "produce bad rate": (["produce", "t-rate", "--dataset", "spiral", "--rate", "0", "--kafka", "{kafka}"],
                             "--rate"),
        "export window without recent records": (["export", "{old}", "--out", "{work}/w.npz", "--window", "600",
                                                  "--redis", "{redis}"], "no records"),
        "export of an empty stream": (["export", "{empty}", "--out", "{work}/e.npz", "--redis", "{redis}"],
                                      "no records"),
        "export bad window": (["export", "{old}", "--out", "{work}/w.npz", "--window", "-5", "--redis", "{redis}"],
                              "window"),
        "invalid redis url scheme": (["status", "{old}", "--redis", "http://127.0.0.1:1/0"], "invalid Redis URL"),
        "invalid redis url port": (["status", "{old}", "--redis", "redis://127.0.0.1:notaport/0"],
                                   "invalid Redis URL"),
    }


ERROR_CASES = _error_cases()


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_cases_in_process(case, error_fixtures, redis_server, kafka_server):
    args, expected = ERROR_CASES[case]
    values = {"redis": redis_server.url, "kafka": kafka_server.bootstrap, **{k: str(v) for k, v in
                                                                              error_fixtures.items()}}
    start = time.monotonic()
    status, _, err = call([a.format(**values) for a in args])
    assert_one_error_line(status, err, expected)
    assert time.monotonic() - start < 10, "an unreachable server must fail fast"
    assert not any(Path(error_fixtures["work"]).glob("[urwe].npz")), "a failed export wrote a file"


def test_old_records_are_in_the_all_time_export(error_fixtures, redis_server):
    """The 'no recent records' stream does hold records: only the window is empty."""
    out = error_fixtures["work"] / "all.npz"
    status, _, err = call(["export", error_fixtures["old"], "--out", str(out), "--redis", redis_server.url])
    assert status == 0, err
    assert load_sketch(out)[1].count == 10


@pytest.fixture(scope="module")
def subprocess_errors(redis_server, error_fixtures):
    """A few error cases as real processes (the ones whose process-level behaviour matters)."""
    url, old = redis_server.url, error_fixtures["old"]
    commands = {
        "status unknown stream": ["status", unique("nope"), "--redis", url],
        "ingest unreachable kafka": ["ingest", old, "--topic", unique("t"), "--redis", url,
                                     "--kafka", UNREACHABLE_KAFKA],
        "produce unreachable kafka": ["produce", unique("t"), "--dataset", "spiral", "--kafka", UNREACHABLE_KAFKA],
        "export unreachable redis": ["export", old, "--out", str(error_fixtures["work"] / "x.npz"),
                                     "--redis", UNREACHABLE_REDIS],
    }
    results = {}
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        def timed(args):
            start = time.monotonic()
            return run(args), time.monotonic() - start

        futures = {k: pool.submit(timed, v) for k, v in commands.items()}
        results = {k: f.result() for k, f in futures.items()}
    return results


@pytest.mark.parametrize(
    "case, expected",
    [("status unknown stream", "no stream named"), ("ingest unreachable kafka", "127.0.0.1:1"),
     ("produce unreachable kafka", "127.0.0.1:1"), ("export unreachable redis", "127.0.0.1:1")],
)
def test_error_cases_in_subprocess(subprocess_errors, case, expected):
    result, elapsed = subprocess_errors[case]
    assert_one_error_line(result.returncode, result.stderr, expected)
    # kafka-python alone would retry a dead bootstrap for 30 s; the bound includes start-up (~1.5 s, ~9 s under load)
    assert elapsed < 20, f"took {elapsed:.1f} s"


# -- sketchgen up --------------------------------------------------------------------------------------


def test_up_serves_kafka_and_redis_until_sigint(tmp_path):
    kafka_port, redis_port = free_port(), free_port()
    while redis_port == kafka_port:
        redis_port = free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _cmd("up", "--kafka-port", str(kafka_port), "--redis-port", str(redis_port),
                 "--data-dir", str(tmp_path / "data")),
            stdout=log, stderr=subprocess.STDOUT, env=_env(),
        )
    try:
        deadline = time.monotonic() + 60
        while not (accepts(kafka_port) and accepts(redis_port)):
            assert proc.poll() is None, f"up exited {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"ports not open within 60 s:\n{log_path.read_text()}"
            time.sleep(0.2)

        client = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=10)
        try:
            assert client.ping() is True
        finally:
            client.close()

        bootstrap = f"127.0.0.1:{kafka_port}"
        topic = unique("t-up")
        from sketchgen.produce import ensure_topic

        ensure_topic(bootstrap, topic, 1)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            producer.send(topic, b"hello from the test").get(timeout=30)
        finally:
            producer.close(timeout=10)
        _, values = consume_all(bootstrap, topic, 1, timeout=30)
        assert values == [b"hello from the test"]

        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # stops its servers in order; SIGKILL would orphan them
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    text = log_path.read_text()
    assert "Traceback" not in text
    assert f"127.0.0.1:{kafka_port}" in text and f"127.0.0.1:{redis_port}" in text  # it says where the servers are
    assert (tmp_path / "data" / "redis").is_dir()  # --data-dir is where Redis keeps its data
    assert not accepts(kafka_port), "the Kafka port is still open after up exited"
    assert not accepts(redis_port), "the Redis port is still open after up exited"


@pytest.fixture(scope="module")
def up_taken():
    """`sketchgen up` where the Redis port, or the Kafka port, is held by someone else."""
    results = {}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        free = free_port()
        results = run_many(
            {
                "redis": ["up", "--kafka-port", str(free), "--redis-port", str(taken)],
                "kafka": ["up", "--kafka-port", str(taken), "--redis-port", str(free_port())],
            }
        )
    return taken, results


@pytest.mark.parametrize("which", ["redis", "kafka"])
def test_up_port_taken_fails_cleanly(up_taken, which):
    taken, results = up_taken
    result = results[which]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sketchgen: error:") and str(taken) in last and "in use" in last, result.stderr


@pytest.mark.parametrize("which", ["redis", "kafka"])
def test_up_port_taken_single_line(up_taken, which):
    taken, results = up_taken
    result = results[which]
    assert_one_error_line(result.returncode, result.stderr, str(taken))
