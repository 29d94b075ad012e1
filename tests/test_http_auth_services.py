"""Bearer tokens on the real services: a `sketchgen learn` process, a `sketchgen ingest` process and the live page.

The learner runs with ``--api-token-file`` (two tokens) on a stream already holding records: every data
endpoint answers 401 without a token (and with a wrong one) and 200 with either token, the probes, the
page's files and ``/openapi.json`` stay open, and ``/metrics`` is open. The ingest worker runs with a
metrics token from ``SKETCHGEN_METRICS_TOKEN_FILE``: ``/metrics`` needs that token (an API token does not
do), the probes stay open. In headless Chromium the live page opened as ``/#token=…`` draws samples and
drops the token from the address bar, and its footer's ``/status`` link opens the JSON fetched with the
token; opened without one it says the learner needs a token. A missing token file stops either command
at start with one line. The guarded learner serves its ``/openapi.json`` without a token, equal to the
checked-in document, and its operations with a ``bearer`` requirement are exactly those it answers 401.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from service_http.openapi import dumps
from service_http.openapi_security import API_SCHEME
from sketchgen.local_stack import free_port
from sketchgen.openapi_docs import DOCS
from sketchgen.produce import ensure_topic
from tests.auth_helpers import concrete, request
from tests.processes import Proc, wait_for
from tests.test_learner_checkpoints import new_stream
from tests.test_live_page import browser, console_errors, dom  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.slow

TOKENS = ("learner-token-one-0123456789", "learner-token-two-9876543210")
METRICS_TOKEN = "prometheus-scrape-token-5555"
#: Every endpoint that reveals the stream's distribution, and a path no route serves.
GUARDED = ["/sample?n=5", "/density?n=200&bins=8", "/history", "/status", "/no-such-endpoint"]
OPEN = ["/healthz", "/readyz", "/", "/index.html", "/static/app.js", "/static/style.css", "/openapi.json",
        "/metrics"]


@pytest.fixture(scope="module")
def guarded_learner(tmp_path_factory, redis_server):
    """A `sketchgen learn` process with two API tokens on a circle stream, ready (has a model): (port, tmp)."""
    tmp = tmp_path_factory.mktemp("auth-learner")
    (tmp / "tokens").write_text(f"# the learner's API tokens\n{TOKENS[0]}\n{TOKENS[1]}\n")
    _, name = new_stream(redis_server.url, "auth")
    port = free_port()
    learner = Proc(tmp, "learn", ["learn", name, "--port", str(port), "--redis", redis_server.url, "--device", "cpu",
                                  "--steps-per-round", "40", "--api-token-file", str(tmp / "tokens")])
    try:
        wait_for(lambda: request(port, "/readyz")[0] == 200, 120, "the learner to have a model")
        yield port, learner
    finally:
        assert learner.stop() == 0, learner.tail()
    for token in (*TOKENS, METRICS_TOKEN):
        assert token not in learner.log_path.read_text(), "a token in the learner's log"


def test_every_data_endpoint_of_a_real_learner_needs_a_token(guarded_learner):
    port, _ = guarded_learner
    for path in GUARDED:
        code, headers, body = request(port, path)
        assert code == 401, (path, code, body)
        assert headers["www-authenticate"] == 'Bearer realm="sketchgen"', path
        assert "error" in json.loads(body), path
        code, headers, body = request(port, path, token="wrong-token")
        assert code == 401 and 'error="invalid_token"' in headers["www-authenticate"], path
        assert b"wrong-token" not in body
        for token in TOKENS:
            code, _, body = request(port, path, token=token)
            assert code == (404 if path == "/no-such-endpoint" else 200), (path, code, body)
    _, _, body = request(port, "/sample?n=5", token=TOKENS[1])
    assert len(json.loads(body)["samples"]) == 5
    for path in OPEN:
        code, _, body = request(port, path)
        assert code == 200, (path, code, body)
    assert request(port, f"/status?access_token={TOKENS[0]}")[0] == 401


def test_the_contract_is_open_and_says_what_needs_the_token(guarded_learner):
    port, _ = guarded_learner
    code, _, body = request(port, "/openapi.json")
    assert code == 200
    assert dumps(json.loads(body)) == (DOCS / "learner.json").read_text()
    for path, item in json.loads(body)["paths"].items():
        for method, operation in item.items():
            needs_token = {API_SCHEME: []} in operation["security"]
            url = concrete(path, operation)
            assert (request(port, url)[0] == 401) == needs_token, (method, path)
            if needs_token:
                assert request(port, url, token=TOKENS[0])[0] == 200, (method, path)


def open_footer_link_with_the_token(browser, path: str) -> None:  # noqa: F811
    """Click the page's footer link to ``path``: the JSON, fetched with the token, opens in a new tab."""
    page = browser.current_window_handle
    link = f'footer a[href="{path}"]'
    browser.find_element("css selector", link).click()
    wait_for(lambda: dom(browser, link, "data-fetched") == "200", 30, f"the footer's {path} fetched with the token")
    (opened,) = [handle for handle in browser.window_handles if handle != page]
    browser.switch_to.window(opened)
    try:
        wait_for(lambda: browser.current_url.startswith("blob:") and "{" in browser.page_source, 30,
                 f"{path}'s JSON in the new tab")
        body = json.loads(browser.find_element("tag name", "body").text)
        assert "records" in body, body
    finally:
        browser.close()
        browser.switch_to.window(page)


def test_a_real_ingest_worker_with_a_metrics_token(tmp_path, kafka_server, redis_server, monkeypatch):
    (tmp_path / "metrics-token").write_text(METRICS_TOKEN + "\n")
    monkeypatch.setenv("SKETCHGEN_METRICS_TOKEN_FILE", str(tmp_path / "metrics-token"))
    _, name = new_stream(redis_server.url, "auth-ingest")
    topic = f"{name}-events"
    ensure_topic(kafka_server.bootstrap, topic, 1)
    port = free_port()
    worker = Proc(tmp_path, "ingest", ["ingest", name, "--topic", topic, "--kafka", kafka_server.bootstrap,
                                       "--redis", redis_server.url, "--metrics-port", str(port)])
    try:
        wait_for(lambda: request(port, "/readyz")[0] == 200, 60, "the worker to be ready")
        assert request(port, "/healthz")[0] == 200 and request(port, "/openapi.json")[0] == 200
        code, headers, _ = request(port, "/metrics")
        assert code == 401 and headers["www-authenticate"] == 'Bearer realm="sketchgen"'
        assert request(port, "/metrics", token=TOKENS[0])[0] == 401
        code, _, body = request(port, "/metrics", token=METRICS_TOKEN)
        assert code == 200 and b"sketchgen_ingest_records_total" in body
    finally:
        assert worker.stop() == 0, worker.tail()
    assert METRICS_TOKEN not in worker.log_path.read_text()


@pytest.mark.parametrize("command", [["learn", "s", "--port", "0"], ["ingest", "s", "--topic", "t"]])
def test_a_missing_or_empty_token_file_stops_the_command_at_start(tmp_path, command):
    (tmp_path / "empty").write_text("# nothing yet\n")
    for flag, path, message in (("--api-token-file", tmp_path / "absent", "cannot read the token file"),
                                ("--metrics-token-file", tmp_path / "empty", "holds no token")):
        proc = subprocess.run([sys.executable, "-m", "sketchgen", *command, flag, str(path),
                               "--redis", "redis://127.0.0.1:1/0", "--kafka", "127.0.0.1:1"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and str(path) in proc.stderr, proc.stderr


def test_the_live_page_with_and_without_a_token(guarded_learner, browser):  # noqa: F811
    port, _ = guarded_learner
    console_errors(browser)
    browser.get(f"http://127.0.0.1:{port}/?refresh=500#token={TOKENS[1]}")

    def drawn() -> bool:
        return (int(dom(browser, "body", "data-density-refreshes") or 0) >= 1
                and int(dom(browser, "#density", "data-total") or 0) > 0)

    wait_for(drawn, 60, "the page to draw samples with the token")
    assert TOKENS[1] not in browser.current_url and "#" not in browser.current_url
    assert dom(browser, "body", "data-error") == "" and dom(browser, "body", "data-auth") == ""
    open_footer_link_with_the_token(browser, "/status")
    browser.execute_script("sessionStorage.clear()")

    browser.get(f"http://127.0.0.1:{port}/?refresh=500&tab={uuid.uuid4().hex}")
    wait_for(lambda: dom(browser, "body", "data-auth") == "needed", 30, "the page to report the missing token")
    message = browser.find_element("css selector", "#error").text
    assert message.startswith("this learner needs a token: open") and "#token=" in message, message
    assert int(dom(browser, "body", "data-refreshes") or 0) == 0

    browser.get(f"http://127.0.0.1:{port}/?refresh=500#token=not-the-token")
    wait_for(lambda: dom(browser, "body", "data-auth") == "refused", 30, "the page to report the refused token")
    assert "refused" in browser.find_element("css selector", "#error").text
    browser.execute_script("sessionStorage.clear()")
