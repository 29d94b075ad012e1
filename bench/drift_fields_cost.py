"""Cost of a drift update with and without the per-field scores (docs/design.md §1, "Drift per field").

Both are timed in one run on the same two window sketches (the learner's recent and reference windows, here
sketched from standard-normal rows with a spec drawn from a pilot as the product does) at ``--m`` frequencies
and ``--d`` fields: the stream's score alone (:func:`learner.drift.drift_score`, today's update) against the
score plus :func:`learner.drift_fields.field_scores` (the weights are built once per spec, at the first call,
which is timed separately). The two are interleaved, repeat by repeat, and the medians are reported.

Run: ``.venv/bin/python bench/drift_fields_cost.py [--m 1000] [--d 10] [--repeats 2000]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from learner.drift import drift_score  # noqa: E402
from learner.drift_fields import build_field_weights, field_scores  # noqa: E402
from sketch_store.pilot import spec_from_pilot  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402

log = logging.getLogger("bench.drift_fields_cost")


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(0)
    spec = spec_from_pilot(rng.normal(size=(3000, args.d)), m=args.m, seed=0)
    reference = Sketch.from_data(spec, rng.normal(size=(5000, args.d)))
    recent = Sketch.from_data(spec, rng.normal(size=(1000, args.d)) + np.eye(args.d)[0] * 0.3)
    build = timed(lambda: build_field_weights(spec))

    def both() -> None:
        drift_score(recent, reference)
        field_scores(recent, reference, spec)

    field_scores(recent, reference, spec)  # builds and caches the weights
    alone, with_fields = [], []
    for _ in range(args.repeats):
        alone.append(timed(lambda: drift_score(recent, reference)))
        with_fields.append(timed(both))
    a, b = statistics.median(alone), statistics.median(with_fields)
    log.info("m = %d, d = %d, %d repeats (medians)", args.m, args.d, args.repeats)
    log.info("| update | µs | × drift score alone |")
    log.info("|---|---|---|")
    log.info("| drift score alone (today) | %.1f | 1.00 |", a * 1e6)
    log.info("| drift score + field scores | %.1f | %.2f |", b * 1e6, b / a)
    log.info("| field weights, once per spec | %.1f | %.2f |", build * 1e6, build / a)


if __name__ == "__main__":
    main()
