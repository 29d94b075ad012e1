"""sketchgen.client against a real learner (real Redis, real LearnerService, real HTTP) and tiny real HTTP servers.

The learner answers the client's calls: numeric samples as an array in the data's units, a typed stream's
records, the server's message of a 400, a 503 "no model yet" as :class:`NoModelYetError`, a 429 while its one
sampling slot is held (given up on, or retried until the slot frees). Tiny ``http.server`` servers check what the
learner cannot show: the 429 retry honouring ``Retry-After``, the bearer token sent and kept out of every message,
and a kept-alive connection the server dropped being reopened.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import threading
import time
import uuid

import numpy as np
import pytest

from sketch_store.pilot import spec_from_pilot
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketchgen.client import (
    AuthError,
    BadRequestError,
    BusyError,
    LearnerClient,
    LearnerUnavailableError,
    LearnerUnreachableError,
    NoModelYetError,
    StreamKindError,
    metric_value,
)
from sketchgen.datasets import make_dataset
from sketchgen.local_stack import free_port
from tests.processes import wait_for
from tests.test_learner_checkpoints import GCONF, feed, running
from tests.test_learner_http import Gate, idle_service, snapshot
from tests.test_learner_typed import typed_stream

#: Where the test stream's data sit: far from the standardised origin, so raw units show.
OFFSET, SCALE = np.array([1000.0, -500.0]), 50.0


def offset_stream(redis_url: str) -> tuple[str, np.ndarray]:
    """A circle stream scaled by SCALE and moved to OFFSET, flushed straight into Redis: (its name, its data)."""
    store = SketchStore(connect(redis_url))
    name = f"client-{uuid.uuid4().hex[:8]}"
    data = make_dataset("circle", 5000, seed=3) * SCALE + OFFSET
    store.create_stream(spec_from_pilot(data, m=64, seed=0, name=name))
    feed(store, name, data)
    return name, data


@pytest.mark.slow
def test_numeric_samples_come_as_an_array_in_the_data_units(redis_server):
    name, data = offset_stream(redis_server.url)
    with running(redis_server.url, name) as (service, port, _):
        client = LearnerClient(f"http://127.0.0.1:{port}", timeout=30)
        wait_for(lambda: service.model is not None and service.model.steps > 0, 60, "a served model")
        assert client.ready() and client.healthy()
        x = client.sample(2000)
        assert x.shape == (2000, 2) and x.dtype == np.float64 and np.isfinite(x).all()
        # the data's units: centred near OFFSET at the data's spread, not standardised around 0
        assert np.all(np.abs(x.mean(axis=0) - OFFSET) < 3 * data.std(axis=0)), x.mean(axis=0)
        assert np.all((x.std(axis=0) > data.std(axis=0) / 10) & (x.std(axis=0) < data.std(axis=0) * 10))
        status = client.status()
        assert status["stream"] == name and status["steps"] > 0
        history = client.history(since=time.time() + 3600)
        assert history["stream"] == name and history["points"] == []
        density = client.density(n=3000, bins=8)
        assert density["n"] + density["nonfinite"] == 3000 and len(density["counts"]) == 8
        assert metric_value(client.metrics(), "sketchgen_learner_steps_total") > 0
        with pytest.raises(StreamKindError, match=r"numeric: use sample\(n\)"):
            client.sample_records(5)


@pytest.mark.slow
def test_a_typed_stream_gives_records(redis_server):
    _, name, _ = typed_stream(redis_server.url)
    with running(redis_server.url, name) as (service, port, _):
        client = LearnerClient(f"127.0.0.1:{port}")  # no scheme: http
        wait_for(lambda: service.model is not None and service.model.steps > 0, 60, "a served typed model")
        records = client.sample_records(50)
        assert len(records) == 50 and all(list(r) == ["cut", "flag", "amount"] for r in records)
        assert all(r["cut"] in {"a", "b", "c"} and isinstance(r["flag"], bool) for r in records)
        with pytest.raises(StreamKindError, match=r"has typed records: use sample_records\(n\)"):
            client.sample(5)


@pytest.mark.slow
def test_a_bad_n_raises_with_the_servers_message_and_no_model_is_a_503_of_its_own(redis_server):
    name, _ = offset_stream(redis_server.url)
    with idle_service(redis_server.url, name) as (service, port):
        client = LearnerClient(f"http://127.0.0.1:{port}")
        with pytest.raises(BadRequestError) as bad:
            client.sample(0)
        assert bad.value.status == 400 and bad.value.error.startswith("n must be")  # the server's own words
        assert "between 1 and 100000" in bad.value.error and bad.value.error in str(bad.value)
        with pytest.raises(BadRequestError, match="x and y must be two different coordinates"):
            client.density(x=1, y=1)
        with pytest.raises(NoModelYetError) as none:
            client.sample(10)
        assert none.value.status == 503 and none.value.error.startswith("no model yet")
        with pytest.raises(NoModelYetError):
            client.density(n=100)
        assert client.healthy() and not client.ready()
        service.model = snapshot(service)
        assert client.sample(3).shape == (3, 2)


@pytest.mark.slow
def test_a_429_gives_up_or_retries_until_the_learners_one_slot_frees(redis_server):
    name, _ = offset_stream(redis_server.url)
    Gate.entered.clear()
    Gate.opened.clear()
    with idle_service(redis_server.url, name, max_concurrent_samples=1) as (service, port):
        service.model = snapshot(service, Gate(GCONF))
        url = f"http://127.0.0.1:{port}"
        holder = threading.Thread(target=lambda: LearnerClient(url).sample(10), daemon=True)
        holder.start()
        assert Gate.entered.wait(30)  # the one slot is taken until the gate opens
        with pytest.raises(BusyError) as busy:
            LearnerClient(url, max_retries=0).sample(10)
        assert busy.value.status == 429 and busy.value.retry_after == 1.0 and "busy" in busy.value.error
        got: list[np.ndarray] = []
        patient = threading.Thread(target=lambda: got.append(LearnerClient(url, max_retries=10).sample(10)))
        patient.start()
        time.sleep(1.5)  # it has been turned away at least once
        Gate.opened.set()
        patient.join(30)
        holder.join(30)
        assert len(got) == 1 and got[0].shape == (10, 2)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers each GET with the next of the server's ``script`` [(status, headers, body)], repeating the last;
    records (time, path, headers, client port) of each request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        server.seen.append((time.monotonic(), self.path, dict(self.headers), self.client_address[1]))
        status, headers, body = server.script[min(len(server.seen), len(server.script)) - 1]
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = server.drop  # drop: close without saying so (as an idle keep-alive timeout does)


@contextlib.contextmanager
def scripted(*script: tuple[int, dict[str, str], bytes], drop: bool = False):
    """A tiny real HTTP/1.1 server answering ``script`` in order: (its URL, its list of seen requests)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.script, server.seen, server.drop = list(script), [], drop
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.seen
    finally:
        server.shutdown()
        server.server_close()


OK = (200, {}, b'{"samples": [[1.0, null], [3.0, 4.0]]}')
BUSY = (429, {"Retry-After": "1"}, b'{"error": "busy: 2 sampling requests are running; retry in 1 s"}')


def test_a_429_is_retried_after_its_retry_after():
    with scripted(BUSY, OK) as (url, seen):
        x = LearnerClient(url).sample(2)
    assert np.array_equal(x, [[1.0, np.nan], [3.0, 4.0]], equal_nan=True)
    assert len(seen) == 2 and 1.0 <= seen[1][0] - seen[0][0] < 1.5
    with scripted(BUSY) as (url, seen), pytest.raises(BusyError, match="gave up after 3 tries") as busy:
        LearnerClient(url, max_retries=2, max_retry_wait=0.1).sample(2)
    assert len(seen) == 3 and busy.value.retry_after == 1.0 and seen[2][0] - seen[0][0] < 0.5


def test_an_overloaded_503_is_retried_and_no_model_yet_is_not():
    overloaded = (503, {"Retry-After": "0"}, b'{"error": "overloaded: 64 requests in flight"}')
    with scripted(overloaded, OK) as (url, seen):
        assert LearnerClient(url).sample(2).shape == (2, 2)
    assert len(seen) == 2
    no_model = (503, {}, b'{"error": "no model yet: the stream has no data, or training has not started"}')
    with scripted(no_model, OK) as (url, seen), pytest.raises(NoModelYetError):
        LearnerClient(url).sample(2)
    assert len(seen) == 1
    with scripted(overloaded) as (url, seen), pytest.raises(LearnerUnavailableError, match="gave up after 2 tries"):
        LearnerClient(url, max_retries=1).status()


def test_the_token_is_sent_and_never_shown(caplog):
    token = "s3cret-" + uuid.uuid4().hex
    denied = (401, {"WWW-Authenticate": 'Bearer error="invalid_token"'},
              json.dumps({"error": f"token {token} is not valid"}).encode())
    caplog.set_level(logging.DEBUG, logger="sketchgen.client")
    with scripted(OK, denied) as (url, seen):
        client = LearnerClient(url, token=token)
        client.sample(2)
        with pytest.raises(AuthError) as refused:
            client.status()
    assert [headers["Authorization"] for _, _, headers, _ in seen] == [f"Bearer {token}"] * 2
    assert refused.value.status == 401 and token not in str(refused.value) and "***" in refused.value.error
    assert token not in repr(client) and "***" in repr(client)
    assert caplog.records and not any(token in r.getMessage() for r in caplog.records)
    with scripted(OK) as (url, seen):
        LearnerClient(url).sample(2)
    assert "Authorization" not in seen[0][2]


def test_a_kept_alive_connection_is_reused_and_reopened_when_the_server_dropped_it():
    with scripted(OK) as (url, seen):
        client = LearnerClient(url)
        for _ in range(3):
            client.sample(2)
    assert len({port for *_, port in seen}) == 1  # one connection for the three requests
    with scripted(OK, drop=True) as (url, seen):
        client = LearnerClient(url)
        for _ in range(3):
            assert client.sample(2).shape == (2, 2)
    assert len(seen) == 3 and len({port for *_, port in seen}) == 3


def test_nothing_listening_is_unreachable_and_not_healthy():
    client = LearnerClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(LearnerUnreachableError) as gone:
        client.status()
    assert gone.value.status is None
    assert not client.healthy() and not client.ready()
    with pytest.raises(ValueError, match="token="):
        LearnerClient("http://user:pw@127.0.0.1:1")
