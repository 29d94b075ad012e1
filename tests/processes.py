"""Helpers for tests that run `sketchgen` processes and talk to them over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: One scraped sample: (name, sorted (label, value) pairs).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def fetch(port: int, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    """(status, body) of a GET on 127.0.0.1; status 0 when nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    """(status, parsed JSON body) of a GET; (0, {}) when nothing listens (yet)."""
    code, body = fetch(port, path, timeout)
    return code, json.loads(body or b"{}")


def metrics_text(port: int, timeout: float = 10.0) -> str:
    """The text of ``/metrics`` on 127.0.0.1 (fails unless it answers 200)."""
    code, body = fetch(port, "/metrics", timeout)
    assert code == 200, f"/metrics on port {port} answered {code or 'nothing'}"
    return body.decode()


def scrape(port: int, timeout: float = 10.0) -> dict[SampleKey, float]:
    """``/metrics`` parsed: {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics_text(port, timeout)) for s in family.samples}


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass (fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Proc:
    """A `sketchgen` subprocess with its log in a file."""

    def __init__(self, tmp, name: str, args: list[str]) -> None:
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "sketchgen", *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode
