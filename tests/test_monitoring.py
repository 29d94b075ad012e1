"""The alerts and the dashboard against a real Prometheus (Debian's ``prometheus`` package, installed by
``.ci/run`` from ``.ci/debian-packages``; nothing is installed here).

``promtool`` checks the PrometheusRule's rules and runs their unit tests (``tests/prometheus/rules_test.yaml``).
Then a Prometheus on loopback (1 s scrapes, temporary storage, the same rules loaded) scrapes a real
``sketchgen ingest`` worker and a real ``sketchgen learn`` fed by a live stream on the session's Kafka and
Redis; every dashboard query must return data and every alert and recording rule must evaluate without
error. Finally the alerts must react to the stream: bad records raise the reject-rate alert, a stopped
learner raises the no-leader alert.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from sketch_store.pilot import spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketchgen.datasets import make_dataset
from sketchgen.local_stack import free_port
from sketchgen.produce import ensure_topic
from tests import deploy_assets as assets
from tests.processes import Proc, fetch, get, wait_for

pytestmark = pytest.mark.slow

RATE_INTERVAL = "20s"  # what Grafana's $__rate_interval becomes here (>= 4 scrape intervals)
DEBIAN_HINT = "install Debian's prometheus package (listed in .ci/debian-packages; .ci/run installs it)"


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: {DEBIAN_HINT}")
    return path


# -- promtool ---------------------------------------------------------------------------------------------

def test_promtool_checks_the_rules_and_runs_their_unit_tests(tmp_path):
    rules = assets.write_rules_file(tmp_path / "rules.yaml")
    check = subprocess.run([tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True)
    n_rules = len(assets.alert_rules()) + len(assets.recording_rules())
    assert check.returncode == 0 and f"SUCCESS: {n_rules} rules found" in check.stdout, check.stdout + check.stderr
    shutil.copy(assets.ROOT / "tests" / "prometheus" / "rules_test.yaml", tmp_path / "rules_test.yaml")
    unit = subprocess.run([tool("promtool"), "test", "rules", "rules_test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    groups = assets.rule_groups()
    groups[1]["rules"][0]["expr"] = "sum by (stream) (rate(sketchgen_ingest_records_total[5m])"  # unbalanced
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run([tool("promtool"), "check", "rules", str(broken)], capture_output=True, text=True)
    assert check.returncode != 0 and "FAILED" in check.stdout + check.stderr


# -- a live stack: producer → Kafka → ingest → Redis → learner, scraped by Prometheus -------------------------

@dataclass
class Live:
    stream: str
    prometheus_port: int
    ingest: Proc
    learner: Proc
    learner_port: int


class Producer(threading.Thread):
    """A live stream: ~200 spiral rows/s as one-row JSON records, and one bad record in 21 (≈ 4.8 %)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        self.topic = topic
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        rows = make_dataset("spiral", 200_000, seed=3)
        while not self.stop_event.is_set():
            for row in rows[self.sent % 199_000:][:20]:
                self.producer.send(self.topic, json.dumps(row.tolist()).encode())
            self.producer.send(self.topic, b"not json")
            self.sent += 20
            self.stop_event.wait(0.1)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
        self.producer.close()


def start_prometheus(tmp: Path, targets: dict[str, int]) -> tuple[subprocess.Popen, int]:
    """Prometheus on loopback, 1 s scrapes and rule evaluations, the PrometheusRule's rules loaded."""
    assets.write_rules_file(tmp / "rules.yaml")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for job, port in targets.items()],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(tmp / "prometheus.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
        )
    try:
        wait_for(lambda: proc.poll() is None and http_status(port, "/-/ready") == 200, 60, "Prometheus ready")
    except AssertionError:
        proc.kill()
        raise AssertionError((tmp / "prometheus.log").read_text()[-3000:]) from None
    return proc, port


def http_status(port: int, path: str) -> int:
    return fetch(port, path, timeout=5)[0]


def api(port: int, path: str, **params: str) -> dict:
    """GET a Prometheus HTTP API path; PromQL errors come back as ``{"status": "error", "error": ...}``."""
    return get(port, f"{path}?{urllib.parse.urlencode(params)}")[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory, kafka_server, redis_server):
    tmp = tmp_path_factory.mktemp("monitoring")
    stream = f"mon-{uuid.uuid4().hex[:8]}"
    topic = f"{stream}-events"
    store = SketchStore(connect(redis_server.url))
    store.create_stream(spec_from_pilot(make_dataset("spiral", 3000, seed=1), m=300, seed=0, name=stream))
    ensure_topic(kafka_server.bootstrap, topic, 2)
    producer = Producer(kafka_server.bootstrap, topic)
    producer.start()
    ingest_port, learner_port = free_port(), free_port()
    ingest = Proc(tmp, "ingest", ["ingest", stream, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                  "--redis", redis_server.url, "--flush-ms", "200",
                                  "--metrics-port", str(ingest_port)])
    learner = Proc(tmp, "learner", ["learn", stream, "--port", str(learner_port), "--redis", redis_server.url,
                                    "--steps-per-round", "50", "--checkpoint-every", "2"])
    prometheus = None
    try:
        prometheus, port = start_prometheus(tmp, {"sketchgen-ingest": ingest_port, "sketchgen-learner": learner_port})
        wait_for(lambda: learner.proc.poll() is None and get(learner_port, "/readyz")[0] == 200, 180,
                 "the learner to lead with a model")
        yield Live(stream, port, ingest, learner, learner_port)
    finally:
        producer.stop()
        if prometheus is not None:
            prometheus.send_signal(signal.SIGTERM)
            prometheus.wait(30)
        learner.stop()
        assert ingest.stop() == 0, ingest.tail()


def finite_values(result: dict) -> list[float]:
    """The finite sample values of an instant-query result (vector or scalar)."""
    data = result.get("data", {})
    if data.get("resultType") == "vector":
        values = [float(s["value"][1]) for s in data["result"]]
    elif data.get("resultType") == "scalar":
        values = [float(data["result"][1])]
    else:
        values = []
    return [v for v in values if math.isfinite(v)]


def test_every_scraped_metric_is_a_documented_export_and_every_export_is_scraped(live):
    exposed = assets.exposed_series_names()

    def scraped() -> set[str]:
        names = api(live.prometheus_port, "/api/v1/label/__name__/values")["data"]
        return {n for n in names if n.startswith("sketchgen_") and not n.endswith("_created")}

    wait_for(lambda: exposed <= scraped(), 90, "every exported series to be scraped")
    assert scraped() <= exposed, f"scraped but not documented: {scraped() - exposed}"


def test_every_dashboard_query_returns_data(live):
    queries = assets.dashboard_queries({"$__rate_interval": RATE_INTERVAL, "$stream": live.stream})
    assert len(queries) >= 9
    for where, expr in queries:
        assert "$" not in expr, f"{where}: unsubstituted variable in {expr}"
    status: dict[str, str] = {}

    def all_have_data() -> bool:
        for where, expr in queries:
            result = api(live.prometheus_port, "/api/v1/query", query=expr)
            assert result["status"] == "success", f"{where}: {result.get('error')} in {expr}"
            status[where] = "ok" if finite_values(result) else f"no data: {expr}"
        return all(s == "ok" for s in status.values())

    try:
        wait_for(all_have_data, 180, "data in every panel", step=2)
    except AssertionError:
        missing = {w: s for w, s in status.items() if s != "ok"}
        raise AssertionError(f"panels without data after 180 s: {json.dumps(missing, indent=1)}") from None
    stream_panels = [expr for _, expr in queries if "by (stream" in expr]
    for expr in stream_panels:  # grouped by stream: the series is our stream's
        series = api(live.prometheus_port, "/api/v1/query", query=expr)["data"]["result"]
        assert {s["metric"].get("stream") for s in series} == {live.stream}, expr


def test_the_dashboard_variable_query_lists_the_stream(live):
    variable = next(v for v in assets.dashboard()["templating"]["list"] if v["name"] == "stream")
    metric = variable["definition"].split("(")[1].split(",")[0]
    values = api(live.prometheus_port, "/api/v1/label/stream/values", **{"match[]": metric})["data"]
    assert live.stream in values


def test_every_alert_and_recording_rule_evaluates_without_error(live):
    rules = assets.alert_rules() + assets.recording_rules()
    for rule in rules:
        result = api(live.prometheus_port, "/api/v1/query", query=rule["expr"])
        assert result["status"] == "success", f"{rule.get('alert') or rule.get('record')}: {result.get('error')}"
    names = {r.get("alert") or r.get("record") for r in rules}

    def evaluated() -> dict[str, dict]:
        groups = api(live.prometheus_port, "/api/v1/rules")["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        return loaded if set(loaded) == names and all(r["health"] != "unknown" for r in loaded.values()) else {}

    loaded = wait_for(evaluated, 30, "Prometheus to evaluate every rule")
    bad = {n: r.get("lastError") for n, r in loaded.items() if r["health"] != "ok"}
    assert not bad, bad
    leader_loss = api(live.prometheus_port, "/api/v1/query", query="sketchgen:learner_loss:leader")
    assert finite_values(leader_loss), "the leader-loss recording rule has no data"


def active_alerts(port: int, stream: str) -> dict[str, str]:
    alerts = api(port, "/api/v1/alerts")["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in alerts if a["labels"].get("stream") == stream}


def test_alerts_react_to_bad_records_and_to_a_lost_leader(live):
    """Runs last: it stops the module's learner."""
    port = live.prometheus_port
    wait_for(lambda: "SketchgenIngestRejectRateHigh" in active_alerts(port, live.stream), 120,
             "the reject-rate alert (≈ 4.8 % bad records) to become pending")
    healthy = active_alerts(port, live.stream)
    for name in ("SketchgenNoLearnerLeader", "SketchgenIngestStalled", "SketchgenSketchNotUpdated"):
        assert name not in healthy, healthy
    assert live.learner.stop() == 0, live.learner.tail()
    wait_for(lambda: "SketchgenNoLearnerLeader" in active_alerts(port, live.stream), 90,
             "the no-leader alert after the learner stopped")
