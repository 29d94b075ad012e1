"""Drift of a stream: the recent sketch against the one before it, in units of its null level.

``score = ‖z_recent − z_reference‖² / ((1 − ‖z‖²)(1/n_recent + 1/n_reference))`` (docs/design.md §1,
``‖z‖²`` from the pooled sketch): about 1 while the stream is stationary, ≫ 1 after a change.

The learner reports the *scan* of that score over the recent window (:func:`scan_score`): the highest
score of its newest 1, 2, 4, … buckets and of the whole window against the same reference. After a change
``k`` buckets ago, the window of the newest ``k`` buckets holds only changed records, so its score grows
like ``k`` where the full window's (a share ``k/w`` of changed records) grows like ``k²/w``: a sudden change
is seen within a bucket or two, a small persistent one still by the full window. :func:`scan` also names the
window that scored highest, on which the learner ranks the fields (:mod:`learner.drift_fields`).

Example
-------
>>> import numpy as np
>>> from sketch_store.sketch import Sketch, merge_all
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=1, m=64, law="gaussian", seed=0)
>>> rng = np.random.default_rng(0)
>>> sketch = lambda x: Sketch.from_data(spec, x)
>>> reference = sketch(rng.normal(size=(2000, 1)))
>>> same = drift_score(sketch(rng.normal(size=(500, 1))), reference)
>>> moved = drift_score(sketch(rng.normal(3, 1, size=(500, 1))), reference)
>>> bool(same < 3 < 100 < moved)
True
>>> buckets = [sketch(rng.normal(3, 1, size=(100, 1)))] + [sketch(rng.normal(size=(100, 1))) for _ in range(5)]
>>> scan_lengths(len(buckets))  # the newest bucket moved: the scan sees it at full strength
[1, 2, 4, 6]
>>> bool(scan_score(buckets, reference) > 3 * drift_score(merge_all(buckets), reference))
True
>>> scan(buckets, reference)[1]  # the window that scored highest: the newest bucket alone
1
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sketch_store.sketch import Sketch

#: Minimum records on each side before a score is reported.
MIN_RECORDS = 20


def drift_score(recent: Sketch, reference: Sketch) -> float | None:
    """``‖z_recent − z_reference‖²`` over its null level, or None when either side is too small."""
    if recent.count < MIN_RECORDS or reference.count < MIN_RECORDS:
        return None
    null = recent.null_level(reference)
    if not null > 0:
        return None
    return recent.sq_distance(reference) / null


def scan_lengths(n: int) -> list[int]:
    """The window lengths the scan tries, in buckets: ``1, 2, 4, …`` below ``n``, then ``n`` itself."""
    lengths = []
    length = 1
    while length < n:
        lengths.append(length)
        length *= 2
    return [*lengths, n] if n > 0 else []


def _window_sums(buckets: Sequence[Sketch], lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Feature sums (one row per length) and counts of the newest ``L`` buckets, for each ``L`` in ``lengths``."""
    totals = np.empty((len(lengths), buckets[0].total.shape[0]))
    counts = np.empty(len(lengths))
    running, count, row = np.zeros(buckets[0].total.shape[0]), 0.0, 0
    for i, bucket in enumerate(buckets[: lengths[-1]]):
        running += bucket.total
        count += bucket.count
        if i + 1 == lengths[row]:
            totals[row], counts[row], row = running, count, row + 1
    return totals, counts


def scan_score(recent_buckets: Sequence[Sketch], reference: Sketch) -> float | None:
    """``max_L drift_score(newest L buckets, reference)`` over :func:`scan_lengths`; None if no window scores."""
    found = scan(recent_buckets, reference)
    return None if found is None else found[0]


def scan(recent_buckets: Sequence[Sketch], reference: Sketch) -> tuple[float, int] | None:
    """``(max_L drift_score(newest L buckets, reference), the L that attains it)`` over :func:`scan_lengths`;
    None if no window scores.

    ``recent_buckets`` are the recent window's buckets, newest first (:meth:`SketchStore.read_buckets`).
    A window with fewer than :data:`MIN_RECORDS` records does not score; the null level of each is its own,
    so every term is about 1 under no change (docs/design.md §1, "Drift"). Each term is exactly
    :func:`drift_score` of that window, computed for all windows at once.
    """
    for bucket in recent_buckets:  # a stream recreated between the reads: refused as drift_score refuses it
        reference._check_compatible(bucket)
    lengths = scan_lengths(len(recent_buckets))
    if not lengths or reference.count < MIN_RECORDS:
        return None
    totals, counts = _window_sums(recent_buckets, lengths)
    ok = counts >= MIN_RECORDS
    if not ok.any():
        return None
    counts = np.where(ok, counts, 1.0)  # windows too small are masked out below; no division by zero
    distance = np.sum((totals / counts[:, None] - reference.mean()) ** 2, axis=1)
    pooled = (totals + reference.total) / (counts + reference.count)[:, None]
    null = (1.0 - np.sum(pooled**2, axis=1)) * (1.0 / counts + 1.0 / reference.count)
    scored = ok & (null > 0)
    if not scored.any():
        return None
    scores = np.where(scored, distance / np.where(scored, null, 1.0), -np.inf)
    best = int(np.argmax(scores))
    return float(scores[best]), lengths[best]
