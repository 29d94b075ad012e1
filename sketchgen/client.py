"""A Python client for a learner's HTTP API (``sketchgen learn STREAM --port P``; docs/learner.md, "HTTP").

One :class:`LearnerClient` per learner URL, safe to share between threads (each thread keeps its own
connection, reused while the server keeps it open). Every method is one ``GET``:

| method | endpoint | returns |
|---|---|---|
| :meth:`~LearnerClient.status` | ``/status`` | the JSON object |
| :meth:`~LearnerClient.sample` | ``/sample?n=N`` | an ``(n, d)`` float array in the data's units (null → NaN); \
numeric streams only |
| :meth:`~LearnerClient.sample_records` | ``/sample?n=N`` | a list of ``n`` record dicts; typed streams only |
| :meth:`~LearnerClient.history` | ``/history?since=T`` | the JSON object |
| :meth:`~LearnerClient.density` | ``/density?n=&x=&y=&bins=`` | the JSON object (only the given parameters sent) |
| :meth:`~LearnerClient.ready` / :meth:`~LearnerClient.healthy` | ``/readyz`` / ``/healthz`` | ``bool`` |
| :meth:`~LearnerClient.metrics` | ``/metrics`` | Prometheus text (:func:`metric_value` reads one value) |

Errors: any answer other than 2xx raises :class:`LearnerError` (``.status``, ``.error`` = the server's
``{"error": …}`` message). A 503 raises :class:`LearnerUnavailableError`, and :class:`NoModelYetError`
when the replica has no model yet; a 400 :class:`BadRequestError`; a 401/403 :class:`AuthError`; a 429
is retried after its ``Retry-After`` (plus up to 10 % jitter, so clients turned away together do not
all come back together) up to ``max_retries`` times, then raises :class:`BusyError`; so is a 503 that carries
``Retry-After`` (the server's bound on requests in flight: overloaded), then :class:`LearnerUnavailableError`
(a 503 without it, such as "no model yet", is never retried). Nothing listening
raises :class:`LearnerUnreachableError` (``.status`` None); :meth:`~LearnerClient.sample` on a typed
stream (or :meth:`~LearnerClient.sample_records` on a numeric one) :class:`StreamKindError`. With
``token=`` every request carries ``Authorization: Bearer <token>``; the token never appears in ``repr``,
logs or exception messages.

Example (against a running learner; tests/test_client.py runs the same against a real one)::

    from sketchgen.client import LearnerClient, NoModelYetError

    with LearnerClient("http://127.0.0.1:8000", token=None, timeout=30) as learner:
        try:
            x = learner.sample(10_000)        # numpy (10000, d), the data's units
        except NoModelYetError:               # 503 "no model yet": wait for /readyz, then ask again
            learner.wait_ready(timeout=60)
            x = learner.sample(10_000)
        print(learner.status()["steps"], x.mean(axis=0))
        hist = learner.density(n=20_000, x=0, y=1, bins=64)["counts"]

What needs no server:

>>> LearnerClient("http://127.0.0.1:8000/", token="s3cret")
LearnerClient('http://127.0.0.1:8000', token=***)
>>> metric_value('sketchgen_learner_steps_total{stream="s"} 1234.0', "sketchgen_learner_steps_total")
1234.0
>>> retry_after_seconds("2"), retry_after_seconds("soon")
(2.0, None)
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["AuthError", "BadRequestError", "BusyError", "LearnerClient", "LearnerError", "LearnerUnavailableError",
           "LearnerUnreachableError", "NoModelYetError", "StreamKindError", "metric_value"]

#: Seconds a request may take (connect, send, wait for and read the answer).
DEFAULT_TIMEOUT = 60.0
#: Times a 429 is retried before :class:`BusyError`.
DEFAULT_MAX_RETRIES = 5
#: Longest wait between two tries, whatever ``Retry-After`` asks.
DEFAULT_MAX_RETRY_WAIT = 30.0
#: Wait after a 429 that carries no (readable) ``Retry-After``.
FALLBACK_RETRY_WAIT = 1.0
#: A ``/readyz`` or ``/status`` 503 whose message starts with this means the replica has no model yet.
NO_MODEL_PREFIX = "no model yet"


class LearnerError(Exception):
    """A learner answered with an error (``status`` the HTTP code, ``error`` its message) or could not be asked."""

    def __init__(self, path: str, status: int | None, error: str) -> None:
        self.path, self.status, self.error = path, status, error
        super().__init__(f"GET {path}: {status} {error}" if status is not None else f"GET {path}: {error}")


class BadRequestError(LearnerError):
    """400: a parameter the learner refuses (its message says which and why)."""


class AuthError(LearnerError):
    """401 or 403: the learner wants a (different) bearer token."""


class BusyError(LearnerError):
    """429 still after the client's retries: the learner's sampling slots stayed taken."""

    def __init__(self, path: str, error: str, retry_after: float | None, tries: int) -> None:
        super().__init__(path, 429, f"{error} (gave up after {tries} tries)")
        self.retry_after, self.tries = retry_after, tries


class LearnerUnavailableError(LearnerError):
    """503: the learner cannot serve this now (no model yet, samples that cannot be decoded, stream unreachable)."""


class NoModelYetError(LearnerUnavailableError):
    """503 "no model yet": the replica has nothing to sample yet (no records, no first slice, no checkpoint)."""


class StreamKindError(LearnerError):
    """:meth:`LearnerClient.sample` on a typed stream, or :meth:`LearnerClient.sample_records` on a numeric one."""


class LearnerUnreachableError(LearnerError):
    """No answer at all: nothing listens, the connection broke, or the request timed out (``status`` None)."""


def _error_class(status: int, error: str) -> type[LearnerError]:
    if status == 503:
        return NoModelYetError if error.startswith(NO_MODEL_PREFIX) else LearnerUnavailableError
    return {400: BadRequestError, 401: AuthError, 403: AuthError}.get(status, LearnerError)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of the first sample named ``name`` (with all of ``labels``) in Prometheus text; None if absent."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if labels and not all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            continue
        return float(value)
    return None


class LearnerClient:
    """Talk to one learner: ``LearnerClient("http://host:8000", token=None, timeout=60)`` (module docstring)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a learner URL is http(s)://HOST[:PORT][/PREFIX], got {parts.scheme}://…")
        if parts.username or parts.password:
            raise ValueError("give the learner's credentials as token=, not in the URL")
        if max_retries < 0 or max_retry_wait < 0 or timeout <= 0:
            raise ValueError("max_retries and max_retry_wait must be >= 0 and timeout > 0")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self.url = f"{parts.scheme}://{parts.netloc}{self._prefix}"
        self._token = token
        self.timeout, self.max_retries, self.max_retry_wait = timeout, max_retries, max_retry_wait
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"LearnerClient({self.url!r}, token={'***' if self._token else None})"

    def __enter__(self) -> LearnerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's client is collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- endpoints ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``/status``: stream, records, loss, rounds, steps, leader, drift, … (docs/learner.md, "HTTP")."""
        return self.get_json("/status")

    def sample(self, n: int) -> np.ndarray:
        """``n`` samples of a numeric stream as an ``(n, d)`` float64 array in the data's units (null → NaN).

        A typed stream answers records: this raises :class:`StreamKindError` pointing at :meth:`sample_records`.
        """
        body = self.get_json("/sample", {"n": n})
        if "samples" not in body:
            raise StreamKindError("/sample", 200,
                                  "sample(n) is for numeric streams; this one has typed records: use sample_records(n)")
        return np.asarray(body["samples"], dtype=np.float64).reshape(len(body["samples"]), -1)

    def sample_records(self, n: int) -> list[dict[str, Any]]:
        """``n`` records of a typed stream, each a dict of the schema's fields in order (null → None).

        A numeric stream answers vectors: this raises :class:`StreamKindError` pointing at :meth:`sample`.
        """
        body = self.get_json("/sample", {"n": n})
        if "records" not in body:
            raise StreamKindError("/sample", 200,
                                  "sample_records(n) is for typed streams; this one is numeric: use sample(n)")
        return list(body["records"])

    def history(self, since: float | None = None) -> dict[str, Any]:
        """``/history``: the state now and the per-loop points newer than Unix time ``since`` (all held without)."""
        return self.get_json("/history", {"since": since})

    def density(self, n: int | None = None, x: int | None = None, y: int | None = None,
                bins: int | None = None) -> dict[str, Any]:
        """``/density``: ``n`` samples binned by the learner (the server's defaults for parameters left out)."""
        return self.get_json("/density", {"n": n, "x": x, "y": y, "bins": bins})

    def metrics(self) -> str:
        """``/metrics`` as Prometheus text (:func:`metric_value` reads one sample of it)."""
        return self.get("/metrics")[1].decode()

    def healthy(self) -> bool:
        """``/healthz`` answers 200; False when nothing answers or it answers 5xx (4xx, e.g. a bad token, raise)."""
        return self._probe("/healthz")

    def ready(self) -> bool:
        """``/readyz`` answers 200 (a model to serve, the stream reachable); False on 503 or no answer."""
        return self._probe("/readyz")

    def wait_ready(self, timeout: float, poll: float = 0.5) -> None:
        """Return once :meth:`ready`; :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the learner at {self.url} was not ready within {timeout:g} s")
            time.sleep(poll)

    def _probe(self, path: str) -> bool:
        try:
            self.get(path)
        except (LearnerUnreachableError, LearnerUnavailableError):
            return False
        except LearnerError as exc:
            if exc.status is not None and exc.status >= 500:
                return False
            raise
        return True

    # -- transport --------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, object] | None = None) -> dict[str, Any]:
        """GET ``path`` with the non-None ``params`` and parse the JSON answer (errors as in the module docstring)."""
        _, body = self.get(path, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise LearnerError(path, 200, f"the answer is not JSON: {exc}") from None

    def get(self, path: str, params: Mapping[str, object] | None = None) -> tuple[dict[str, str], bytes]:
        """(headers, body) of a 2xx answer to GET ``path``; a 429, or a 503 with ``Retry-After`` (overloaded), is
        retried after that wait, ``max_retries`` times at most."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        target = self._prefix + path + (f"?{query}" if query else "")
        for tries in range(1, self.max_retries + 2):
            status, headers, body = self._request(path, target)
            if 200 <= status < 300:
                return headers, body
            error = self._error_text(body, status)
            wait = retry_after_seconds(headers.get("retry-after"))
            if status != 429 and not (status == 503 and wait is not None):  # 503 + Retry-After: overloaded
                raise _error_class(status, error)(path, status, error)
            if tries > self.max_retries:
                if status == 503:
                    raise LearnerUnavailableError(path, status, f"{error} (gave up after {tries} tries)")
                raise BusyError(path, error, wait, tries)
            pause = min(self.max_retry_wait, FALLBACK_RETRY_WAIT if wait is None else wait)
            pause *= 1.0 + 0.1 * random.random()
            log.debug("GET %s: %d, retrying in %.2f s (try %d of %d)", path, status, pause, tries,
                      self.max_retries + 1)
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, path: str, target: str) -> tuple[int, dict[str, str], bytes]:
        """One GET on this thread's connection; a connection the server closed in between is reopened once."""
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle kept-alive connection: a GET is safe to send again
                raise LearnerUnreachableError(path, None, self._scrub(f"{self.url}: {exc}")) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise LearnerUnreachableError(path, None, self._scrub(f"{self.url}: {type(exc).__name__}: {exc}")) \
                    from None
            if resp.will_close:
                self.close()
            log.debug("GET %s: %d (%d bytes)", path, resp.status, len(body))
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's connection, whether it already carried a request)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        self._local.conn = conn
        return conn, False

    def _error_text(self, body: bytes, status: int) -> str:
        """The server's ``{"error": …}`` (or ``{"detail": …}``) message, else the start of the body; no token in it."""
        try:
            parsed = json.loads(body)
            key = next((k for k in ("error", "detail") if isinstance(parsed, dict) and k in parsed), None)
            text = str(parsed[key]) if key else body[:200].decode()
        except (ValueError, UnicodeDecodeError):
            text = body[:200].decode(errors="replace") or http.client.responses.get(status, "")
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text
