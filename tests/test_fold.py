"""Decoding + folding of polled batches (the worker's child process), as pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest.decode import F32_CONTENT_TYPE
from ingest.fold import Folder, Job, fold_batch, set_up
from sketch_store.features import FeatureMap
from sketch_store.spec import SketchSpec

SPEC = SketchSpec.create(d=2, m=16, law="adapted-radius", sigma=0.5, seed=0)


@pytest.fixture(autouse=True)
def installed():
    set_up(SPEC.to_bytes(), fine_seconds=10, max_value_bytes=1 << 16)


def test_plain_job_splits_back_exactly():
    values = [b"[1,2]", b"", b"[3, 4]", b"x\x01y", b"[5,6]"]
    job = Job.plain(values, np.arange(5))
    assert job.values is None and job.value_list() == values


def test_fast_and_slow_paths_give_the_same_sums_and_buckets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    values = [json.dumps(r.tolist()).encode() for r in x]
    times = np.array([1000 * (i // 25) * 10 for i in range(50)])  # two fine buckets: 0 and 10 s
    (fast,) = fold_batch([Job.plain(values, times)])
    bad = [*values, b"[1, 2, 3]"]  # one bad record sends the batch down the record-by-record path
    (slow,) = fold_batch([Job.plain(bad, np.append(times, 0))])
    assert [(s, n) for s, _, n in fast.buckets] == [(0, 25), (10, 25)] == [(s, n) for s, _, n in slow.buckets]
    for (_, a, _), (_, b, _) in zip(fast.buckets, slow.buckets, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert slow.rejects == [(50, "wrong_dimension", slow.rejects[0][2])]
    expected, _ = FeatureMap(SPEC).feature_sum(x[:25])
    np.testing.assert_allclose(fast.buckets[0][1], expected, rtol=1e-12)


def test_headers_and_limits():
    f32 = np.ones((3, 2), dtype="<f4").tobytes()
    job = Job(values=[f32, b"[1,2]", b"[" + b" " * (1 << 17) + b"1,2]"],
              headers=[[("content-type", F32_CONTENT_TYPE.encode())], [], []], timestamps_ms=[0, 0, 0])
    (out,) = fold_batch([job])
    assert sum(n for _, _, n in out.buckets) == 4
    assert [(i, r) for i, r, _ in out.rejects] == [(2, "too_large")]


def test_a_tombstone_among_plain_rows_is_rejected_not_a_crash():
    """A record with no value (a Kafka tombstone) in a header-less batch: rejected as empty, the rest folded."""
    job = Job(values=[b"[1, 2]", None, b"[3, 4]"], headers=None, timestamps_ms=[0, 0, 0])  # as the worker builds it
    (out,) = fold_batch([job])
    assert sum(n for _, _, n in out.buckets) == 2
    assert [(i, r) for i, r, _ in out.rejects] == [(1, "empty")]


def test_folder_child_process_matches_in_process():
    values = [json.dumps([float(i), -float(i)]).encode() for i in range(100)]
    job = Job.plain(values, np.zeros(100, dtype=np.int64))
    folder = Folder(SPEC, 10, 1 << 16)
    try:
        (child,) = folder.submit([job]).result(timeout=60)
    finally:
        folder.close()
    (here,) = fold_batch([job])
    np.testing.assert_array_equal(child.buckets[0][1], here.buckets[0][1])


CHILD_REPORTER = """
import sys, time
from ingest.fold import Folder
from sketch_store.spec import SketchSpec
folder = Folder(SketchSpec.create(d=2, m=16, law="adapted-radius", sigma=0.5, seed=0), 10, 1 << 16)
folder.submit([]).result(timeout=60)
print(*folder._pool._processes, flush=True)
time.sleep(600)
"""


def test_the_fold_child_exits_when_its_worker_is_sigkilled():
    """A SIGKILLed worker cannot shut its child down; the child notices it was orphaned and exits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    worker = subprocess.Popen([sys.executable, "-c", CHILD_REPORTER], stdout=subprocess.PIPE, text=True)
    try:
        (child,) = (int(p) for p in worker.stdout.readline().split())
        os.kill(child, 0)  # alive
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"fold child {child} outlived its SIGKILLed worker by 15 s")
    finally:
        if worker.poll() is None:
            worker.kill()
