"""The learner's live page in real headless Chromium, against a real learner fed by a real stream.

A spiral stream is produced into the session's Tansu broker (half of it stamped two minutes ago,
so the drift score has a reference window), ingested by a `sketchgen ingest` process and learned
by a `sketchgen learn` process. Chromium (Debian's, driven by selenium through Debian's
chromedriver; nothing is downloaded) loads ``/?n=100000``: no console errors, the samples plot,
the loss and drift charts hold data, and a screenshot is saved under pytest's tmp dir (and as
``docs/img/live_page.png`` when ``SKETCHGEN_DOCS_SCREENSHOT=1``). When the learner dies the page
says so. ``/density`` bins 10⁵ samples server-side into a reply ~100× smaller than the raw
samples; a 3-D stream (an in-process learner on the same Redis) exercises the pair selector and
the per-coordinate marginals, and the endpoint's bad requests. A stream of typed records (a category, a bool,
a nullable float) draws its category and bool fields as bars named by their values; a numeric stream draws none.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from learner.generator import GeneratorConfig
from learner.http_api import serve
from learner.page import category_bars
from learner.service import LearnConfig, LearnerService
from sketch_store.pilot import spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import Sketch
from sketchgen.datasets import make_dataset
from sketchgen.local_stack import free_port
from sketchgen.produce import ensure_topic
from tests.processes import Proc, fetch, wait_for
from tests.test_learner_typed import typed_stream

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "live_page.png"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Debian's chromedriver, console messages kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (.ci/debian-packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[dict]:
    """Console entries of level SEVERE since the last call (reading the log drains it)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def dom(driver, css: str, attr: str) -> str:
    return driver.find_element("css selector", css).get_attribute(attr) or ""


def produce(bootstrap: str, topic: str, rows: np.ndarray, timestamp_ms: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for row in rows:
        producer.send(topic, json.dumps(row.tolist()).encode(), timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


@pytest.fixture(scope="module")
def spiral_learner(tmp_path_factory, kafka_server, redis_server):
    """A spiral stream (10 000 rows stamped 2 min ago, 10 000 now), an ingest worker and a learner."""
    tmp = tmp_path_factory.mktemp("live-page")
    name = f"page-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-events"
    store = SketchStore(connect(redis_server.url))
    store.create_stream(spec_from_pilot(make_dataset("spiral", 5000, seed=1), m=500, seed=0, name=name))
    ensure_topic(kafka_server.bootstrap, topic, 2)
    produce(kafka_server.bootstrap, topic, make_dataset("spiral", 10_000, seed=2), int((time.time() - 120) * 1000))
    produce(kafka_server.bootstrap, topic, make_dataset("spiral", 10_000, seed=3))
    worker = Proc(tmp, "ingest", ["ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                  "--redis", redis_server.url, "--flush-ms", "200"])
    port = free_port()
    learner = Proc(tmp, "learn", ["learn", name, "--port", str(port), "--redis", redis_server.url,
                                  "--checkpoint-every", "5", "--steps-per-round", "50", "--history-size", "500"])
    try:
        wait_for(lambda: store.total_count(name) == 20_000, 90, "the ingest of 20 000 rows")

        def trained() -> bool:
            code, body = fetch(port, "/history")
            return code == 200 and json.loads(body)["rounds"] >= 3 and json.loads(body)["drift"] is not None

        wait_for(trained, 120, "three rounds and a drift score")
        yield tmp, name, port, learner
    finally:
        learner_code = learner.stop()
        assert worker.stop() == 0, worker.tail()
        assert learner_code in (0, -signal.SIGKILL), learner.tail()


def test_density_endpoint_bins_100k_samples_server_side(spiral_learner):
    _, _, port, _ = spiral_learner
    code, body = fetch(port, "/density?n=100000&bins=64")
    assert code == 200, body
    d = json.loads(body)
    assert d["n"] == 100_000 and d["d"] == 2 and (d["x"], d["y"]) == (0, 1)
    counts = np.array(d["counts"])
    assert counts.shape == (64, 64)
    assert counts.sum() + d["outside"] == 100_000 and d["outside"] < 1000
    assert [m["dim"] for m in d["marginals"]] == [0, 1]
    assert json.loads(fetch(port, "/history")[1])["maxlen"] == 500  # --history-size
    assert all(sum(m["counts"]) > 99_000 for m in d["marginals"])
    code, raw = fetch(port, "/sample?n=100000")
    assert code == 200
    assert len(body) < 60_000 and len(body) * 50 < len(raw), (len(body), len(raw))  # bins, not points


def test_page_shows_samples_loss_drift_and_state_without_console_errors(spiral_learner, browser, tmp_path):
    _, name, port, _ = spiral_learner
    console_errors(browser)  # drop anything from before
    browser.get(f"http://127.0.0.1:{port}/?n=100000&refresh=1000")

    def drawn() -> bool:
        return (int(dom(browser, "body", "data-density-refreshes") or 0) >= 1
                and int(dom(browser, "#loss-chart", "data-points") or 0) >= 2
                and int(dom(browser, "#drift-chart", "data-points") or 0) >= 1)

    wait_for(drawn, 90, "the page to draw samples, loss and drift")
    assert dom(browser, "body", "data-error") == ""
    assert dom(browser, "#density", "data-n") == "100000"
    assert int(dom(browser, "#density", "data-total")) > 99_000  # all binned samples drawn
    assert int(dom(browser, "#density", "data-cells")) > 100  # a spiral, not a dot
    assert dom(browser, "#marginals", "data-count") == "2"
    assert browser.find_element("id", "stream").text == name
    assert browser.find_element("id", "role").text.lower() == "leader"
    assert "d = 2" in browser.find_element("id", "spec").text
    assert "m = 500" in browser.find_element("id", "spec").text
    scales = json.loads(fetch(port, "/history")[1])["spec"]["scales"]  # the default kernel: a ladder, listed
    assert len(scales) > 1 and f"{len(scales)} scales" in browser.find_element("id", "spec").text
    assert browser.find_element("id", "records").text == "20,000"
    wait_for(lambda: dom(browser, "#drift-fields", "data-count") == "2", 30, "the per-field drift list")
    listed = browser.find_element("id", "drift-fields").text.split("\n")  # top first, as /history has them
    top = [f["field"] for f in json.loads(fetch(port, "/history")[1])["drift_fields"]]
    assert sorted(line.split()[0] for line in listed) == ["x0", "x1"] and sorted(top) == ["x0", "x1"], listed
    if os.environ.get("SKETCHGEN_DOCS_SCREENSHOT") == "1":  # for the docs: a generator trained for a while
        wait_for(lambda: int(dom(browser, "#loss-chart", "data-points") or 0) >= 40, 300, "40 rounds", step=2)
        time.sleep(3)
    shot = tmp_path / "live_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("SKETCHGEN_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    assert console_errors(browser) == []


def test_page_reports_a_learner_that_went_away(spiral_learner, browser):
    """Run after the main page test: it kills the module's learner."""
    _, _, port, learner = spiral_learner
    browser.get(f"http://127.0.0.1:{port}/?refresh=500")
    wait_for(lambda: int(dom(browser, "body", "data-refreshes") or 0) >= 1, 30, "a first refresh")
    console_errors(browser)
    learner.proc.send_signal(signal.SIGKILL)
    learner.proc.wait(30)
    wait_for(lambda: dom(browser, "body", "data-error").startswith("cannot refresh"), 30, "the page to show an error")
    assert "cannot refresh" in browser.find_element("id", "error").text
    # the console check of the other test can fail: a failed request is a console error
    errors = console_errors(browser)
    assert any("net::ERR_" in e["message"] for e in errors), errors


# -- a 3-D stream: pair selector, marginals, bad requests ---------------------------------------------------


@pytest.fixture(scope="module")
def learner_3d(redis_server):
    """An in-process learner (real Redis, real HTTP) of a 3-D stream that starts empty."""
    name = f"page3d-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    data = rng.normal([0.0, 5.0, -3.0], [1.0, 2.0, 0.5], size=(5000, 3))
    store = SketchStore(connect(redis_server.url))
    store.create_stream(spec_from_pilot(data[:1000], m=200, seed=0, name=name))
    config = LearnConfig(stream=name, steps_per_round=20, checkpoint_every=3600, device="cpu",
                         generator=GeneratorConfig(latent=4, hidden=(32, 32), output=3))
    service = LearnerService(config, store)
    server = serve(service, 0, host="127.0.0.1")
    loop = threading.Thread(target=service.run, daemon=True)
    loop.start()
    try:
        yield store, name, data, service, server.server_port
    finally:
        service.stop_event.set()
        loop.join(30)
        server.shutdown()
        server.server_close()


def test_density_3d_pairs_marginals_and_bad_requests(learner_3d):
    store, name, data, service, port = learner_3d
    code, body = fetch(port, "/density?n=1000")
    assert code == 503 and json.loads(body)["error"]  # no data, no model yet: a clear 503
    spec = store.get_spec(name)
    sketch = Sketch.from_data(spec, data)
    store.flush(name, store.claim(name, "t", 0), 0, len(data), sketch.total, sketch.count)
    wait_for(lambda: service.rounds >= 3, 60, "three rounds")
    code, body = fetch(port, "/density?n=100000&x=2&y=0&bins=50")
    assert code == 200, body
    d = json.loads(body)
    assert (d["d"], d["x"], d["y"], d["bins"]) == (3, 2, 0, 50)
    assert np.array(d["counts"]).shape == (50, 50) and np.array(d["counts"]).sum() + d["outside"] == 100_000
    assert [m["dim"] for m in d["marginals"]] == [0, 1, 2]
    for m in d["marginals"]:
        assert len(m["counts"]) == 50 and m["lo"] < m["hi"] and sum(m["counts"]) > 99_000
    assert d["x_range"] == [d["marginals"][2]["lo"], d["marginals"][2]["hi"]]
    assert "categories" not in d  # a numeric stream's reply is unchanged
    assert len(body) < 60_000
    for query in ("x=3", "x=0&y=0", "y=-1", "bins=1", "bins=1000", "n=0", "n=100001", "x=abc", "n=1e5"):
        code, body = fetch(port, f"/density?{query}")
        assert code == 400 and json.loads(body)["error"], (query, body)
    assert fetch(port, "/static/../service.py")[0] == 404 and fetch(port, "/static/nope.js")[0] == 404
    code, body = fetch(port, "/status")
    assert code == 200 and json.loads(body)["stream"] == name  # still serving after the bad requests


def test_page_pair_selector_for_a_3d_stream(learner_3d, browser):
    from selenium.webdriver.support.ui import Select

    _, _, _, service, port = learner_3d
    wait_for(lambda: service.has_model(), 60, "a model")
    console_errors(browser)
    browser.get(f"http://127.0.0.1:{port}/?x=0&y=2&refresh=1000")
    wait_for(lambda: int(dom(browser, "body", "data-density-refreshes") or 0) >= 1, 60, "the samples plot")
    assert dom(browser, "#marginals", "data-count") == "3"
    assert (dom(browser, "#density", "data-x"), dom(browser, "#density", "data-y")) == ("0", "2")
    assert len(Select(browser.find_element("id", "sel-x")).options) == 3
    Select(browser.find_element("id", "sel-y")).select_by_value("1")
    wait_for(lambda: dom(browser, "#density", "data-y") == "1", 30, "the plot to switch to (x0, x1)")
    assert int(dom(browser, "#density", "data-total")) > 9_000  # the default n = 10 000
    assert not browser.find_element("id", "categories-block").is_displayed()  # no bars for numbers
    assert dom(browser, "#categories", "data-count") == "0"
    assert dom(browser, "body", "data-error") == ""
    assert console_errors(browser) == []


def test_demo_prints_the_page_url_first_and_serves_it(tmp_path):
    port = free_port()
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        demo = subprocess.Popen([sys.executable, "-m", "sketchgen", "demo", "--duration", "20", "--port", str(port),
                                 "--out", str(tmp_path / "demo.png")], stdout=stdout, stderr=stderr,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            first = wait_for(lambda: out.read_text().partition("\n")[0] if "\n" in out.read_text() else None, 60,
                             "the demo's first line")
            assert f"http://127.0.0.1:{port}/ " in first, first

            def served() -> bytes | None:
                code, body = fetch(port, "/")
                return body if code == 200 else None

            page = wait_for(served, 90, "the page")
            assert b'<canvas id="density"' in page and b"/static/app.js" in page
            assert demo.wait(180) == 0, err.read_text()[-3000:]
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait(30)
    assert (tmp_path / "demo.png").stat().st_size > 0


def test_page_for_a_1d_stream_shows_the_marginal(redis_server, browser):
    name = f"page1d-{uuid.uuid4().hex[:8]}"
    data = np.random.default_rng(1).normal(2.0, 0.5, size=(3000, 1))
    store = SketchStore(connect(redis_server.url))
    store.create_stream(spec_from_pilot(data[:1000], m=100, seed=0, name=name))
    sketch = Sketch.from_data(store.get_spec(name), data)
    store.flush(name, store.claim(name, "t", 0), 0, len(data), sketch.total, sketch.count)
    config = LearnConfig(stream=name, steps_per_round=20, checkpoint_every=3600, device="cpu",
                         generator=GeneratorConfig(latent=2, hidden=(16,), output=1))
    service = LearnerService(config, store)
    server = serve(service, 0, host="127.0.0.1")
    loop = threading.Thread(target=service.run, daemon=True)
    loop.start()
    try:
        wait_for(lambda: service.has_model(), 60, "a model")
        code, body = fetch(server.server_port, "/density?n=5000")
        assert code == 200 and json.loads(body)["counts"] is None and json.loads(body)["y"] is None
        console_errors(browser)
        browser.get(f"http://127.0.0.1:{server.server_port}/?refresh=1000")
        wait_for(lambda: int(dom(browser, "body", "data-density-refreshes") or 0) >= 1, 60, "the samples plot")
        assert dom(browser, "#marginals", "data-count") == "1"
        assert int(dom(browser, "#marginals canvas", "data-total")) > 9_900
        assert dom(browser, "body", "data-error") == "" and console_errors(browser) == []
    finally:
        service.stop_event.set()
        loop.join(30)
        server.shutdown()
        server.server_close()


# -- a stream of typed records: category and bool fields as bars ------------------------------------------


@pytest.fixture(scope="module")
def typed_learner(redis_server):
    """An in-process learner (real Redis, real HTTP) of a typed stream: category cut (a, b, c), bool flag, amount."""
    store, name, encoder = typed_stream(redis_server.url)
    config = LearnConfig(stream=name, steps_per_round=20, checkpoint_every=3600, device="cpu",
                         generator=GeneratorConfig(latent=4, hidden=(32, 32), output=encoder.dim))
    service = LearnerService(config, store)
    server = serve(service, 0, host="127.0.0.1")
    loop = threading.Thread(target=service.run, daemon=True)
    loop.start()
    try:
        wait_for(lambda: service.model is not None and service.model.steps > 0, 60, "a served typed model")
        yield service, encoder, server.server_port
    finally:
        service.stop_event.set()
        loop.join(30)
        server.shutdown()
        server.server_close()


def test_category_bars_count_the_values_sample_decodes(typed_learner):
    service, encoder, _ = typed_learner
    rows = service.model.sample(5000, seed=3)
    bars = category_bars(encoder, rows)
    records = encoder.decode_many(rows, nested=False)
    assert [(b["field"], b["type"], b["labels"]) for b in bars] == [("cut", "category", ["a", "b", "c"]),
                                                                  ("flag", "bool", ["false", "true"])]
    assert bars[0]["counts"] == [sum(r["cut"] == v for r in records) for v in "abc"]
    assert bars[1]["counts"] == [sum(r["flag"] is v for r in records) for v in (False, True)]
    assert all(sum(b["counts"]) == 5000 for b in bars)


def test_density_of_a_typed_stream_carries_category_counts(typed_learner):
    _, _, port = typed_learner
    code, body = fetch(port, "/density?n=20000&bins=32")
    assert code == 200, body
    d = json.loads(body)
    cats = {c["field"]: c for c in d["categories"]}
    assert list(cats) == ["cut", "flag"] and cats["cut"]["labels"] == ["a", "b", "c"]
    assert all(sum(c["counts"]) == d["n"] - d["nonfinite"] for c in cats.values())
    assert len(d["marginals"]) == d["d"]  # the encoded coordinates keep their marginals


def test_page_draws_a_typed_streams_categories_as_named_bars(typed_learner, browser, tmp_path):
    _, _, port = typed_learner
    console_errors(browser)
    browser.get(f"http://127.0.0.1:{port}/?refresh=1000&n=10000")
    wait_for(lambda: int(dom(browser, "body", "data-density-refreshes") or 0) >= 1, 60, "the samples plot")
    assert browser.find_element("id", "categories-block").is_displayed()
    assert dom(browser, "#categories", "data-count") == "2"
    shown = {}
    for card in browser.find_elements("css selector", "#categories .catfield"):
        rows = card.find_elements("css selector", ".bar-row")
        names = [r.find_element("css selector", ".bar-label").text for r in rows]
        shares = [float(r.get_attribute("data-share")) for r in rows]
        widths = [r.find_element("css selector", ".bar-fill").size["width"] for r in rows]
        assert sum(shares) == pytest.approx(1.0) and max(widths) > 0, (names, shares, widths)
        shown[card.get_attribute("data-field")] = names
    assert shown == {"cut": ["a", "b", "c"], "flag": ["false", "true"]}
    assert "cut (category)" in browser.find_element("id", "categories").text
    browser.execute_script("document.getElementById('categories-block').scrollIntoView()")
    shot = tmp_path / "typed_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert dom(browser, "body", "data-error") == "" and console_errors(browser) == []
