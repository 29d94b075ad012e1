"""Decoding and feature folding of polled records, off the consume loop.

:func:`fold_batch` takes the raw values of one poll (per partition: values, headers,
timestamps) and returns, per partition, the feature sums per fine time bucket and the
records to reject. It is pure (no Kafka, no Redis), so the worker runs it in a child
process (:class:`Folder`): the consume loop's Python (kafka-python's record parsing) and
the decoding + feature kernel then run on separate cores instead of sharing one GIL.

Example
-------
>>> import numpy as np
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=2, m=4, law="gaussian", seed=0)
>>> set_up(spec.to_bytes(), fine_seconds=10, max_value_bytes=1 << 20)
>>> (result,) = fold_batch([Job(values=[b"[1, 2]", b"oops"], headers=None, timestamps_ms=[5000, 5000])])
>>> [(start, n) for start, _, n in result.buckets], [(i, reason) for i, reason, _ in result.rejects]
([(0, 1)], [(1, 'invalid_json')])
>>> result.bounds.lo.tolist(), result.bounds.hi.tolist()
([1.0, 2.0], [1.0, 2.0])
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence

import numpy as np

from ingest.decode import (
    JOIN,
    MAX_STANDARDIZED,
    RecordError,
    check_range,
    decode_joined_vectors,
    decode_json_vectors,
    decode_typed_value,
    decode_value,
)
from sketch_store.bounds import Bounds
from sketch_store.features import FeatureMap
from sketch_store.spec import SketchSpec


@dataclasses.dataclass
class Job:
    """One partition's polled records: values, headers (None when no record has any), timestamps (ms).

    Header-less values travel as one NUL-joined buffer plus their lengths (``joined``,
    ``lengths``; ``values`` None): one memory copy instead of pickling a list of small objects.
    """

    values: list[bytes | None] | None
    headers: list[list[tuple[str, bytes]]] | None
    timestamps_ms: Sequence[int]
    joined: bytes | None = None
    lengths: np.ndarray | None = None

    @classmethod
    def plain(cls, values: list[bytes], timestamps_ms: np.ndarray) -> Job:
        """A job of header-less values (none of them None)."""
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        return cls(None, None, timestamps_ms, JOIN.join(values), lengths)

    def value_list(self) -> list[bytes | None]:
        """The values, split back out of ``joined`` when needed."""
        if self.values is not None:
            return self.values
        assert self.joined is not None and self.lengths is not None
        ends = np.cumsum(self.lengths + 1) - 1
        starts = ends - self.lengths
        return [self.joined[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


@dataclasses.dataclass
class Folded:
    """Per fine bucket ``(start, feature sum, rows)``, ``(record index, reason, detail)`` rejects, and the
    coordinate bounds of all the rows (None when there are none)."""

    buckets: list[tuple[int, np.ndarray, int]]
    rejects: list[tuple[int, str, str]]
    bounds: Bounds | None = None


_state: dict[str, object] = {}


def set_up(spec_bytes: bytes, fine_seconds: int, max_value_bytes: int) -> None:
    """Install the spec and limits in this process (the child's initializer)."""
    spec = SketchSpec.from_bytes(spec_bytes)
    _state.update(spec=spec, fmap=FeatureMap(spec), fine=fine_seconds, max_bytes=max_value_bytes)


def decode_job(job: Job, spec: SketchSpec, max_bytes: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Rows, their times (s) and the rejects of one job; all-plain JSON rows take the fast path.

    A spec of typed records decodes record by record (:func:`ingest.decode.decode_typed_value`).
    """
    d = spec.d
    if spec.encoder is None and job.headers is None:
        if job.joined is not None:
            rows = decode_joined_vectors(job.joined, len(job.lengths), d) if job.lengths.max() <= max_bytes else None
        else:
            rows = decode_json_vectors(job.values, d, max_bytes)  # type: ignore[arg-type]
        if rows is not None and np.all(check_range(rows, spec.mean, spec.std)):
            return rows, np.asarray(job.timestamps_ms, dtype=np.float64) / 1000.0, []
    parts, stamps, rejects = [], [], []
    for i, value in enumerate(job.value_list()):
        try:
            decoded = decode_one(value, job.headers[i] if job.headers else None, spec, max_bytes)
            if not np.all(check_range(decoded, spec.mean, spec.std)):
                raise RecordError("out_of_range", f"a row lies more than {MAX_STANDARDIZED:g} stds from the mean")
        except RecordError as exc:
            rejects.append((i, exc.reason, exc.detail))
            continue
        parts.append(decoded)
        stamps.append(np.full(decoded.shape[0], job.timestamps_ms[i] / 1000.0))
    if not parts:
        return np.empty((0, d)), np.empty(0), rejects
    return np.concatenate(parts), np.concatenate(stamps), rejects


def decode_one(value: bytes | None, headers: list[tuple[str, bytes]] | None, spec: SketchSpec,
               max_bytes: int) -> np.ndarray:
    """The rows of one record value: vectors for a numeric spec, the encoded record for a typed one."""
    if spec.encoder is not None:
        return decode_typed_value(value, headers, spec.encoder, max_bytes)
    return decode_value(value, headers, spec.d, max_bytes)


def fold_batch(jobs: list[Job]) -> list[Folded]:
    """Decode each job and sum its rows' features per fine time bucket (see module docstring)."""
    spec: SketchSpec = _state["spec"]  # type: ignore[assignment]
    fmap: FeatureMap = _state["fmap"]  # type: ignore[assignment]
    fine: int = _state["fine"]  # type: ignore[assignment]
    out = []
    for job in jobs:
        rows, times, rejects = decode_job(job, spec, _state["max_bytes"])  # type: ignore[arg-type]
        buckets, bounds = [], None
        if rows.shape[0]:
            bounds = Bounds.of(rows)
            starts = (np.floor(times / fine) * fine).astype(np.int64)
            uniq = np.unique(starts)
            groups = [(uniq[0], rows)] if uniq.size == 1 else [(s, rows[starts == s]) for s in uniq]
            for start, group in groups:
                total, n = fmap.feature_sum(group, validate=False)
                buckets.append((int(start), total, n))
        out.append(Folded(buckets, rejects, bounds))
    return out


#: How often the fold child checks that the worker that started it is still alive (seconds).
PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """Exit the fold child once its worker is gone (a SIGKILLed worker cannot stop it otherwise)."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:  # re-parented: the worker died
            os._exit(0)


def _child_init(spec_bytes: bytes, fine_seconds: int, max_value_bytes: int, parent: int) -> None:
    # The worker process handles SIGINT/SIGTERM (flush, then stop); the child just follows it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    set_up(spec_bytes, fine_seconds, max_value_bytes)


class Folder:
    """Runs :func:`fold_batch` in one child process (spawned, so no lock or thread is inherited)."""

    def __init__(self, spec: SketchSpec, fine_seconds: int, max_value_bytes: int) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_init,
            initargs=(spec.to_bytes(), fine_seconds, max_value_bytes, os.getpid()),
        )
        self._pool.submit(fold_batch, [])  # start the child now, not on the first poll

    def submit(self, jobs: list[Job]) -> concurrent.futures.Future:
        return self._pool.submit(fold_batch, jobs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
