"""Fault-injection harness for `sketchgen ingest`: worker pauses, kills, rescaling, clock skew, Redis crashes.

Used by ``tests/test_ingest_chaos.py`` (a short run inside the test suite) and ``bench/soak.py`` (a long
run, see ``docs/bench/soak.md``). The pieces, each usable on its own:

* :class:`WorkerPool` — `sketchgen ingest` processes of one group, one log file per process in a folder:
  start (optionally with a skewed clock), pause (SIGSTOP) and resume (SIGCONT), SIGKILL, clean stop
  (SIGTERM), scale to ``n``.
* clock skew — Debian's ``faketime`` package: its ``libfaketime`` is preloaded into the worker the way
  ``faketime -f +45s CMD`` does it, but into the worker process itself (``faketime`` forks, and a SIGSTOP
  sent to the wrapper would not reach Python). :func:`probe_skew` checks that ``time.time()`` in a child
  really moves and that sleeping threads still work (see :func:`skew_env` for the monotonic clock).
* :class:`LiveProducer` — a thread writing valid vector records (JSON rows, ``{"x": …}``, two-row batches,
  float32 rows) mixed with malformed ones of every reject reason of :mod:`ingest.decode` (tombstones
  included), at a fixed rate, recorded in :class:`Truth`; after the stream :func:`read_log` reads the
  topic back into :class:`LogTruth` (per partition the valid rows below each offset, every malformed
  record's offset and expected reason), which the final checks use.
* :class:`CrashableRedis` — a Redis with ``appendfsync always`` that is SIGKILLed and restarted on the same
  port and append-only file.
* :class:`Chaos` — a seeded plan of :class:`Fault` s executed at their times, with counters of the faults
  actually caused (a pause counts once it has held longer than the member TTL, a kill once the process died
  of SIGKILL, …); a pause cut short and a Redis crash that finds Redis still down are tried again later.
* :class:`Monitor` — samples Redis while the run goes: for each partition the stored count must equal the
  valid rows below the stored next offset; the first sample that breaks this is kept with its time, so a
  double count can be matched with the fault that preceded it.
* checks — :func:`wait_settled`, :func:`check_sketch` (count and sum against the offline sketch of the
  same valid rows), :func:`check_dead_letters` (every malformed record in the dead-letter topic with its
  reason), :func:`log_stats` (fences and other events counted from the worker logs).

:class:`ChaosRun` puts them together: its own Redis, a fresh stream and topic, the workers, the producer,
the plan, then the checks; :class:`ChaosResult` holds the counters, the errors and a printable report.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import heapq
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ingest.decode import F32_CONTENT_TYPE, RecordError, check_range, decode_value
from ingest.membership import Membership
from sketch_store.features import FeatureMap
from sketch_store.redis_connect import connect
from sketch_store.redis_keys import StreamKeys
from sketch_store.redis_store import SketchStore
from sketch_store.spec import SketchSpec
from sketchgen.local_stack import RedisServer
from sketchgen.produce import ensure_topic

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
MEMBER_TTL_S = 6.0  # the worker's default membership TTL (ingest.worker.IngestConfig.member_ttl_s)
SOURCE_HEADER = "sketchgen-source"
REASON_HEADER = "sketchgen-reject-reason"
F32 = [("content-type", F32_CONTENT_TYPE.encode())]
READY = re.compile(r"ingest worker \S+ for stream ")  # logged once connected, after the signal handlers are set

# Worker log lines counted by log_stats (see ingest/worker.py and sketch_store/redis_store.py).
LOG_MARKERS = {
    "fences": "claimed by another worker",  # a flush (or claim check) refused: another worker took the partition
    "fences seen after a pause": "paused past its membership; dropping",  # a worker's own check after a pause
    "offset fences": " is at offset ",  # FencedError: the stored offset is not where the delta starts
    "claims": ": took ",
    "handovers": "handed over ",
    "pauses noticed": "was paused or stalled",
    "redis retries": "Redis unavailable",
    "duplicate flushes": "was already applied",
    "dead letters sent": ": rejected ",
    "tracebacks": "Traceback (most recent call last)",
}


# ---------------------------------------------------------------------------------------------
# Clock skew (libfaketime from Debian's faketime package)
# ---------------------------------------------------------------------------------------------


def libfaketime() -> str:
    """Path of the multi-threaded libfaketime (what ``faketime -m`` preloads); raises if not installed."""
    candidates = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")) + sorted(
        glob.glob("/usr/lib/faketime/libfaketimeMT.so.1")
    )
    if not candidates:
        raise FileNotFoundError("libfaketime not found: apt-get install faketime (listed in .ci/debian-packages)")
    return candidates[0]


def skew_env(seconds: float) -> dict[str, str]:
    """Environment that shifts a process's wall clock by ``seconds`` (what ``faketime -m -f +Ns`` sets).

    libfaketime shifts the monotonic clock too, which is harmless (it still advances at the real rate,
    and only differences of it are used). Leaving it alone with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` is
    not an option: libfaketime 0.9.10 then fails Python's ``time.sleep`` with EINVAL (it sleeps with
    ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``), which kills the worker's threads.
    """
    if not seconds:
        return {}
    preload = " ".join(p for p in (libfaketime(), os.environ.get("LD_PRELOAD", "")) if p)
    return {"LD_PRELOAD": preload, "FAKETIME": f"{seconds:+g}s"}


def probe_skew(seconds: float) -> float:
    """The offset of ``time.time()`` measured in a child run with :func:`skew_env` (seconds); the child
    also sleeps in threads, as the worker does, and fails if a sleep does."""
    code = ("import threading, time\n"
            "threads = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(4)]\n"
            "[t.start() for t in threads]; time.sleep(0.05); [t.join() for t in threads]\n"
            "print(repr(time.time()))")
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **skew_env(seconds)},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    after = time.time()
    return float(out.strip()) - (before + after) / 2


# ---------------------------------------------------------------------------------------------
# Event log
# ---------------------------------------------------------------------------------------------


class EventLog:
    """Timestamped events of a run (seconds since :attr:`t0`), thread-safe; each also logged."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.events: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, text: str) -> None:
        with self._lock:
            self.events.append((self.now(), text))
        log.info("chaos: %s", text)

    def between(self, start: float, end: float) -> list[tuple[float, str]]:
        with self._lock:
            return [(t, e) for t, e in self.events if start <= t <= end]

    def text(self) -> str:
        with self._lock:
            return "\n".join(f"{t:8.2f}s  {e}" for t, e in self.events)


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IngestCommand:
    """How to start one `sketchgen ingest` worker of the group."""

    stream: str
    topic: str
    kafka: str
    redis_url: str
    flush_ms: int | None = None  # None: the worker's default
    max_record_bytes: int = 2048
    extra: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return f"sketchgen-{self.stream}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "sketchgen", "ingest", self.stream, "--topic", self.topic,
                "--kafka", self.kafka, "--redis", self.redis_url, "--max-record-bytes", str(self.max_record_bytes),
                *(["--flush-ms", str(self.flush_ms)] if self.flush_ms else []), *self.extra]


@dataclasses.dataclass
class Worker:
    """One worker process: its name (``w07``), log, clock skew and life."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    skew_s: float
    started: float
    paused_at: float | None = None
    resumed_at: float | None = None
    end: str | None = None  # how it ended: "killed", "stopped", "exited"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def exiting(self) -> bool:
        """Whether it has logged its last line (stopping or crashed) and is only on its way out."""
        return "ingest worker stopped" in self.log_text()

    def ready(self) -> bool:
        """Whether it has connected (its SIGTERM handler is installed by then)."""
        return READY.search(self.log_text()) is not None

    def owns_partitions(self) -> bool:
        """Whether it has taken partitions since it started (so a fault on it loses unflushed work)."""
        return LOG_MARKERS["claims"] in self.log_text()


class WorkerPool:
    """The `sketchgen ingest` processes of one group, with logs in ``folder`` (see module docstring)."""

    def __init__(self, folder: Path, command: IngestCommand, events: EventLog) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.command = command
        self.events = events
        self.workers: list[Worker] = []
        self.errors: list[str] = []

    def start(self, skew_s: float = 0.0) -> Worker:
        """Start a worker (``skew_s``: its wall clock shifted by that many seconds)."""
        name = f"w{len(self.workers) + 1:02d}"
        path = self.folder / f"{name}.log"
        # the code of this checkout (PYTHONPATH), whatever is installed; faulthandler: a SIGABRT dumps every
        # thread's stack into the log (see stop); run in the log folder
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, "PYTHONFAULTHANDLER": "1",
               **skew_env(skew_s)}
        with open(path, "wb") as out:
            proc = subprocess.Popen(self.command.argv(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.folder)
        worker = Worker(name, proc, path, skew_s, time.monotonic())
        self.workers.append(worker)
        self.events.add(f"start {name} pid {proc.pid}" + (f" clock {skew_s:+g} s" if skew_s else ""))
        return worker

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    def running(self) -> list[Worker]:
        """Alive and not paused."""
        return [w for w in self.workers if w.alive and not w.paused]

    def pause(self, worker: Worker) -> bool:
        """SIGSTOP the worker's main process (its fold child runs on, as with ``kill -STOP PID``)."""
        if not worker.alive or worker.paused:
            return False
        worker.proc.send_signal(signal.SIGSTOP)
        worker.paused_at = time.monotonic()
        self.events.add(f"pause {worker.name} (SIGSTOP)")
        return True

    def resume(self, worker: Worker) -> float | None:
        """SIGCONT a paused worker; returns how long it was held (None if it was not paused or is gone)."""
        if not worker.paused:
            return None
        held = time.monotonic() - worker.paused_at  # type: ignore[operator]
        worker.paused_at = None
        worker.resumed_at = time.monotonic()
        if not worker.alive:
            return None
        worker.proc.send_signal(signal.SIGCONT)
        self.events.add(f"resume {worker.name} (SIGCONT) after {held:.1f} s")
        return held

    def kill(self, worker: Worker) -> bool:
        """SIGKILL the worker; True if it was alive and died of it."""
        if not worker.alive:
            return False
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(30)
        worker.paused_at = None
        worker.end = "killed"
        self.events.add(f"kill {worker.name} (SIGKILL)")
        return worker.proc.returncode == -signal.SIGKILL

    def stop(self, worker: Worker, timeout: float = 40.0,
             excused: Callable[[Worker, str], bool] = lambda w, last: False) -> int | None:
        """SIGTERM (resuming it first if paused) and wait; a nonzero exit is recorded in :attr:`errors`.

        A worker that ends by itself while it is waited for to be ready (so before the SIGTERM) was not
        stopped: it is judged as :meth:`reap` judges it (``excused``: a documented exit, e.g. a start refused
        because Redis was down; else a crash), and not restarted. A worker still running ``timeout`` s
        after SIGTERM is hung: it gets SIGABRT (its stacks go to its log), then SIGKILL."""
        if not worker.alive:
            return worker.proc.returncode
        self.resume(worker)
        started = time.monotonic()
        while worker.alive and not worker.ready() and time.monotonic() - started < timeout:
            time.sleep(0.1)  # a stop is a stop of a running worker, not of one still importing
        if not worker.alive:
            self._ended_by_itself(worker, excused)
            return worker.proc.returncode
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.errors.append(f"{worker.name} hung: still running {timeout:.0f} s after SIGTERM (stacks in "
                               f"{worker.log_path})")
            worker.proc.send_signal(signal.SIGABRT)
            try:
                code = worker.proc.wait(10)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait(30)
        worker.end = "stopped"
        self.events.add(f"stop {worker.name} (SIGTERM) -> exit {code}")
        if code != 0:
            tail = worker.log_text()[-600:].replace("\n", " | ")
            self.errors.append(f"{worker.name} exited {code} on SIGTERM: …{tail}")
        return code

    def reap(self, excused: Callable[[Worker, str], bool] = lambda w, last: False) -> list[Worker]:
        """Workers that ended without being killed or stopped by the harness since the last call. Each is
        a crash, recorded in :attr:`errors` with the last line of its log, unless ``excused(worker, last
        line)`` (a documented exit, e.g. Redis unreachable at start while the harness had it down)."""
        ended = [w for w in self.workers if not w.alive and w.end is None]
        for w in ended:
            self._ended_by_itself(w, excused)
        return ended

    def _ended_by_itself(self, w: Worker, excused: Callable[[Worker, str], bool]) -> None:
        """Record how a worker ended without the harness: ``refused to start`` if ``excused``, else a crash."""
        lines = [line for line in w.log_text().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        w.end = "refused to start" if excused(w, last) else "crashed"
        if w.end == "crashed":
            self.errors.append(f"{w.name} died by itself (exit {w.proc.returncode}): {last}")
        self.events.add(f"{w.name} {'died by itself' if w.end == 'crashed' else 'exited'} "
                        f"(exit {w.proc.returncode}): {last[-160:]}")

    def close(self) -> None:
        """SIGKILL whatever is still running (end of a run or a failed test)."""
        for w in self.workers:
            if w.alive:
                if w.paused:
                    w.proc.send_signal(signal.SIGCONT)
                w.proc.kill()
                w.proc.wait(30)
                w.end = w.end or "killed"


# ---------------------------------------------------------------------------------------------
# Records and ground truth
# ---------------------------------------------------------------------------------------------


def malformed_kinds(max_bytes: int) -> list[tuple[str, bytes | None, list[tuple[str, bytes]], str]]:
    """(label, value, headers, expected reason) of the malformed records, one or more per reject reason."""
    return [
        ("truncated JSON", b"[0.5, 1.25", [], "invalid_json"),
        ("not JSON", b"hello, world", [], "invalid_json"),
        ("three numbers", b"[1.0, 2.0, 3.0]", [], "wrong_dimension"),
        ("ragged rows", b"[[1, 2], [3]]", [], "wrong_dimension"),
        ("NaN", b"[NaN, 1.0]", [], "non_finite"),
        ("Infinity", b"[1.0, Infinity]", [], "non_finite"),
        ("too large", b"[" + b" " * (max_bytes + 10) + b"1, 2]", [], "too_large"),
        ("empty value", b"", [], "empty"),
        ("tombstone", None, [], "empty"),
        ("strings", b'{"x": "not numbers"}', [], "bad_structure"),
        ("booleans", b"[true, false]", [], "bad_structure"),
        ("f32 of 7 bytes", b"\x00" * 7, F32, "bad_binary"),
        ("csv content-type", b"[1, 2]", [("content-type", b"text/csv")], "unsupported_content_type"),
        ("far out of range", b"[1e300, 1e300]", [], "out_of_range"),
    ]


def classify(value: bytes | None, headers: list[tuple[str, bytes]], spec: SketchSpec, max_bytes: int) -> str | None:
    """The reject reason the worker gives a record (its decoder, then its range check), None if valid."""
    try:
        rows = decode_value(value, headers, spec.d, max_bytes)
        if not np.all(check_range(rows, spec.mean, spec.std)):
            raise RecordError("out_of_range", "far from the data")
    except RecordError as exc:
        return exc.reason
    return None


def valid_record(rng: np.random.Generator, d: int) -> tuple[bytes, list[tuple[str, bytes]], np.ndarray]:
    """A random valid record: a JSON row (mostly), a ``{"x": row}`` object, a two-row batch or an f32 row."""
    u = rng.random()
    if u < 0.85:
        row = rng.normal(size=(1, d))
        return json.dumps(row[0].tolist()).encode(), [], row
    if u < 0.90:
        row = rng.normal(size=(1, d))
        return json.dumps({"x": row[0].tolist()}).encode(), [], row
    if u < 0.95:
        rows = rng.normal(size=(2, d))
        return json.dumps(rows.tolist()).encode(), [], rows
    row = rng.normal(size=(1, d)).astype("<f4")
    return row.tobytes(), F32, row.astype(np.float64)


class GrowRows:
    """An append-only (n, d) float64 array (amortised doubling)."""

    def __init__(self, d: int) -> None:
        self._buf = np.empty((1024, d))
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        if self.n + k > self._buf.shape[0]:
            self._buf = np.concatenate([self._buf, np.empty_like(self._buf)])
        self._buf[self.n : self.n + k] = rows
        self.n += k

    def array(self) -> np.ndarray:
        return self._buf[: self.n]


@dataclasses.dataclass(frozen=True)
class BadRecord:
    partition: int
    offset: int
    reason: str
    label: str


class Truth:
    """What the producer sent, by record number (each record's key is ``r<number>``): the valid rows,
    the malformed records' expected reasons, and, from the broker's acknowledgements, per partition the
    valid rows below each offset (for the live :class:`Monitor`). The final checks use :class:`LogTruth`,
    read back from the topic."""

    def __init__(self, partitions: int, d: int) -> None:
        self.partitions = partitions
        self._lock = threading.Lock()
        self.rows = GrowRows(d)
        self.row_start: list[int] = []  # per record number: first row in self.rows
        self.nrows: list[int] = []  # per record number: rows (0: malformed)
        self.bad_kind: dict[int, tuple[str, str]] = {}  # record number -> (reason, label)
        self.valid_records = 0
        self._cum: list[list[int]] = [[0] for _ in range(partitions)]  # cum[p][k] = valid rows at offsets < k
        self._pending: list[dict[int, int]] = [{} for _ in range(partitions)]
        self.acked_at: list[list[tuple[int, int]]] = [[] for _ in range(partitions)]  # (offset, number) per partition
        self.failures: list[str] = []

    @property
    def sent(self) -> int:
        return len(self.nrows)

    def sending(self, rows: np.ndarray | None, bad: tuple[str, str] | None) -> int:
        """Record a record about to be sent (valid ``rows``, or ``bad`` = (reason, label)); its number."""
        with self._lock:
            number = len(self.nrows)
            self.row_start.append(self.rows.n)
            if rows is None:
                self.nrows.append(0)
                self.bad_kind[number] = bad  # type: ignore[assignment]
            else:
                self.rows.append(rows)
                self.nrows.append(rows.shape[0])
                self.valid_records += 1
            return number

    def acked(self, partition: int, offset: int, number: int) -> None:
        """The broker acknowledged record ``number`` at ``offset`` of ``partition``."""
        with self._lock:
            self.acked_at[partition].append((offset, number))
            self._pending[partition][offset] = self.nrows[number]
            cum, pending = self._cum[partition], self._pending[partition]
            while len(cum) - 1 in pending:
                cum.append(cum[-1] + pending.pop(len(cum) - 1))

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures.append(repr(exc))

    def valid_below(self, partition: int, offset: int) -> int | None:
        """Valid rows of ``partition`` at offsets below ``offset`` (None: not all of those acknowledged)."""
        with self._lock:
            cum = self._cum[partition]
            return cum[offset] if offset < len(cum) else None

    @property
    def valid_rows(self) -> int:
        with self._lock:
            return self.rows.n


@dataclasses.dataclass
class LogTruth:
    """What the topic holds, read back after the stream: what the workers must fold exactly once. A
    record the producer retried after a timeout may be stored twice; it then counts twice."""

    ends: list[int]  # per partition: the offset after the last record
    cum: list[np.ndarray]  # cum[p][k]: valid rows at offsets < k
    rows: np.ndarray  # the valid rows, each as often as the log holds its record
    bad: list[BadRecord]
    records: int
    duplicates: int  # records stored more than once (producer retries)
    missing: int  # records sent whose send failed and that are not in the log
    foreign: int  # records in the log that the harness did not send

    def valid_below(self, partition: int, offset: int) -> int | None:
        cum = self.cum[partition]
        return int(cum[offset]) if offset < cum.shape[0] else None


def _record_number(key: bytes | None) -> int | None:
    if not key or not key.startswith(b"r") or not key[1:].isdigit():
        return None
    return int(key[1:])


def read_log(bootstrap: str, topic: str, truth: Truth, timeout: float = 120.0) -> LogTruth:
    """Read ``topic`` back from the beginning until every record that was acknowledged is seen."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, max_partition_fetch_bytes=16 << 20, auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in range(truth.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    found: list[list[tuple[int, int]]] = [[] for _ in tps]
    seen: set[int] = set()
    foreign = 0
    want = truth.sent - len(truth.failures)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=50_000)
            for tp, records in batch.items():
                for r in records:
                    number = _record_number(r.key)
                    if number is None or number >= truth.sent:
                        foreign += 1
                        continue
                    found[tp.partition].append((r.offset, number))
                    seen.add(number)
            if not batch and len(seen) >= want:
                break
    finally:
        consumer.close()
    return _log_truth(truth, found, seen, foreign)


def acked_log_truth(truth: Truth) -> LogTruth:
    """The log as the broker's acknowledgements describe it (every acknowledged record at its offset).

    Used when reading the topic back does not return every acknowledged record (a long run against
    the in-memory broker); it cannot see a record stored twice by a producer retry.
    """
    found = [sorted(entries) for entries in truth.acked_at]
    return _log_truth(truth, found, {n for entries in found for _, n in entries}, 0)


def _log_truth(truth: Truth, found: list[list[tuple[int, int]]], seen: set[int], foreign: int) -> LogTruth:
    nrows = np.asarray(truth.nrows, dtype=np.int64)
    starts = np.asarray(truth.row_start, dtype=np.int64)
    ends, cums, bad, numbers = [], [], [], []
    for p, entries in enumerate(found):
        entries.sort()
        end = entries[-1][0] + 1 if entries else 0
        counts = np.zeros(end, dtype=np.int64)
        for offset, number in entries:
            counts[offset] = nrows[number]
            if number in truth.bad_kind:
                bad.append(BadRecord(p, offset, *truth.bad_kind[number]))
            numbers.append(number)
        ends.append(end)
        cums.append(np.concatenate([[0], np.cumsum(counts)]))
    valid = np.asarray([n for n in numbers if nrows[n]], dtype=np.int64)
    k = nrows[valid]
    first = np.repeat(starts[valid], k)
    within = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    rows = truth.rows.array()[first + within]
    return LogTruth(ends, cums, rows, bad, len(numbers), len(numbers) - len(seen), truth.sent - len(seen), foreign)


class LiveProducer(threading.Thread):
    """Writes ``valid_records`` valid records at ``rate`` records/s (malformed ones mixed in at
    ``bad_fraction``, minus the labels in ``exclude``) to random partitions, recording everything in
    :attr:`truth`."""

    def __init__(self, bootstrap: str, topic: str, spec: SketchSpec, truth: Truth, valid_records: int,
                 rate: float, seed: int, bad_fraction: float = 0.03, max_bytes: int = 2048,
                 exclude: Sequence[str] = ()) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.bootstrap, self.topic, self.spec, self.truth = bootstrap, topic, spec, truth
        self.valid_target, self.rate, self.bad_fraction = valid_records, rate, bad_fraction
        self.rng = np.random.default_rng(seed)
        self.kinds = [k for k in malformed_kinds(max_bytes) if k[0] not in exclude]
        for label, value, headers, reason in self.kinds:  # the harness must agree with the decoder
            got = classify(value, headers, spec, max_bytes)
            if got != reason:
                raise AssertionError(f"malformed record {label!r}: the decoder says {got}, expected {reason}")
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # reported by the run, never swallowed
            self.error = exc
            log.exception("producer failed")

    def _produce(self) -> None:
        # a long request timeout: a retried request may store its records twice (read_log copes, but
        # the live monitor loses track of that partition)
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                 max_request_size=1 << 20, request_timeout_ms=120_000, delivery_timeout_ms=600_000)
        start = time.monotonic()
        try:
            while self.truth.valid_records < self.valid_target and not self.stop_event.is_set():
                due = int((time.monotonic() - start) * self.rate) + 1
                while self.truth.sent < due and self.truth.valid_records < self.valid_target:
                    self._send_one(producer)
                time.sleep(0.01)
            producer.flush(timeout=600)
        finally:
            producer.close(timeout=30)

    def _send_one(self, producer: KafkaProducer) -> None:
        partition = int(self.rng.integers(self.truth.partitions))
        if self.rng.random() < self.bad_fraction:
            label, value, headers, reason = self.kinds[int(self.rng.integers(len(self.kinds)))]
            number = self.truth.sending(None, (reason, label))
        else:
            value, headers, rows = valid_record(self.rng, self.spec.d)
            number = self.truth.sending(rows, None)
        future = producer.send(self.topic, value=value, headers=headers or None, partition=partition,
                               key=f"r{number}".encode())
        future.add_callback(lambda meta, p=partition, n=number: self.truth.acked(p, meta.offset, n))
        future.add_errback(self.truth.failed)


# ---------------------------------------------------------------------------------------------
# Redis that crashes
# ---------------------------------------------------------------------------------------------


class CrashableRedis:
    """A Redis of the run's own (``appendfsync always``): SIGKILL and restart on the same port and AOF."""

    def __init__(self, folder: Path, events: EventLog) -> None:
        self.server = RedisServer(Path(folder), appendfsync="always")
        self.events = events
        self.down_since: float | None = None
        self.outages: list[tuple[float, float]] = []  # (down, up) monotonic times

    def was_down(self, since: float) -> bool:
        """Whether Redis was down at some moment from ``since`` (monotonic) until now."""
        return self.down or any(up >= since for _, up in self.outages)

    def start(self) -> None:
        self.server.start()
        if self.down_since is not None:
            self.outages.append((self.down_since, time.monotonic()))
            self.events.add(f"redis restarted on port {self.server.port} after "
                            f"{time.monotonic() - self.down_since:.1f} s")
        self.down_since = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def kill(self) -> bool:
        if self.down:
            return False
        self.server.kill()
        self.down_since = time.monotonic()
        self.events.add("redis SIGKILLed")
        return True

    def stop(self) -> None:
        self.server.stop()


class FailoverRedis:
    """A replicated Redis the run does not own (a Cluster or a Sentinel topology): :meth:`kill` starts a
    primary failover — ``fail_over()`` SIGKILLs the primary of the stream's slot, waits until a replica has
    taken over and the killed node has rejoined as a replica — in a thread, so the plan goes on meanwhile.

    It stands in for :class:`CrashableRedis`: ``down`` while a failover runs, ``was_down``, ``start``/``stop``
    do nothing (the topology's fixture owns the servers). ``failovers`` counts the completed ones.
    """

    def __init__(self, url: str, fail_over: Callable[[str], object]) -> None:
        """``fail_over(key)`` fails over the primary holding ``key`` (the stream's meta key, set by the run)."""
        self.url = url
        self._fail_over = fail_over
        self.events = EventLog()
        self.key = ""
        self.outages: list[tuple[float, float]] = []
        self.failovers = 0
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def was_down(self, since: float) -> bool:
        return self.down or any(up >= since for _, up in self.outages)

    def kill(self) -> bool:
        if self.down:
            return False
        self._since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="failover", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        self.events.add("failover: primary SIGKILLed")
        try:
            new = self._fail_over(self.key)
        except Exception as exc:  # reported as the run's error, not a crash of the harness
            self.errors.append(f"a failover did not complete: {exc!r}")
            self.events.add(f"failover failed: {exc!r}")
        else:
            self.failovers += 1
            self.events.add(f"failover done: {new!r} is primary, the old primary rejoined as its replica "
                            f"({time.monotonic() - (self._since or 0.0):.1f} s)")
        finally:
            self.outages.append((self._since or 0.0, time.monotonic()))

    def start(self) -> None:
        """Nothing to restart: the killed primary came back as a replica within the failover."""

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join(60)


LOG_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_clock_offset(path: Path) -> float | None:
    """How far a worker's clock is off, in seconds: the time stamped on the last line of its log (by
    its own clock, local time) minus the file's modification time (the kernel's real clock)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            tail = f.read().splitlines()
            mtime = os.fstat(f.fileno()).st_mtime
    except OSError:
        return None
    match = LOG_STAMP.match(tail[-1]) if tail else None
    if match is None:
        return None
    stamped = time.mktime(time.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000
    return stamped - mtime


def quick_client(url: str) -> redis.Redis:
    """A client that fails fast (2 s, no retries): for the harness's reads while Redis may be down.

    Any URL the services take (one server, Sentinel, Cluster)."""
    return connect(url, retries=0, socket_timeout=2.0)


# ---------------------------------------------------------------------------------------------
# Faults and their scheduler
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(order=True, frozen=True)
class Fault:
    """A fault at ``at`` seconds into the run: ``pause`` (held ``hold`` s), ``kill`` (restart after a
    short delay), ``redis`` (down ``hold`` s), ``skew`` (a worker replaced by one whose clock is off,
    for ``hold`` s), ``scale`` (to ``target`` workers, clean starts and stops)."""

    at: float
    kind: str
    hold: float = 0.0
    target: int = 0


KINDS = ("pause", "kill", "redis", "skew", "scale", "failover")


def random_plan(rng: random.Random, duration: float, per_kind: int, max_workers: int = 4,
                start: float = 5.0) -> list[Fault]:
    """``per_kind`` faults of every kind at random times in ``[start, duration − 20 s]``.

    Pauses (held 7–11 s, longer than the member TTL), kills and rescales (to 1…``max_workers`` workers)
    fall at uniform random times and may overlap; Redis crashes (down 1–4 s) and skewed workers (living
    8–20 s) fall one in each of ``per_kind`` equal slots, so they never overlap one another. The last
    fault is a scale to 1.
    """
    end = max(start + 1.0, duration - 20.0)
    slot = (end - start) / per_kind
    plan = []
    for i in range(per_kind):
        plan.append(Fault(rng.uniform(start, end), "pause", hold=rng.uniform(7.0, 11.0)))
        plan.append(Fault(rng.uniform(start, end), "kill"))
        plan.append(Fault(rng.uniform(start, end), "scale", target=rng.randint(1, max_workers)))
        down = min(rng.uniform(1.0, 4.0), 0.5 * slot)
        plan.append(Fault(start + i * slot + rng.uniform(0.0, slot - down), "redis", hold=down))
        skewed = min(rng.uniform(8.0, 20.0), 0.7 * slot)
        plan.append(Fault(start + i * slot + rng.uniform(0.0, slot - skewed), "skew", hold=skewed))
    plan.append(Fault(end + 1.0, "scale", target=1))
    return sorted(plan)


class Chaos:
    """Executes a plan of :class:`Fault` s on a :class:`WorkerPool` and a :class:`CrashableRedis`.

    ``caused`` counts what really happened (``pause``: held longer than the member TTL on a worker that is
    not exiting; ``pause cut short``: one that did not count — its worker was killed or stopped meanwhile, was
    exiting, or was held no longer than the TTL — and is planned again; ``kill``: died of SIGKILL; ``redis
    kill``/``redis restart``; ``skewed worker``; ``scale up``/``scale down``; ``crash restart``: a worker
    that died by itself, restarted as a supervisor would), ``skipped`` what could not be done within 30
    tries (no eligible worker, pauses cut short again and again, Redis still down from the previous crash,
    another skewed worker alive). Clean stops and starts are postponed while Redis is down: a stop during an
    outage waits for Redis (up to the worker's ``--stop-timeout``), and this loop, which restarts Redis,
    would wait with it.
    """

    def __init__(self, pool: WorkerPool, redis_server: CrashableRedis | FailoverRedis, rng: random.Random,
                 events: EventLog,
                 skew_s: float = 45.0, member_ttl_s: float = MEMBER_TTL_S, fault_skewed: bool = True,
                 restart_delay: tuple[float, float] = (0.3, 2.0), max_workers: int = 4,
                 grace_s: float = 8.0) -> None:
        self.pool, self.redis, self.rng, self.events = pool, redis_server, rng, events
        self.skew_s, self.ttl, self.fault_skewed, self.restart_delay = skew_s, member_ttl_s, fault_skewed, restart_delay
        self.max_workers, self.grace_s = max_workers, grace_s
        self._last_at = 0.0  # time of the plan's last fault: its final rescale is kept as planned
        self.caused: collections.Counter[str] = collections.Counter()
        self.skipped: collections.Counter[str] = collections.Counter()
        self.skew_seen: list[float] = []  # member scores ahead of real time seen in Redis
        self.clock_seen: list[float] = []  # skewed workers' clock offsets measured from their logs
        self._queue: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = 0
        self._pending_starts = 0
        self._tries: collections.Counter[Fault] = collections.Counter()
        self.t0 = time.monotonic()

    # -- queue ---------------------------------------------------------------------

    def schedule(self, plan: Sequence[Fault], t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self._last_at = max((f.at for f in plan), default=0.0)
        for fault in plan:
            self._at(fault.at, fault.kind, lambda f=fault: self._fault(f))

    def _at(self, at: float, what: str, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.t0 + at, self._seq, what, action))

    def _later(self, delay: float, what: str, action: Callable[[], None]) -> None:
        self._at(time.monotonic() - self.t0 + delay, what, action)

    @property
    def idle(self) -> bool:
        return not self._queue

    def run_due(self) -> None:
        """Restart crashed workers (as a supervisor would, after a second), run every action whose time has come."""
        for worker in self.pool.reap(self.excused):
            self.caused["crash restart" if worker.end == "crashed" else "restart after a refused start"] += 1
            self._pending_starts += 1
            self._later(1.0, "restart", lambda skew=worker.skew_s: self._restart(skew, crashed=True))
        while self._queue and self._queue[0][0] <= time.monotonic():
            _, _, _, action = heapq.heappop(self._queue)
            action()

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Run actions until the queue is empty and ``done()``; False if ``timeout`` s pass first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.run_due()
            if self.idle and done():
                return True
            time.sleep(0.05)
        return False

    # -- victims -------------------------------------------------------------------

    def _eligible(self, workers: list[Worker], grace: bool = True) -> list[Worker]:
        """Workers a pause or kill may hit: not the skewed one unless ``fault_skewed``, and, with ``grace``, not
        one resumed in the last ``grace_s`` seconds (what a worker does after a pause, fenced and then claiming
        again after its cooldown, is the point of the pause: another pause must not cut that short). Kills take
        no grace: a worker killed right after it woke up is a fault worth having."""
        now = time.monotonic()
        return [w for w in workers if (self.fault_skewed or not w.skew_s)
                and (not grace or w.resumed_at is None or now - w.resumed_at >= self.grace_s) and not w.exiting()]

    def _victim(self, workers: list[Worker]) -> Worker | None:
        """A random worker among ``workers``, preferring those that hold partitions."""
        owners = [w for w in workers if w.owns_partitions()]
        pool = owners or workers
        return self.rng.choice(pool) if pool else None

    def _alive_count(self) -> int:
        return len(self.pool.alive()) + self._pending_starts

    # -- faults --------------------------------------------------------------------

    def _fault(self, fault: Fault) -> None:
        getattr(self, f"_do_{fault.kind}")(fault)

    def _retry_or_skip(self, fault: Fault) -> None:
        """The fault could not be caused now (no worker to hit: all paused, starting or excluded; a pause cut
        short; Redis still down): try again in a moment, 30 times in all, then count it as skipped."""
        self._tries[fault] += 1
        if self._tries[fault] > 30:
            self.skipped[fault.kind] += 1
            return
        self._later(1.0 + self.rng.random(), fault.kind, lambda: self._fault(fault))

    def _do_pause(self, fault: Fault) -> None:
        victim = self._victim(self._eligible(self.pool.running()))
        if victim is None or not self.pool.pause(victim):
            self._retry_or_skip(fault)
            return
        self._later(fault.hold, "resume", lambda: self._resume(victim, fault))

    def _resume(self, worker: Worker, fault: Fault) -> None:
        """End a pause: it counts if held longer than the TTL on a worker not exiting; if not, plan it again."""
        held = self.pool.resume(worker)
        exiting = worker.exiting()
        if held is not None and held > self.ttl and not exiting:
            self.caused["pause"] += 1
            return
        why = ("its worker was killed or stopped meanwhile" if held is None else "its worker is exiting" if exiting
               else f"held only {held:.1f} s")
        self.caused["pause cut short"] += 1
        self.events.add(f"pause of {worker.name} cut short ({why}): planned again")
        self._retry_or_skip(fault)

    def _do_kill(self, fault: Fault) -> None:
        victim = self._victim(self._eligible(self.pool.running(), grace=False))
        if victim is None:
            self._retry_or_skip(fault)
            return
        if self.pool.kill(victim):
            self.caused["kill"] += 1
        self._pending_starts += 1
        self._later(self.rng.uniform(*self.restart_delay), "restart", lambda: self._restart(victim.skew_s))

    def _restart(self, skew_s: float, crashed: bool = False) -> None:
        self._pending_starts -= 1
        self.pool.start(skew_s)
        if not crashed:
            self.caused["restart"] += 1

    def _do_redis(self, fault: Fault) -> None:
        if not self.redis.kill():  # still down from the previous crash (this loop ran late): try again
            self._retry_or_skip(fault)
            return
        self.caused["redis kill"] += 1
        self._later(fault.hold, "redis restart", self._redis_back)

    def _do_failover(self, fault: Fault) -> None:
        """A primary failover (with a :class:`FailoverRedis`): counted once it completed, in ``failovers``."""
        if not isinstance(self.redis, FailoverRedis) or not self.redis.kill():
            self._retry_or_skip(fault)
            return
        self.caused["failover started"] += 1

    def _redis_back(self) -> None:
        self.redis.start()
        self.caused["redis restart"] += 1

    def excused(self, worker: Worker, last_line: str) -> bool:
        """A worker started during a Redis outage may exit at once with its one-line error (status 2):
        documented behaviour, restarted like a supervisor would, not a crash."""
        return (worker.proc.returncode == 2 and "cannot reach Redis" in last_line
                and self.redis.was_down(worker.started))

    def _stop(self, worker: Worker) -> None:
        """A clean stop; a worker that refuses to start meanwhile is judged by :meth:`excused`, not as a stop."""
        self.pool.stop(worker, excused=self.excused)

    def _postponed(self, fault: Fault) -> bool:
        """Re-schedule a fault that needs clean stops while Redis is down."""
        if not self.redis.down:
            return False
        self._later(1.0 + self.rng.random(), fault.kind, lambda: self._fault(fault))
        return True

    def _do_skew(self, fault: Fault) -> None:
        if self._postponed(fault):
            return
        normal = [w for w in self.pool.running() if not w.skew_s]
        if any(w.skew_s for w in self.pool.alive()) or not normal:
            self._retry_or_skip(fault)
            return
        self._stop(self.rng.choice(normal))
        skewed = self.pool.start(self.skew_s)
        self.caused["skewed worker"] += 1
        self.events.add(f"{skewed.name} runs with its clock {self.skew_s:+g} s off for {fault.hold:.0f} s")
        for k in range(1, int(fault.hold / 2)):
            self._later(2.0 * k, "observe skew", self._observe_skew)
        self._later(fault.hold, "unskew", self._unskew)

    def _unskew(self) -> None:
        """Replace the skewed workers (the one started, or its restarts) by normal ones."""
        if self.redis.down:
            self._later(1.0 + self.rng.random(), "unskew", self._unskew)
            return
        self._observe_skew()
        for worker in [w for w in self.pool.alive() if w.skew_s]:
            self._stop(worker)
            self.pool.start()

    def _observe_skew(self) -> None:
        """Record the skewed workers' clock offsets (from their logs) and how far ahead of real time the
        group's newest member score in Redis is (which shows whether membership trusts the local clock)."""
        for worker in self.pool.alive():
            offset = log_clock_offset(worker.log_path) if worker.skew_s else None
            if offset is not None:
                self.clock_seen.append(offset)
                self.events.add(f"{worker.name}'s log is stamped {offset:+.1f} s off the real clock")
        cmd = self.pool.command
        try:
            client = quick_client(cmd.redis_url)
            key = Membership(client, cmd.stream, cmd.group, "harness").key
            scores = [s for _, s in client.zrange(key, 0, -1, withscores=True)]
            client.close()
        except redis.RedisError:
            return
        if scores:
            newest = max(scores) / (1000.0 if max(scores) > 1e11 else 1.0)  # seconds, or milliseconds
            ahead = newest - time.time() - self.ttl
            self.skew_seen.append(ahead)
            self.events.add(f"member scores in Redis: the newest is {ahead:+.1f} s ahead of real time + TTL")

    def _do_scale(self, fault: Fault) -> None:
        if self._postponed(fault):
            return
        before = self._alive_count()
        target = fault.target
        if target == before and fault.at < self._last_at:  # a rescale that changes nothing is no fault
            target = self.rng.choice([n for n in range(1, self.max_workers + 1) if n != before])
        while self._alive_count() < target:
            self.pool.start()
        while self._alive_count() > target and self.pool.alive():
            candidates = self.pool.running() or self.pool.alive()  # not a paused one: its pause would not count
            self._stop(self.rng.choice([w for w in candidates if w.skew_s] or candidates))
        after = self._alive_count()
        if after > before:
            self.caused["scale up"] += 1
        elif after < before:
            self.caused["scale down"] += 1
        self.events.add(f"scaled {before} -> {after} workers")


# ---------------------------------------------------------------------------------------------
# Watching Redis while the run goes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Violation:
    """A partition whose stored count disagreed with the valid rows below its stored next offset."""

    partition: int
    first_bad: float  # run time of the first sample that disagreed
    last_good: float  # run time of the sample before it that agreed (0 if none)
    excess: int  # stored count − expected count at the first bad sample
    next_offset: int
    worst: int = 0


class Monitor(threading.Thread):
    """Samples the stream's per-partition (count, next offset) twice a second and checks them against
    :class:`Truth`; keeps the first disagreement of each partition."""

    def __init__(self, redis_url: str, stream: str, truth: Truth, events: EventLog, interval: float = 0.5) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.client = quick_client(redis_url)
        self.store = SketchStore(self.client)
        self.store.get_spec(stream)  # cached now, while Redis is up: later samples need no spec read
        self.stream, self.truth, self.events, self.interval = stream, truth, events, interval
        self.stop_event = threading.Event()
        self.violations: dict[int, Violation] = {}
        self._last_good: dict[int, float] = {}
        self.samples = 0
        self.latest: tuple[int, dict[int, int | None]] | None = None  # (total count, next offsets)
        self.changed_at = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        try:
            state = self.store.state(self.stream)
        except (redis.RedisError, OSError):
            return
        now = self.events.now()
        self.samples += 1
        latest = (state.sketch.count, {p.partition: p.next_offset for p in state.partitions})
        if latest != self.latest:
            self.latest, self.changed_at = latest, time.monotonic()
        for part in state.partitions:
            if part.next_offset is None:
                continue
            expected = self.truth.valid_below(part.partition, part.next_offset)
            if expected is None:
                continue
            self._check(part.partition, part.count - expected, part.next_offset, now)

    def _check(self, partition: int, excess: int, next_offset: int, now: float) -> None:
        if excess == 0:
            if partition not in self.violations:
                self._last_good[partition] = now
            return
        seen = self.violations.get(partition)
        if seen is None:
            self.violations[partition] = Violation(partition, now, self._last_good.get(partition, 0.0), excess,
                                                   next_offset, excess)
            self.events.add(f"partition {partition}: stored count {excess:+d} off the valid rows below its "
                            f"next offset {next_offset}")
        elif abs(excess) > abs(seen.worst):
            seen.worst = excess

    def close(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(10)
        self.client.close()


# ---------------------------------------------------------------------------------------------
# Checks at the end
# ---------------------------------------------------------------------------------------------


def wait_settled(monitor: Monitor, log_truth: LogTruth, timeout: float, quiet_s: float = 3.0,
                 tick: Callable[[], None] = lambda: None) -> bool:
    """Wait until every partition's stored next offset is its end offset and nothing moved for ``quiet_s``
    (as seen by the running ``monitor``); ``tick`` runs meanwhile (the supervisor restarting crashed workers)."""
    deadline = time.monotonic() + timeout
    ends = log_truth.ends
    while time.monotonic() < deadline:
        tick()
        if monitor.latest is not None:
            offsets = monitor.latest[1]
            at_end = all(offsets.get(p) == end for p, end in enumerate(ends) if end)
            if at_end and time.monotonic() - monitor.changed_at >= quiet_s:
                return True
        time.sleep(0.5)
    return False


def check_sketch(store: SketchStore, stream: str, spec: SketchSpec, truth: LogTruth) -> tuple[list[str], dict]:
    """Count, per-partition counts and offsets, and the sum against the offline sketch of the valid rows."""
    errors: list[str] = []
    state = store.state(stream)
    rows = truth.rows
    facts: dict[str, object] = {"count": state.sketch.count, "expected count": rows.shape[0]}
    if state.sketch.count != rows.shape[0]:
        diff = state.sketch.count - rows.shape[0]
        errors.append(f"count {state.sketch.count} != {rows.shape[0]} valid rows ({diff:+d})")
    ends = truth.ends
    for part in state.partitions:
        end = ends[part.partition]
        expected = truth.valid_below(part.partition, end)
        if part.next_offset != end:
            errors.append(f"partition {part.partition}: next offset {part.next_offset}, the topic ends at {end}")
        if expected is not None and part.count != expected:
            errors.append(f"partition {part.partition}: count {part.count} != {expected} valid rows "
                          f"({part.count - expected:+d})")
    seen = {p.partition for p in state.partitions}
    missing = [p for p, end in enumerate(ends) if end and p not in seen]
    if missing:
        errors.append(f"partitions never written: {missing}")
    expected_sum = np.zeros(2 * spec.m)
    fmap = FeatureMap(spec)
    for start in range(0, rows.shape[0], 100_000):
        expected_sum += fmap.feature_sum(rows[start : start + 100_000])[0]
    rel = float(np.linalg.norm(state.sketch.total - expected_sum) / max(np.linalg.norm(expected_sum), 1e-300))
    facts["sum relative error"] = rel
    if not rel <= 1e-9:
        errors.append(f"sum relative error {rel:.3g} > 1e-9 against the offline sketch of the valid rows")
    return errors, facts


def read_dead_letters(bootstrap: str, dlq_topic: str, want: set[str], timeout: float) -> list:
    """Records of ``dlq_topic`` from the beginning, until every source in ``want`` is seen and a poll
    comes back empty, or ``timeout`` s pass."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             fetch_max_wait_ms=100, max_partition_fetch_bytes=16 << 20)
    out: list = []
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while dlq_topic not in consumer.topics():
            if time.monotonic() > deadline:
                return out
            time.sleep(0.5)
        consumer.subscribe([dlq_topic])
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    out.append(r)
                    seen.add(header(r, SOURCE_HEADER))
            if not batch and want <= seen:
                break
    finally:
        consumer.close()
    return out


def header(record, name: str) -> str:
    for key, value in record.headers or []:
        if key == name:
            return value.decode("utf-8", "replace")
    return ""


def check_dead_letters(bootstrap: str, topic: str, dlq_topic: str, truth: LogTruth,
                       timeout: float = 60.0) -> tuple[list[str], dict]:
    """Every malformed record in the dead-letter topic at least once with the expected reason; nothing else."""
    expected = {f"{topic}:{b.partition}:{b.offset}": b for b in truth.bad}
    letters = read_dead_letters(bootstrap, dlq_topic, set(expected), timeout)
    by_source: dict[str, list[str]] = collections.defaultdict(list)
    for r in letters:
        by_source[header(r, SOURCE_HEADER)].append(header(r, REASON_HEADER))
    errors = []
    missing = [s for s in expected if s not in by_source]
    wrong = [(s, expected[s].reason, by_source[s]) for s in expected
             if s in by_source and any(reason != expected[s].reason for reason in by_source[s])]
    unexpected = [s for s in by_source if s not in expected]
    if missing:
        errors.append(f"{len(missing)} of {len(expected)} malformed records never reached {dlq_topic} "
                      f"(e.g. {missing[:3]})")
    if wrong:
        errors.append(f"{len(wrong)} dead letters with the wrong reason (e.g. {wrong[:3]})")
    if unexpected:
        errors.append(f"{len(unexpected)} dead letters of records that are not malformed (e.g. {unexpected[:3]})")
    facts = {"malformed records": len(expected), "dead letters": len(letters),
             "dead letters resent (at least once)": len(letters) - len(by_source),
             "reasons": dict(collections.Counter(b.reason for b in truth.bad))}
    return errors, facts


def log_stats(workers: Sequence[Worker]) -> collections.Counter[str]:
    """Counts of :data:`LOG_MARKERS` over the workers' logs."""
    stats: collections.Counter[str] = collections.Counter()
    for w in workers:
        text = w.log_text()
        for name, marker in LOG_MARKERS.items():
            stats[name] += text.count(marker)
    return stats


def fences_by_worker(workers: Sequence[Worker]) -> dict[str, int]:
    return {w.name: w.log_text().count(LOG_MARKERS["fences"]) for w in workers}


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChaosConfig:
    """One run: the stream and its topic, the records, the workers, the timeouts."""

    valid_records: int = 30_000
    rate: float = 400.0  # records per second, malformed ones included
    bad_fraction: float = 0.03
    partitions: int = 4
    initial_workers: int = 1
    skew_s: float = 45.0
    fault_skewed: bool = True  # whether pauses and kills may hit the skewed worker
    max_workers: int = 4  # the most workers a random rescale asks for
    d: int = 2
    m: int = 64
    seed: int = 0
    flush_ms: int | None = None  # None: the worker's default (500 ms)
    settle_timeout_s: float = 90.0
    dlq_timeout_s: float = 60.0
    exclude_malformed: tuple[str, ...] = ()  # labels of malformed_kinds() not to produce (diagnosis runs)
    run_timeout_s: float = 600.0  # the plan and the producer must be done within this

    def spec(self, name: str) -> SketchSpec:
        return SketchSpec.create(d=self.d, m=self.m, law="adapted-radius", sigma=0.7, seed=self.seed, name=name)


@dataclasses.dataclass
class ChaosResult:
    """What a run caused, what it found, and a printable :meth:`report`."""

    caused: collections.Counter
    skipped: collections.Counter
    logs: collections.Counter
    facts: dict
    errors: list[str]
    violations: list[Violation]
    events: EventLog
    fences_by_worker: dict[str, int]
    wall_s: float
    folder: Path

    def context(self, violation: Violation, before_s: float = 20.0) -> list[tuple[float, str]]:
        """Events in the ``before_s`` seconds before a violation was first seen."""
        return self.events.between(violation.first_bad - before_s, violation.first_bad)

    def table(self) -> str:
        rows = [("fault", "caused", "skipped")]
        for kind in sorted(set(self.caused) | set(self.skipped)):
            rows.append((kind, str(self.caused.get(kind, 0)), str(self.skipped.get(kind, 0))))
        rows.append(("", "", ""))
        rows += [(f"log: {k}", str(v), "") for k, v in sorted(self.logs.items())]
        rows.append(("", "", ""))
        rows += [(k, json.dumps(v) if isinstance(v, dict) else f"{v:.3g}" if isinstance(v, float) else str(v), "")
                 for k, v in self.facts.items()]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{width}}  {b:>10}  {c:>8}".rstrip() for a, b, c in rows)

    def failures(self, minimums: dict[str, tuple[float, float]]) -> list[str]:
        """The run's errors, after one line per ``what: (got, least)`` of ``minimums`` with got < least."""
        short = [f"only {got:g} {what} (at least {least:g} wanted)" for what, (got, least) in minimums.items()
                 if got < least]
        return short + self.errors

    def report(self) -> str:
        lines = [f"chaos run ({self.wall_s:.0f} s wall, logs in {self.folder}):", self.table(),
                 f"fences per worker: {self.fences_by_worker}"]
        for v in self.violations:
            lines.append(f"partition {v.partition}: first off by {v.excess:+d} at {v.first_bad:.1f} s "
                         f"(last agreed at {v.last_good:.1f} s, next offset {v.next_offset}), worst {v.worst:+d}; "
                         f"events in the 20 s before:")
            lines += [f"    {t:8.2f}s  {e}" for t, e in self.context(v)]
        lines.append("errors:" if self.errors else "errors: none (exact)")
        lines += [f"  - {e}" for e in self.errors]
        return "\n".join(lines)


class ChaosRun:
    """Own Redis, fresh stream and topic, workers, live producer, a fault plan, then the checks."""

    def __init__(
        self, config: ChaosConfig, folder: Path, kafka: str, redis_backend: FailoverRedis | None = None
    ) -> None:
        """``redis_backend``: a replicated Redis to run on (its ``failover`` faults); default the run's own
        :class:`CrashableRedis` (``redis`` faults)."""
        self.config, self.folder, self.kafka = config, Path(folder), kafka
        self.redis_backend = redis_backend
        self.events = EventLog()
        suffix = uuid.uuid4().hex[:8]
        self.stream, self.topic = f"chaos-{suffix}", f"chaos-{suffix}-events"
        self.spec = config.spec(self.stream)

    def execute(self, plan: Sequence[Fault]) -> ChaosResult:
        cfg = self.config
        start = time.monotonic()
        probed = probe_skew(cfg.skew_s)
        self.events.add(f"faketime probe: time.time() in a child {probed:+.2f} s off (asked {cfg.skew_s:+g})")
        if abs(probed - cfg.skew_s) > 5.0:
            raise AssertionError(f"clock skew does not work: asked {cfg.skew_s:+g} s, a child measured {probed:+.2f}")
        redis_server = self.redis_backend or CrashableRedis(self.folder / "redis", self.events)
        redis_server.start()
        if isinstance(redis_server, FailoverRedis):
            redis_server.events, redis_server.key = self.events, StreamKeys(self.stream).meta
        pool: WorkerPool | None = None
        monitor: Monitor | None = None
        producer: LiveProducer | None = None
        try:
            store = SketchStore(connect(redis_server.url))
            store.create_stream(self.spec)
            ensure_topic(self.kafka, self.topic, cfg.partitions)
            command = IngestCommand(self.stream, self.topic, self.kafka, redis_server.url, flush_ms=cfg.flush_ms)
            pool = WorkerPool(self.folder / "workers", command, self.events)
            truth = Truth(cfg.partitions, cfg.d)
            chaos = Chaos(pool, redis_server, random.Random(cfg.seed), self.events, skew_s=cfg.skew_s,
                          fault_skewed=cfg.fault_skewed, max_workers=cfg.max_workers)
            monitor = Monitor(redis_server.url, self.stream, truth, self.events)
            producer = LiveProducer(self.kafka, self.topic, self.spec, truth, cfg.valid_records, cfg.rate,
                                    seed=cfg.seed + 1, bad_fraction=cfg.bad_fraction,
                                    max_bytes=command.max_record_bytes, exclude=cfg.exclude_malformed)
            errors = self._drive(pool, chaos, monitor, producer, plan)
            log_truth = read_log(self.kafka, self.topic, truth)
            acked = sum(map(len, truth.acked_at))
            truth_from = "read back from the topic"
            if log_truth.records < acked:
                self.events.add(f"reading the topic back gave {log_truth.records} of {acked} acknowledged records; "
                                "checking against the broker's acknowledgements instead")
                log_truth, truth_from = acked_log_truth(truth), "the broker's acknowledgements"
            settled = wait_settled(monitor, log_truth, cfg.settle_timeout_s, tick=chaos.run_due)
            self.events.add("settled" if settled else f"not settled within {cfg.settle_timeout_s:.0f} s")
            errors += [] if settled else [f"the sketch did not settle within {cfg.settle_timeout_s:.0f} s"]
            if log_truth.foreign:
                errors.append(f"{log_truth.foreign} records in {self.topic} that the harness did not send")
            sketch_errors, facts = check_sketch(store, self.stream, self.spec, log_truth)
            dlq_errors, dlq_facts = check_dead_letters(self.kafka, self.topic, command.dlq_topic, log_truth,
                                                       cfg.dlq_timeout_s)
            facts = {"faketime probe (s)": probed, "valid records": truth.valid_records, "valid rows": truth.valid_rows,
                     "records produced": truth.sent, "ground truth from": truth_from,
                     "records in the topic": log_truth.records,
                     "stored twice (producer retries)": log_truth.duplicates,
                     "failed sends (not in the topic)": log_truth.missing, **facts, **dlq_facts,
                     "skewed clock seen in a log (s)": max(chaos.clock_seen, default=0.0),
                     "newest member score ahead in Redis (s)": max(chaos.skew_seen, default=0.0)}
            errors += sketch_errors + dlq_errors + self._final_workers(pool, chaos)
            errors += pool.errors + getattr(redis_server, "errors", [])
            if isinstance(redis_server, FailoverRedis):
                chaos.caused["failover"] = redis_server.failovers
            store.client.close()
            return ChaosResult(chaos.caused, chaos.skipped, log_stats(pool.workers), facts, errors,
                               sorted(monitor.violations.values(), key=lambda v: v.first_bad), self.events,
                               fences_by_worker(pool.workers), time.monotonic() - start, self.folder)
        finally:
            if producer is not None:
                producer.stop_event.set()
            if monitor is not None:
                monitor.close()
            if pool is not None:
                pool.close()
            redis_server.stop()

    def _drive(self, pool: WorkerPool, chaos: Chaos, monitor: Monitor, producer: LiveProducer,
               plan: Sequence[Fault]) -> list[str]:
        """Start the workers and wait for a first claim, then stream while the plan runs."""
        for _ in range(self.config.initial_workers):
            pool.start()
        deadline = time.monotonic() + 90
        while not any(w.owns_partitions() for w in pool.workers):
            if time.monotonic() > deadline or not pool.alive():
                raise AssertionError("no worker took a partition within 90 s:\n" + pool.workers[0].log_text()[-3000:])
            time.sleep(0.2)
        self.events.add("stream starts")
        monitor.start()
        producer.start()
        chaos.schedule(plan)
        done = chaos.run_until(lambda: not producer.is_alive(), self.config.run_timeout_s)
        errors = [] if done else [f"the plan and the stream did not finish within {self.config.run_timeout_s:.0f} s"]
        producer.stop_event.set()
        producer.join(120)
        if producer.error is not None:
            errors.append(f"the producer failed: {producer.error!r}")
        self.events.add(f"stream ends: {producer.truth.sent} records")
        return errors

    def _final_workers(self, pool: WorkerPool, chaos: Chaos) -> list[str]:
        """Every worker started must be alive unless the harness ended it; then stop the rest cleanly."""
        pool.reap(chaos.excused)
        errors = []
        if not pool.alive():
            errors.append("no worker alive at the end")
        for w in pool.alive():
            pool.stop(w, excused=chaos.excused)
        return errors
