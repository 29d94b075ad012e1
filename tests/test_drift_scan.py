"""The drift score's scan over the recent window: its lengths, its null level, its speed after a change, and the
store's per-bucket read it scans."""

from __future__ import annotations

import numpy as np
import pytest

from learner.drift import drift_score, scan_lengths, scan_score
from sketch_store.errors import SpecMismatchError
from sketch_store.sketch import Sketch, merge_all
from sketch_store.spec import SketchSpec
from tests.store_helpers import make_spec
from tests.test_bucket_levels import flush_rows

SPEC = SketchSpec.create(d=3, m=200, law="gaussian", seed=1)


def buckets(rng: np.random.Generator, n: int, per: int, shift: float = 0.0) -> list[Sketch]:
    return [Sketch.from_data(SPEC, rng.normal(shift, 1.0, size=(per, 3))) for _ in range(n)]


@pytest.mark.parametrize(("n", "lengths"), [(0, []), (1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_the_scan_tries_the_newest_powers_of_two_and_the_whole_window(n, lengths):
    assert scan_lengths(n) == lengths


def test_under_no_change_the_scan_stays_near_its_null_level_and_never_below_the_whole_window():
    rng = np.random.default_rng(0)
    reference = Sketch.from_data(SPEC, rng.normal(size=(6000, 3)))
    scans, fulls = [], []
    for _ in range(200):
        recent = buckets(rng, 6, 100)
        scans.append(scan_score(recent, reference))
        fulls.append(drift_score(merge_all(recent), reference))
    assert all(s >= f - 1e-12 for s, f in zip(scans, fulls, strict=True))
    assert 0.8 < np.mean(fulls) < 1.2  # the score's null mean is 1
    assert 1.0 < np.median(scans) < 2.5  # the max of four correlated unit-mean scores, not a different scale


def test_a_change_in_the_newest_bucket_scores_like_a_window_of_changed_records_only():
    rng = np.random.default_rng(1)
    reference = Sketch.from_data(SPEC, rng.normal(size=(6000, 3)))
    recent = buckets(rng, 1, 100, shift=0.6) + buckets(rng, 5, 100)
    whole = drift_score(merge_all(recent), reference)
    newest = drift_score(recent[0], reference)
    assert scan_score(recent, reference) == pytest.approx(max(newest, whole))
    assert newest > 3 * whole  # k changed buckets of w: ~k against ~k²/w


def test_windows_too_small_to_score_are_skipped_and_none_when_none_scores():
    rng = np.random.default_rng(2)
    reference = Sketch.from_data(SPEC, rng.normal(size=(1000, 3)))
    tiny = buckets(rng, 3, 5)  # 5, 10, 15 records: under the minimum of 20
    assert scan_score(tiny, reference) is None
    assert scan_score(tiny + buckets(rng, 1, 10), reference) is not None  # the whole window has 25
    assert scan_score([], reference) is None
    empty_first = [Sketch(np.zeros(2 * SPEC.m), 0, SPEC.fingerprint), *buckets(rng, 2, 30)]
    with np.errstate(all="raise"):  # an empty newest bucket (nothing flushed yet) scores without 0/0
        assert scan_score(empty_first, reference) is not None


def test_buckets_of_another_spec_are_refused_like_the_whole_window_score():
    rng = np.random.default_rng(3)
    other = SketchSpec.create(d=3, m=200, law="gaussian", seed=2)
    reference = Sketch.from_data(SPEC, rng.normal(size=(1000, 3)))
    with pytest.raises(SpecMismatchError):
        scan_score([Sketch.from_data(other, rng.normal(size=(100, 3)))], reference)


def test_the_store_reads_the_recent_buckets_newest_first_and_they_merge_to_the_range(store):
    store.create_stream(make_spec())
    now = 1_800_000_000.0
    flush_rows(store, "s", [now - 55, now - 54, now - 25, now - 5, now - 4, now - 3, now - 700], now)
    got = store.read_buckets("s", 0, 60, now=now)
    assert [b.count for b in got] == [3, 1, 2]  # 10 s buckets: [now-10, now), [now-30, now-20), [now-60, now-50)
    merged = store.read_range("s", 0, 60, now=now)
    assert merge_all(got).count == merged.count == 6
    np.testing.assert_allclose(merge_all(got).total, merged.total)
    assert store.read_buckets("s", 60, 120, now=now) == []
