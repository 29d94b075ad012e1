"""The learner's HTTP cannot stall training, never answers NaN, and fails one request at a time.

Real Redis, real :class:`LearnerService` and real HTTP: sampling draws from the published
snapshot without the training lock; at most ``max_concurrent_samples`` requests sample at once
and the others get 429 with ``Retry-After`` immediately; a replica without a model is unready
with a reason; an exception in a handler is a JSON 500 logged once; NaN and Infinity never reach
a JSON body. The load test hammers a `sketchgen learn` process with 8 clients asking for the
cap (10⁵ samples) while it trains, and measures the training rate, the answers and the RSS.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
import time

import numpy as np
import pytest
import torch

from learner.generator import Generator
from learner.history import HistoryPoint
from learner.http_api import serve
from learner.service import LearnConfig, LearnerService
from learner.serving import ServedModel
from learner.trainer import Trainer
from sketch_store.leadership import Lease
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketchgen.local_stack import free_port
from tests.processes import Proc, get, wait_for
from tests.test_learner_checkpoints import GCONF, new_stream, running

pytestmark = pytest.mark.slow


def request(port: int, path: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one GET on its own connection; (0, {}, b"") if the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        # header names are case-insensitive (the server sends them in lower case): keyed here as Title-Case
        return resp.status, {k.title(): v for k, v in resp.getheaders()}, resp.read()
    except (OSError, http.client.HTTPException):
        return 0, {}, b""
    finally:
        conn.close()


def strict_json(body: bytes) -> object:
    """Parse ``body`` as standard JSON: NaN or Infinity in it fail the test."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON reply")

    return json.loads(body, parse_constant=refuse)


@contextlib.contextmanager
def idle_service(redis_url: str, name: str, **settings):
    """A LearnerService whose loop does not run (the test sets its state), with its HTTP API: (service, port)."""
    config = LearnConfig(stream=name, device="cpu", generator=GCONF, **settings)
    service = LearnerService(config, SketchStore(connect(redis_url)))
    server = serve(service, 0, host="127.0.0.1")
    try:
        yield service, server.server_port
    finally:
        server.shutdown()
        server.server_close()


def snapshot(service: LearnerService, generator: Generator | None = None) -> ServedModel:
    """A served model for the service's spec, its generator optionally replaced by ``generator``."""
    model = ServedModel.from_trainer(Trainer(service.spec, GCONF), incarnation="test")
    return model if generator is None else ServedModel(generator.eval(), model.mean, model.std, model.fingerprint,
                                                       model.incarnation, model.steps)


class Holes(Generator):
    """A generator with NaN in x0 of every third sample and +Inf in x1 of the next."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = super().forward(u).clone()
        y[::3, 0] = float("nan")
        y[1::3, 1] = float("inf")
        return y


class Gate(Generator):
    """A generator whose forward pass waits until the test opens the gate."""

    entered = threading.Event()
    opened = threading.Event()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Gate.entered.set()
        assert Gate.opened.wait(60)
        return super().forward(u)


def test_nan_and_infinity_never_reach_a_json_reply(redis_server):
    _, name = new_stream(redis_server.url, "nanjson")
    with idle_service(redis_server.url, name) as (service, port):
        service.last_loss, service.drift.score = float("nan"), float("inf")
        service.history.record(HistoryPoint(time=time.time(), records=1.0, leader=True, loss=float("nan"),
                                            floor=float("-inf"), drift=float("inf"), steps=3))
        service.model = snapshot(service, Holes(GCONF))
        code, _, body = request(port, "/status")
        status = strict_json(body)
        assert code == 200 and status["loss"] is None and status["drift_score"] is None
        code, _, body = request(port, "/history")
        history = strict_json(body)
        assert code == 200 and history["loss"] is None and history["drift"] is None
        assert history["points"][-1]["loss"] is None and history["points"][-1]["drift"] is None
        code, _, body = request(port, "/sample?n=30")
        samples = strict_json(body)["samples"]
        assert code == 200 and len(samples) == 30
        assert [row[0] for row in samples[::3]] == [None] * 10 and [row[1] for row in samples[1::3]] == [None] * 10
        assert all(isinstance(v, float) for v in samples[2])
        code, _, body = request(port, "/density?n=3000&bins=10")
        density = strict_json(body)
        assert code == 200 and density["nonfinite"] == 2000 and density["n"] == 1000
        assert sum(map(sum, density["counts"])) + density["outside"] == 1000


def test_sampling_never_waits_for_the_training_lock(redis_server):
    _, name = new_stream(redis_server.url, "nolock")
    with idle_service(redis_server.url, name) as (service, port):
        service.model = snapshot(service)
        with service.lock:  # as if a training slice were running
            start = time.monotonic()
            code, _, body = request(port, "/sample?n=50000", timeout=20)
            elapsed = time.monotonic() - start
            assert code == 200 and len(strict_json(body)["samples"]) == 50_000
            code, _, _ = request(port, "/density?n=20000", timeout=20)
            assert code == 200
        assert elapsed < 10, elapsed


def test_beyond_the_concurrency_limit_requests_get_429_at_once(redis_server):
    _, name = new_stream(redis_server.url, "busy")
    Gate.entered.clear()
    Gate.opened.clear()
    with idle_service(redis_server.url, name, max_concurrent_samples=1) as (service, port):
        service.model = snapshot(service, Gate(GCONF))
        first: list[tuple[int, dict[str, str], bytes]] = []
        holder = threading.Thread(target=lambda: first.append(request(port, "/sample?n=10")))
        holder.start()
        try:
            assert Gate.entered.wait(20), "the first request never started sampling"
            for path in ("/sample?n=10", "/density?n=100"):
                start = time.monotonic()
                code, headers, body = request(port, path, timeout=10)
                assert code == 429 and time.monotonic() - start < 2, (path, code)
                assert headers.get("Retry-After") == "1" and "busy" in strict_json(body)["error"]
            assert request(port, "/status")[0] == 200  # the rest of the API is not affected
        finally:
            Gate.opened.set()
            holder.join(30)
        assert first[0][0] == 200 and len(strict_json(first[0][2])["samples"]) == 10
        assert request(port, "/sample?n=10")[0] == 200  # the slot was given back
        service.model = None
        for _ in range(3):  # a refused request (503) gives its slot back too
            assert request(port, "/sample?n=10")[0] == 503


def test_an_exception_in_a_handler_is_a_json_500_logged_once(redis_server, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    _, name = new_stream(redis_server.url, "boom")
    with idle_service(redis_server.url, name) as (service, port):
        def broken() -> dict[str, object]:
            raise RuntimeError("status exploded")

        monkeypatch.setattr(service, "status", broken)
        code, headers, body = request(port, "/status")
        assert code == 500 and headers["Content-Type"] == "application/json"
        assert "status exploded" in strict_json(body)["error"]
        errors = [r for r in caplog.records if r.name == "learner.http_api" and r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "status exploded" in errors[0].getMessage()
        assert request(port, "/healthz")[0] == 200  # the server carries on


def test_a_replica_without_a_model_is_unready_with_a_reason(redis_server):
    store, name = new_stream(redis_server.url, "nomodel")
    assert Lease(store.client, name, "the-test-leads", ttl=120).acquire()  # no checkpoint will come
    with running(redis_server.url, name) as (_, port, loop):
        time.sleep(3)  # several standby looks
        code, body = get(port, "/readyz")
        assert code == 503 and body["ready"] is False and "no model" in body["reason"] and loop.is_alive()
        assert get(port, "/sample?n=5")[0] == 503
    empty = SketchStore(connect(redis_server.url))
    empty_name = f"empty-{name}"
    empty.create_stream(store.get_spec(name).with_name(empty_name))  # a stream without records
    with running(redis_server.url, empty_name) as (service, port, _):
        wait_for(lambda: service.is_leader, 15, "the lead")
        code, body = get(port, "/readyz")
        assert code == 503 and body["leader"] is True and "no records" in body["reason"]
        wait_for(lambda: service.rounds == 0 and service.trainer is not None, 15, "a trainer waiting for data")


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def steps_of(port: int) -> int:
    code, status = get(port, "/status")
    assert code == 200, code
    return int(status["steps"] or 0)


def test_eight_clients_hammering_the_cap_do_not_stall_training(tmp_path, redis_server):
    _, name = new_stream(redis_server.url, "hammer")
    port = free_port()
    proc = Proc(tmp_path, "learn-hammer", ["learn", name, "--port", str(port), "--redis", redis_server.url,
                                           "--steps-per-round", "100", "--checkpoint-every", "5"])
    try:
        wait_for(lambda: proc.proc.poll() is None and steps_of(port) > 0 if get(port, "/healthz")[0] else False,
                 60, "training")
        quiet_start, quiet_steps = time.monotonic(), steps_of(port)
        time.sleep(10)
        quiet_rate = (steps_of(port) - quiet_steps) / (time.monotonic() - quiet_start)

        answers: list[int] = []
        bodies_ok: list[bool] = []
        peak = [rss_bytes(proc.proc.pid)]
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                code, headers, body = request(port, "/sample?n=100000", timeout=120)
                answers.append(code)
                if code == 200:
                    bodies_ok.append(body.startswith(b'{"samples":[[') and body.endswith(b"]]}"))
                elif code == 429:
                    bodies_ok.append(headers.get("Retry-After") == "1" and b'"error"' in body)

        load_start, load_steps = time.monotonic(), steps_of(port)
        clients = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for c in clients:
            c.start()
        while time.monotonic() - load_start < 15:
            peak.append(rss_bytes(proc.proc.pid))
            time.sleep(0.25)
        load_rate = (steps_of(port) - load_steps) / (time.monotonic() - load_start)
        stop.set()
        for c in clients:
            c.join(120)
        one = strict_json(request(port, "/sample?n=100000", timeout=120)[2])
        counts = {code: answers.count(code) for code in sorted(set(answers))}
        print(f"training: {quiet_rate:.1f} steps/s unloaded, {load_rate:.1f} steps/s under load "
              f"({load_rate / quiet_rate:.0%}); answers {counts}; peak RSS {max(peak) / 2**20:.0f} MiB")
        assert load_rate > 0, "training stalled under the sampling load"
        assert counts.get(200, 0) >= 2 and counts.get(429, 0) >= 1, counts
        assert set(counts) <= {200, 429}, counts  # no dropped connection (0), no 5xx
        assert all(bodies_ok)
        assert np.array(one["samples"]).shape == (100_000, 2)
        assert max(peak) < 2 * 2**30, max(peak)
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0, proc.tail()
