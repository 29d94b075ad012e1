"""The drift-detector evaluation harness (bench/drift_eval.py) on tiny configurations.

Every detector fires on an obvious change, NEWMA's statistic is ≈ 0 on a constant stream, its forgetting
factors put the weights' crossing at the window, false alarms are counted as rising edges, and the whole
evaluation (stationary streams, change trials, curves, operating point) runs end to end.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import drift_eval as de

TINY = de.Config(recent=30.0, reference=120.0, m=64, pool=512, raw_every=3, mmd_recent=60, mmd_reference=120,
                 ks_recent=90, ks_reference=300)


def test_every_detector_fires_on_an_obvious_change() -> None:
    rng = np.random.default_rng(0)
    setup = de.make_setup("gaussian", TINY)
    before = de.gaussian(TINY.pool, rng)
    pools = [de.make_pool(setup, before), de.make_pool(setup, before + 3.0)]
    at = TINY.n_recent + TINY.n_reference + 10
    scores = de.run_stream(setup, pools, at, at + 12, 50.0, TINY, rng)
    for name, s in scores.items():
        pre, post = s[:at], s[at:]
        assert np.isfinite(pre).sum() >= 5, name
        assert np.nanmax(post) > max(10.0, 3 * np.nanmax(pre)), (name, np.nanmax(pre), np.nanmax(post))


def test_newma_statistic_vanishes_on_a_constant_stream() -> None:
    setup = de.make_setup("gaussian", TINY)
    det = de.Newma(setup, TINY)
    total, n = de.FeatureMap(setup.spec).feature_sum(np.full((40, de.D), 0.3))
    rows = de.Rows(np.zeros((0, de.D)), np.zeros((0, de.D)))
    scores = [det.update(total, n, rows) for _ in range(TINY.n_recent + TINY.n_reference + 5)]
    assert det.statistic < 1e-20
    assert math.isnan(scores[0]) and scores[-1] == 0.0


def test_newma_factors_cross_at_the_window() -> None:
    big, small = de.newma_factors(600.0, 2.0)
    assert big == 2 * small
    k = 600
    assert big * (1 - big) ** (k - 1) > small * (1 - small) ** (k - 1)
    assert big * (1 - big) ** (k + 1) < small * (1 - small) ** (k + 1)


def test_false_alarms_count_rising_edges() -> None:
    scores = np.array([np.nan, 0.0, 2.0, 2.0, 0.0, 2.0, 0.0, 0.0, 2.0])  # 8 scored buckets = 1 day
    fa = de.false_alarms_per_day(scores, np.array([1.0, 3.0]), bucket=de.DAY / 8)
    assert fa.tolist() == [3.0, 0.0]
    delays = de.delays(np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), np.array([1.0]), bucket=10.0)
    assert delays[0, 0] == 20.0 and math.isnan(delays[0, 1])
    assert de.operating_index(np.array([[5.0, 2.0, 1.0, 0.0], [3.0, 0.5, 0.0, 0.0]])) == 2


def test_evaluate_end_to_end() -> None:
    result = de.evaluate([50.0], ["gaussian", "typed"], ["mean_all", "category"], days=0.01, trials=2, cfg=TINY,
                         warmup=30.0, horizon=120.0)
    per_det = result["rates"]["50"]
    assert set(per_det) == {"ours", "ours_window", "newma", "exact_mmd", "ks_chi2"}
    for r in per_det.values():
        assert set(r["false_alarms_per_day"]) == {"gaussian", "typed"}
        assert len(r["changes"]["category"]["miss_rate"]) == len(r["thresholds"])
    assert "| 50 | ours |" in de.operating_table(result, ["mean_all", "category"])


def test_the_alarm_rate_bench_counts_alarms_and_names_the_moved_field() -> None:
    """bench/drift_alarm_rate.py: stationary alarms per setting, and a detection that ranks the moved field first."""
    from bench import drift_alarm_rate as dar

    cfg = de.Config(m=64, pool=512)
    row, calibrated = dar.stationary("gaussian", 100.0, 0.2, [1.0, 10.0], cfg, seed=0)
    assert row["days"] > 0.19 and set(row["F=1"]) >= {"threshold", "cusum", "any", "threshold_end"}
    assert row["F=10"]["any"] >= row["F=1"]["any"]
    found = dar.delays("mean_one", 1000.0, calibrated, 2, cfg, warmup=60.0, horizon=300.0)
    assert len(found) == 2 and all(math.isfinite(delay) and top == "x0" for delay, top in found), found
    assert dar.rising(np.array([False, True, True, False, True])) == 2
