"""Drift alarms set by their false-alarm rate (learner/drift_alarm.py) on simulated sliding-window scores.

The scores are made the way the learner makes them: 10 s buckets of Gaussian feature noise, the last 6
buckets against the 60 before, the squared difference over its null mean. The noise's spectrum (weights
of its directions) sets the score's tail: flat (many equal directions, a light tail) or dominated by one
direction (a heavy tail, like a nearly one-dimensional stream).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from learner.drift_alarm import PRIOR_BETA, DriftAlarm, NullModel, cusum_threshold
from sketch_store.errors import SketchgenError

BUCKET, RECENT, REFERENCE = 10.0, 6, 60
DAY = 86_400.0


def sliding_scores(spectrum: np.ndarray, buckets: int, rng: np.random.Generator,
                   shift: np.ndarray | None = None, shift_from: int | None = None) -> np.ndarray:
    """Scores per bucket: ``‖mean(recent 6) − mean(reference 60)‖²_λ`` over its null mean; NaN while filling.

    ``shift`` is added to every bucket from ``shift_from`` on (a change of the stream's mean feature).
    """
    noise = rng.standard_normal((buckets, len(spectrum))) * np.sqrt(spectrum)
    if shift is not None:
        noise[shift_from:] += shift
    c = np.vstack([np.zeros(len(spectrum)), np.cumsum(noise, axis=0)])
    end = np.arange(RECENT + REFERENCE, buckets + 1)
    recent = (c[end] - c[end - RECENT]) / RECENT
    reference = (c[end - RECENT] - c[end - RECENT - REFERENCE]) / REFERENCE
    null = spectrum.sum() * (1 / RECENT + 1 / REFERENCE)
    scores = np.full(buckets, np.nan)
    scores[end - 1] = np.sum((recent - reference) ** 2, axis=1) / null
    return scores


def run(alarm: DriftAlarm, scores: np.ndarray, start: int = 0) -> list[tuple[str, ...]]:
    """Feed the finite scores bucket by bucket; the detectors alarming after each."""
    return [alarm.update((start + b) * BUCKET, float(s)).by for b, s in enumerate(scores) if np.isfinite(s)]


def rising(verdicts: list[tuple[str, ...]], detector: str | None = None) -> int:
    on = [bool(v) if detector is None else detector in v for v in verdicts]
    return sum(1 for before, now in zip([False, *on], on, strict=False) if now and not before)


FLAT = np.ones(40)
HEAVY = np.concatenate([[30.0], np.ones(20)])  # one direction holds 60 % of the variance


@pytest.mark.parametrize("spectrum", [FLAT, HEAVY], ids=["light tail", "heavy tail"])
def test_stationary_alarms_come_at_the_configured_rate_whatever_the_tail(spectrum):
    rate, days = 4.0, 7
    rng = np.random.default_rng(7)
    alarm = DriftAlarm(false_alarms_per_day=rate, window_s=RECENT * BUCKET)
    verdicts = run(alarm, sliding_scores(spectrum, round(days * DAY / BUCKET), rng))
    per_day = rising(verdicts) / (len(verdicts) * BUCKET / DAY)
    assert rate / 2 <= per_day <= rate * 2, per_day
    assert alarm.null.calibrated and alarm.first_null.calibrated


def test_the_threshold_follows_the_tail_and_a_fixed_one_does_not():
    """The heavy-tailed stream gets a higher threshold; at the light one's threshold it alarms far too often."""
    rng = np.random.default_rng(3)
    n = round(2 * DAY / BUCKET)
    light, heavy = DriftAlarm(1.0, RECENT * BUCKET), DriftAlarm(1.0, RECENT * BUCKET)
    run(light, sliding_scores(FLAT, n, rng))
    run(heavy, sliding_scores(HEAVY, n, rng))
    assert heavy.threshold > 1.3 * light.threshold
    fixed = DriftAlarm(1.0, RECENT * BUCKET, fixed_threshold=light.threshold)
    fixed_per_day = rising(run(fixed, sliding_scores(HEAVY, n, rng)), "threshold") / 2
    assert fixed_per_day > 5 * 0.5  # the threshold detector's share of the budget is 0.5 a day


def calibrated_alarm(spectrum: np.ndarray, rng: np.random.Generator, hours: float = 6) -> tuple[DriftAlarm, int]:
    alarm = DriftAlarm(1.0, RECENT * BUCKET)
    n = round(hours * 3600 / BUCKET)
    run(alarm, sliding_scores(spectrum, n, rng))
    assert alarm.null.calibrated
    return alarm, n


def test_a_large_change_alarms_at_once_by_the_threshold():
    rng = np.random.default_rng(11)
    alarm, n = calibrated_alarm(FLAT, rng)
    shift = np.full(len(FLAT), 0.8)  # the score's mean rises by 0.8² · 40 / (40 · (1/6 + 1/60)) ≈ 3.5
    scores = sliding_scores(FLAT, 400, rng, shift=shift, shift_from=200)
    verdicts = [alarm.update((n + b) * BUCKET, float(s)).by for b, s in enumerate(scores) if np.isfinite(s)]
    first = next(i for i, v in enumerate(verdicts) if "threshold" in v)
    change = 200 - (RECENT + REFERENCE - 1)  # the first verdict whose recent window holds a changed bucket
    assert change <= first < change + RECENT  # before the recent window is full of the change


def test_a_small_persistent_change_is_caught_by_the_cusum_not_the_threshold():
    """Every minute's score one standard unit above its null median: never past the threshold, but it persists."""
    rng = np.random.default_rng(5)
    alarm, n = calibrated_alarm(FLAT, rng)
    raised = float(np.quantile(alarm.first_null.sorted, 0.885))  # Φ(1.2) = 0.885: y ≈ 1.2 each minute
    assert raised < alarm.threshold
    verdicts = [alarm.update((n + b) * BUCKET, raised).by for b in range(30 * RECENT)]
    assert rising(verdicts, "threshold") == 0
    caught = next(b for b, v in enumerate(verdicts) if "cusum" in v) // RECENT
    assert caught < 20, caught  # h ≈ 5.4 at k = 0.5: about 8 minutes of y ≈ 1.2


def test_given_the_whole_windows_score_the_cusum_runs_on_it_and_the_threshold_on_the_score():
    """The learner passes the scan as the score and the whole window's score beside it: a persistent excess seen
    only in the whole window's score is summed by the CUSUM; the scan, at its null median, alarms nothing."""
    rng = np.random.default_rng(5)
    alarm, n = calibrated_alarm(FLAT, rng)
    quiet = float(alarm.null.median)
    raised = float(np.quantile(alarm.first_null.sorted, 0.885))
    verdicts = [alarm.update((n + b) * BUCKET, quiet, window_score=raised).by for b in range(30 * RECENT)]
    assert rising(verdicts, "threshold") == 0 and any("cusum" in v for v in verdicts)
    alarm, n = calibrated_alarm(FLAT, np.random.default_rng(5))
    typical = float(np.median(alarm.first_null.sorted))
    verdicts = [alarm.update((n + b) * BUCKET, raised, window_score=typical).by for b in range(30 * RECENT)]
    assert not any("cusum" in v for v in verdicts)  # the raised scan alone does not feed the CUSUM


def test_the_prior_holds_until_calibrated_and_a_fixed_threshold_is_kept():
    alarm = DriftAlarm(1.0, 60.0)
    assert alarm.threshold == pytest.approx(1.0 + PRIOR_BETA * math.log(0.5 / (0.5 / 1440)), rel=1e-9)
    state = alarm.update(0.0, 1.0)
    assert not state.calibrated and not state.alarm and state.windows == 0
    assert alarm.update(1.0, 50.0).by == ("threshold",)
    fixed = DriftAlarm(1.0, 60.0, fixed_threshold=7.5)
    assert fixed.update(0.0, 7.0).alarm is False and fixed.update(1.0, 8.0).alarm is True


def test_fewer_false_alarms_asked_give_higher_thresholds():
    rng = np.random.default_rng(2)
    scores = rng.exponential(0.3, size=2000) + 0.7
    null = NullModel.fit(scores)
    assert null.quantile(1e-5) > null.quantile(1e-4) > null.quantile(1e-3)
    assert cusum_threshold(14_400) > cusum_threshold(1440) > cusum_threshold(144)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"false_alarms_per_day": 0.0}, "false alarms per day must be > 0"),
    ({"false_alarms_per_day": math.inf}, "false alarms per day must be > 0"),
    ({"window_s": 0.0}, "drift window must be > 0"),
    ({"fixed_threshold": -1.0}, "threshold must be > 0"),
])
def test_bad_settings_are_refused_in_one_line(kwargs, message):
    with pytest.raises(SketchgenError, match=message):
        DriftAlarm(**kwargs)


def test_scores_that_barely_vary_do_not_set_a_hair_trigger():
    """A stream whose score hardly moves (records nearly alike) keeps a tail scale of at least MIN_BETA."""
    alarm = DriftAlarm(1.0, 60.0)
    rng = np.random.default_rng(4)
    for i in range(6 * 200):
        alarm.update(10.0 * i, float(1.0 + 1e-6 * rng.standard_normal()))
    assert alarm.null.calibrated and alarm.threshold > 1.08  # u₀ + MIN_BETA · ln(t/p) with t/p ≥ 144
    assert not alarm.update(10.0 * 6 * 200, 1.05).alarm


def test_the_learners_config_refuses_the_same_settings_naming_its_flags():
    from learner.config import LearnConfig

    with pytest.raises(SketchgenError, match=r"\(--drift-false-alarms-per-day\), got 0"):
        LearnConfig(stream="s", drift_false_alarms_per_day=0.0)
    with pytest.raises(SketchgenError, match=r"\(--drift-threshold\), got -1"):
        LearnConfig(stream="s", drift_threshold=-1.0)
