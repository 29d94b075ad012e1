"""Cost of a drift update: the whole-window score alone, with the per-field scores, and the learner's update.

All are timed in one run on the same windows (the learner's recent window as its seven 10 s buckets and its
reference window, here sketched from standard-normal rows with a spec drawn from a pilot as the product does)
at ``--m`` frequencies and ``--d`` fields: the whole-window score alone (:func:`learner.drift.drift_score`, the
update before per-field scores and the scan), that score plus :func:`learner.drift_fields.field_scores` (the
weights are built once per spec, at the first call, which is timed separately), and the learner's update now —
the scan over the buckets (:func:`learner.drift.scan_score`), the buckets merged, and the field scores
(docs/design.md §1, "Drift" and "Drift per field"). They are interleaved, repeat by repeat, and the medians
are reported. ``--redis`` adds the whole update as the learner runs it, window reads included, on a throwaway
Redis holding eleven minutes of 10 s buckets: the two window reads and the score (before) against the recent
window read bucket by bucket, the reference read, the scan, the merge and the field scores (now).

Run: ``.venv/bin/python bench/drift_fields_cost.py [--m 1000] [--d 10] [--repeats 2000] [--redis]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.partition_buffer import PartitionBuffer  # noqa: E402
from learner.drift import drift_score, scan_score  # noqa: E402
from learner.drift_fields import build_field_weights, field_scores  # noqa: E402
from sketch_store.features import FeatureMap  # noqa: E402
from sketch_store.pilot import spec_from_pilot  # noqa: E402
from sketch_store.redis_connect import connect  # noqa: E402
from sketch_store.redis_store import SketchStore  # noqa: E402
from sketch_store.sketch import Sketch, merge_all  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402
from sketchgen.local_stack import RedisServer  # noqa: E402

log = logging.getLogger("bench.drift_fields_cost")


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stream_with_buckets(store: SketchStore, spec: SketchSpec, rng: np.random.Generator, now: float) -> None:
    """Eleven minutes of 10 s buckets of 150 rows each in stream ``bench``, flushed as the ingest worker does."""
    store.create_stream(spec)
    buf = PartitionBuffer(0, spec.m, store.bucket_config(spec.name))
    features = FeatureMap(spec)
    for k in range(66):
        total, count = features.feature_sum(rng.normal(size=(150, spec.d)))
        buf.add(total, count, now - 5 - 10 * k)
    buf.advance(66)
    claim = store.claim(spec.name, "bench", 0)
    store.flush(spec.name, claim, 0, 66, buf.total, buf.count, buf.bucket_deltas(), now=now)


def with_redis(spec: SketchSpec, repeats: int) -> tuple[float, float]:
    """Median seconds of the update before and now, window reads from a throwaway Redis included."""
    rng = np.random.default_rng(1)
    now = time.time()
    with RedisServer(tempfile.mkdtemp(prefix="drift-cost-"), appendonly=False) as server:
        store = SketchStore(connect(server.url))
        stream_with_buckets(store, spec, rng, now)

        def before() -> None:
            drift_score(store.read_range(spec.name, 0, 60, now), store.read_range(spec.name, 60, 660, now))

        def after() -> None:
            buckets = store.read_buckets(spec.name, 0, 60, now)
            reference = store.read_range(spec.name, 60, 660, now)
            scan_score(buckets, reference)
            field_scores(merge_all(buckets), reference, spec)

        after()
        old, new = [], []
        for _ in range(repeats):
            old.append(timed(before))
            new.append(timed(after))
        return statistics.median(old), statistics.median(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--redis", action="store_true", help="also time the update with its Redis reads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(0)
    spec = spec_from_pilot(rng.normal(size=(3000, args.d)), m=args.m, seed=0, name="bench")
    reference = Sketch.from_data(spec, rng.normal(size=(5000, args.d)))
    shifted = [Sketch.from_data(spec, rng.normal(size=(150, args.d)) + np.eye(args.d)[0] * 0.3) for _ in range(7)]
    buckets = [Sketch(s.total, s.count, s.fingerprint) for s in shifted]  # as the store reads them: no bounds
    recent = merge_all(buckets)
    build = timed(lambda: build_field_weights(spec))

    def both() -> None:
        drift_score(recent, reference)
        field_scores(recent, reference, spec)

    def learner_update() -> None:
        scan_score(buckets, reference)
        field_scores(merge_all(buckets), reference, spec)

    field_scores(recent, reference, spec)  # builds and caches the weights
    alone, with_fields, update = [], [], []
    for _ in range(args.repeats):
        alone.append(timed(lambda: drift_score(recent, reference)))
        with_fields.append(timed(both))
        update.append(timed(learner_update))
    a, b, c = statistics.median(alone), statistics.median(with_fields), statistics.median(update)
    log.info("m = %d, d = %d, %d repeats (medians)", args.m, args.d, args.repeats)
    log.info("| update | µs | × drift score alone |")
    log.info("|---|---|---|")
    log.info("| whole-window drift score alone (before) | %.1f | 1.00 |", a * 1e6)
    log.info("| drift score + field scores | %.1f | %.2f |", b * 1e6, b / a)
    log.info("| scan over 7 buckets + merge + field scores (the learner's update) | %.1f | %.2f |", c * 1e6, c / a)
    log.info("| field weights, once per spec | %.1f | %.2f |", build * 1e6, build / a)
    if args.redis:
        old, new = with_redis(spec, max(args.repeats // 4, 50))
        log.info("| with Redis reads: two windows + score (before) | %.1f | 1.00 |", old * 1e6)
        log.info("| with Redis reads: the learner's update now | %.1f | %.2f |", new * 1e6, new / old)


if __name__ == "__main__":
    main()
