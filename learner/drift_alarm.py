"""Drift alarms set by their false-alarm rate: a calibrated threshold and a CUSUM on the drift score.

The drift score ``s`` (:mod:`learner.drift`) is a squared distance over its null mean: under no change, a
weighted sum of χ² variables with mean 1 whose spread depends on the stream, so no fixed threshold means
the same on two streams. The learner fits the law of the stream's own scores instead (docs/design.md §1,
"Drift alarms"): one value per recent window of ``W`` seconds, an empirical bulk and an exponential tail
fitted to the top 5 % (:class:`NullModel`), scores that alarmed entering censored at the threshold. Until
enough windows are seen, a conservative prior. Two detectors share the false-alarm budget of ``F`` a day:

* **threshold**, on the law of each window's highest score: alarm past the score it exceeds with
  probability ``p = (F/2)·W/86 400`` (a day holds ``86 400/W`` windows); it re-arms once the score is
  back at the null median, so one excursion is one alarm.
* **CUSUM** over each window's first score (the whole window's, when the caller gives it beside the scan)
  as ``y = Φ⁻¹(F̂(s))`` (under the law of first scores):
  ``S ← max(0, S + y − k)``, alarm (and reset) when ``S > h``, ``h`` from Siegmund's in-control run length
  ``ARL₀ ≈ (e^{2k(h+1.166)} − 2k(h+1.166) − 1)/(2k²)`` set to ``(86 400/W)/(F/2)`` windows. It catches small
  persistent shifts that never cross the threshold.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> alarm = DriftAlarm(false_alarms_per_day=1.0, window_s=60.0)
>>> round(alarm.threshold, 1)  # the prior, before the stream has calibrated it
4.6
>>> for i in range(2000):  # five and a half stationary hours, a score every 10 s
...     state = alarm.update(10.0 * i, float(rng.chisquare(12) / 12))
>>> state.calibrated, state.alarm, 3.0 < state.threshold < 4.5  # true: 3.40 (max of 6 draws of χ²₁₂/12)
(True, False, True)
>>> alarm.update(20_000.0, 9.0).by  # far past the calibrated threshold
('threshold',)
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np

from sketch_store.errors import SketchgenError

DAY_S = 86_400.0
#: Prior tail scale before calibration: at F = 1/day and 60 s windows its threshold is about 4.6, near the
#: historical fixed threshold of 5 and above what calibrated streams get (docs/learner.md).
PRIOR_BETA = 0.5
#: The tail is fitted to this top share of the scores, and to at least this many.
TAIL_SHARE = 0.05
MIN_TAIL = 30
#: The smallest tail scale fitted: the score is in units of its null mean, and streams measured have 0.15–0.3;
#: scores that barely vary (records nearly all alike) must not give a threshold a hair above them.
MIN_BETA = 0.02
#: Windows of stationary scores needed before the fit replaces the prior, and how many are kept (a day of
#: one-minute windows).
MIN_WINDOWS = 60
KEEP_WINDOWS = 1440
#: CUSUM reference value k (in standard units of y): tuned for a persistent shift of 2k = 1 standard unit.
CUSUM_K = 0.5
_NORMAL = NormalDist()


class NullModel:
    """The stationary score's law: the empirical law of the stream's window scores, exponential in the tail.

    Bulk ``F(s) = rank(s)/N`` for ``s ≤ u₀``; tail (peaks over threshold) ``1 − F(s) = t·e^{−(s−u₀)/β}``, with
    ``u₀`` the score exceeded by the top share ``t`` of the scores (the top :data:`TAIL_SHARE`, at least
    :data:`MIN_TAIL` scores) and ``β`` their mean excess over ``u₀``. A weighted sum of χ² variables has an
    exponential far tail set by its largest weight; nearer the bulk its tail is lighter, so a tail fitted
    low overestimates far quantiles (few alarms) and one fitted high is noisy: the top 5 % is the
    compromise. Scores that raised an alarm enter *censored* at the threshold (all we use of them is that they
    passed it: the exponential's maximum-likelihood ``β`` is the summed excess over the uncensored count),
    so neither a real change inflates the tail nor leaving alarms out truncates it. Below ``min_windows``
    scores the prior is a Laplace law at 1 with scale :data:`PRIOR_BETA`.

    >>> rng = np.random.default_rng(1)
    >>> null = NullModel.fit(rng.exponential(0.2, size=5000) + 0.5)
    >>> null.calibrated, round(null.beta, 2), round(null.quantile(1e-4), 1)  # exact: 0.5 + 0.2·ln(1e4) = 2.3
    (True, 0.21, 2.4)
    """

    def __init__(self, sorted_scores: np.ndarray, u0: float, beta: float, share: float, calibrated: bool) -> None:
        """Built by :meth:`fit`, from its scores already sorted."""
        self.sorted = sorted_scores
        self.u0, self.beta, self.share, self.calibrated = u0, beta, share, calibrated
        #: The null median (1 under the prior): where the threshold alarm re-arms.
        self.median = float(np.median(self.sorted)) if calibrated else 1.0

    @classmethod
    def fit(cls, scores: np.ndarray, censored: np.ndarray | None = None,
            min_windows: int = MIN_WINDOWS) -> NullModel:
        """Fit to stationary ``scores`` (``censored[i]``: score i is only known to be at least that); the
        prior when fewer than ``min_windows`` are finite."""
        cut = np.zeros(len(scores), bool) if censored is None else np.asarray(censored, bool)
        keep = np.isfinite(scores)
        order = np.argsort(scores[keep], kind="stable")
        finite, cut = scores[keep][order], cut[keep][order]
        n = len(finite)
        if n < min_windows:
            return cls(finite, 1.0, PRIOR_BETA, 0.5, False)
        top = min(max(MIN_TAIL, math.ceil(TAIL_SHARE * n)), n - 1)
        u0 = float(finite[n - top - 1])
        observed = max(int(np.count_nonzero(~cut[n - top:])), 1)
        beta = float(np.sum(finite[n - top:] - u0)) / observed
        return cls(finite, u0, max(beta, MIN_BETA), top / n, True)

    @property
    def windows(self) -> int:
        return len(self.sorted)

    def cdf(self, score: float) -> float:
        """``F(score)``, kept inside (0, 1)."""
        if score > self.u0:
            return 1.0 - self.share * math.exp(-(score - self.u0) / self.beta)
        if not self.calibrated:
            return 0.5 * math.exp((score - self.u0) / self.beta)
        n = len(self.sorted)
        return max(float(np.searchsorted(self.sorted, score, "right")) / n, 0.5 / n)

    def normal(self, score: float) -> float:
        """The score as a standard-normal value ``y = Φ⁻¹(F(score))`` (0 at the null median)."""
        return _NORMAL.inv_cdf(min(max(self.cdf(score), 1e-12), 1.0 - 1e-12))

    def quantile(self, upper: float) -> float:
        """The score exceeded with probability ``upper`` (below the tail's share ``t``): ``u₀ + β·ln(t/upper)``."""
        return self.u0 + self.beta * math.log(self.share / min(upper, self.share))


def cusum_threshold(arl0: float, k: float = CUSUM_K) -> float:
    """``h`` whose Siegmund in-control run length ``(e^{2kb} − 2kb − 1)/(2k²)``, ``b = h + 1.166``, is ``arl0``.

    >>> round(cusum_threshold(1440.0), 2)
    5.42
    """
    lo, hi = 0.0, 100.0
    for _ in range(100):
        h = (lo + hi) / 2
        b = 2 * k * (h + 1.166)
        lo, hi = (h, hi) if (math.exp(b) - b - 1) / (2 * k * k) < arl0 else (lo, h)
    return (lo + hi) / 2


class WindowSample:
    """The last ``size`` window scores and whether each is censored, in a ring (the fit ignores their order)."""

    def __init__(self, size: int = KEEP_WINDOWS) -> None:
        self.values = np.empty(size)
        self.censored = np.zeros(size, bool)
        self.count = 0

    def add(self, value: float, censored: bool) -> None:
        at = self.count % len(self.values)
        self.values[at], self.censored[at] = value, censored
        self.count += 1

    def fit(self) -> NullModel:
        n = min(self.count, len(self.values))
        return NullModel.fit(self.values[:n], self.censored[:n])


@dataclasses.dataclass(frozen=True)
class AlarmState:
    """One update's verdict: the threshold on the score, the null's tail, the CUSUM, and which detectors alarm."""

    score: float
    threshold: float
    calibrated: bool
    windows: int
    tail_scale: float
    cusum: float
    cusum_threshold: float
    alarm: bool
    by: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self) | {"by": list(self.by)}


def check_alarm_settings(false_alarms_per_day: float, window_s: float, fixed_threshold: float | None) -> None:
    """Refuse settings no alarm can run with, in one line naming the ``sketchgen learn`` flag."""
    if not (false_alarms_per_day > 0 and math.isfinite(false_alarms_per_day)):
        raise SketchgenError(f"false alarms per day must be > 0 (--drift-false-alarms-per-day), "
                             f"got {false_alarms_per_day}")
    if not window_s > 0:
        raise SketchgenError(f"the drift window must be > 0 seconds, got {window_s}")
    if fixed_threshold is not None and not fixed_threshold > 0:
        raise SketchgenError(f"the drift threshold must be > 0 (--drift-threshold), got {fixed_threshold}")


class DriftAlarm:
    """Threshold and CUSUM alarms on the drift score for ``false_alarms_per_day`` (module docstring).

    ``update(now, score)`` may be called as often as the score is recomputed. The threshold's law is fitted
    to the highest score of each ``window_s`` window (what the threshold is compared with, however often the
    score is recomputed); the CUSUM takes the first score of each window, under its own fitted law.
    ``fixed_threshold`` replaces the calibrated threshold (the CUSUM still runs).
    """

    def __init__(self, false_alarms_per_day: float = 1.0, window_s: float = 60.0,
                 fixed_threshold: float | None = None) -> None:
        check_alarm_settings(false_alarms_per_day, window_s, fixed_threshold)
        self.window_s = window_s
        self.fixed_threshold = fixed_threshold
        windows_per_day = DAY_S / window_s
        share = false_alarms_per_day / 2  # the two detectors split the budget
        self.upper = min(share / windows_per_day, 0.1)  # per-window tail probability of the threshold
        self.h = cusum_threshold(windows_per_day / share)
        self._window_maxima, self._window_firsts = WindowSample(), WindowSample()  # each window's maximum, first
        self.null = self.first_null = NullModel.fit(np.empty(0))  # laws of the windows' maxima, first scores
        self._window_end, self._window_max = -math.inf, math.nan
        self.cusum = 0.0
        self._above = False  # the threshold alarm fired and has not re-armed yet
        self._cusum_fired = False

    @property
    def threshold(self) -> float:
        """The score above which the threshold detector alarms."""
        if self.fixed_threshold is not None:
            return self.fixed_threshold
        return self.null.quantile(self.upper)

    def update(self, now: float, score: float, window_score: float | None = None) -> AlarmState:
        """Take the score computed at ``now`` (seconds); return the verdict.

        ``window_score``, when given, is the whole recent window's score, which the CUSUM then takes instead of
        ``score`` (the learner's ``score`` is the scan, best at sudden changes; the whole window holds the most
        records, best at the small persistent shifts the CUSUM is for: docs/design.md §1, "Drift alarms").
        """
        if now >= self._window_end:
            self._close_window()
            # the first score of a window: its recent data is the last window's
            self._cusum_step(score if window_score is None else window_score)
            self._window_end, self._window_max = now + self.window_s, score
        else:
            self._window_max = max(self._window_max, score)
        null, threshold = self.null, self.threshold
        if score > threshold:
            self._above = True
        elif score <= null.median:  # re-armed once back at the null's median: one excursion, one alarm
            self._above = False
        by = tuple(name for name, on in (("threshold", self._above), ("cusum", self._cusum_fired)) if on)
        return AlarmState(score, threshold, null.calibrated, null.windows, null.beta, self.cusum, self.h,
                          bool(by), by)

    def _close_window(self) -> None:
        """The window's highest score calibrates the threshold's law (censored at the threshold if it alarmed)."""
        if math.isnan(self._window_max):
            return
        self.null = self._calibrate(self._window_maxima, self._window_max)

    def _calibrate(self, sample: WindowSample, score: float) -> NullModel:
        """Add ``score`` to ``sample`` (censored at the threshold if past it) and refit its law."""
        threshold = self.threshold
        sample.add(min(score, threshold), score > threshold)
        return sample.fit()

    def _cusum_step(self, score: float) -> None:
        """One CUSUM step on ``y = Φ⁻¹(F̂(score))`` under the law of the windows' first scores, which it calibrates.

        First scores of successive windows compare disjoint recent data, so their ``y`` are nearly
        uncorrelated, as the run-length approximation assumes (the windows' maxima are not: they overlap).
        """
        self.cusum = max(0.0, self.cusum + self.first_null.normal(score) - CUSUM_K)
        self._cusum_fired = self.cusum > self.h
        if self._cusum_fired:
            self.cusum = 0.0
        self.first_null = self._calibrate(self._window_firsts, score)
