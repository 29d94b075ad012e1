"""A stream's drift as the learner tracks it: the score, the per-field scores, the alarms and their metrics.

Each loop the service reads the recent window's buckets and the reference window's sketch and hands them
to :meth:`DriftMonitor.update`, which computes the drift score (the scan of :mod:`learner.drift`,
docs/design.md §1 "Drift"), the per-field scores (:mod:`learner.drift_fields`) and the calibrated alarms
(:mod:`learner.drift_alarm`), and sets the ``sketchgen_drift_*`` metrics. What ``/status`` and ``/history``
show is read from it without a Redis call.

Example
-------
>>> import numpy as np
>>> from learner.metrics import LearnerMetrics
>>> from sketch_store.sketch import Sketch, merge_all
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=2, m=64, law="gaussian", seed=0)
>>> rng = np.random.default_rng(0)
>>> monitor = DriftMonitor(LearnerMetrics("s", "60s_vs_600s"), false_alarms_per_day=1.0, window_s=60.0)
>>> reference = Sketch.from_data(spec, rng.normal(size=(5000, 2)))
>>> recent = [Sketch.from_data(spec, rng.normal(3.0, 1.0, size=(100, 2))) for _ in range(6)]  # newest first
>>> monitor.update(recent, reference, spec, now=0.0)
>>> monitor.score > monitor.threshold, monitor.status()["drift_alarm"]["by"][0]
(True, 'threshold')
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from learner.drift import drift_score, scan
from learner.drift_alarm import AlarmState, DriftAlarm
from learner.drift_fields import FieldScore, field_scores
from learner.metrics import LearnerMetrics
from sketch_store.errors import SketchgenError
from sketch_store.sketch import Sketch, merge_all
from sketch_store.spec import SketchSpec

log = logging.getLogger(__name__)


class DriftMonitor:
    """Drift score, per-field scores and calibrated alarms of one stream, with their metrics (module docstring)."""

    def __init__(self, metrics: LearnerMetrics, false_alarms_per_day: float, window_s: float,
                 fixed_threshold: float | None = None, stream: str = "") -> None:
        self.metrics = metrics
        self.stream = stream
        self.false_alarms_per_day = false_alarms_per_day
        self.fixed_threshold = fixed_threshold
        self.alarm = DriftAlarm(false_alarms_per_day, window_s, fixed_threshold)
        self.score: float | None = None
        self.fields: list[FieldScore] = []  # per-field scores of the last update, top first
        self.state: AlarmState | None = None  # the alarm's last verdict

    @property
    def threshold(self) -> float:
        """The drift-score threshold in force."""
        return self.alarm.threshold

    def update(self, recent_buckets: Sequence[Sketch], reference: Sketch, spec: SketchSpec, now: float) -> None:
        """Score the recent window's buckets (newest first) against ``reference``: the scan
        (:func:`~learner.drift.scan`) for the threshold alarm, the whole window's score for the CUSUM, and the
        per-field scores on the evidence of the alarm (:func:`fields_window`). The score stays None while every
        window is too small."""
        found = scan(recent_buckets, reference)
        self.score = None if found is None else found[0]
        if found is None:
            self.fields = []
            return
        self.metrics.drift_score.set(found[0])
        self._update_alarm(found[0], drift_score(merge_all(recent_buckets), reference), now)
        by = self.state.by if self.state is not None else ()
        self._update_fields(merge_all(recent_buckets[: fields_window(by, found[1], len(recent_buckets))]),
                            reference, spec)

    def _update_alarm(self, score: float, window_score: float | None, now: float) -> None:
        """Feed the scan score (and the whole window's, for the CUSUM) to the calibrated alarms; count and log each
        alarm as it rises."""
        before = set(self.state.by) if self.state is not None else set()
        state = self.state = self.alarm.update(now, score, window_score)
        for detector in set(state.by) - before:
            self.metrics.drift_alarms[detector].inc()
            log.warning("drift alarm (%s) on stream %s: score %.3g, threshold %.3g, CUSUM %.3g of %.3g", detector,
                        self.stream, score, state.threshold, state.cusum, state.cusum_threshold)
        self.metrics.drift_detected.set(1 if state.alarm else 0)
        self.metrics.drift_threshold.set(state.threshold)
        self.metrics.drift_cusum.set(state.cusum)
        self.metrics.drift_cusum_threshold.set(state.cusum_threshold)

    def _update_fields(self, recent: Sketch, reference: Sketch, spec: SketchSpec) -> None:
        """Per-field scores of the same two windows: [] like the score is None when a window is too small (the
        gauges keep their last values, like ``sketchgen_drift_score``)."""
        try:
            self.fields = field_scores(recent, reference, spec)
        except SketchgenError as exc:  # the stream was recreated with another spec between the reads
            log.debug("per-field drift update failed: %s", exc)
            self.fields = []
        if self.fields:
            self.metrics.set_field_scores(self.fields)

    def fields_payload(self) -> list[dict[str, object]]:
        """``[{"field", "score", "categories": [{"category", "score"}, …]}, …]``, top first."""
        return [f.to_dict() for f in self.fields]

    def alarm_payload(self) -> dict[str, object]:
        """The alarm's state: threshold in force, calibration, CUSUM, which detectors alarm."""
        payload: dict[str, object] = {
            "false_alarms_per_day": self.false_alarms_per_day,
            "fixed_threshold": self.fixed_threshold,
            "threshold": self.threshold,
        }
        state = self.state
        if state is not None:
            payload |= {"calibrated": state.calibrated, "calibration_windows": state.windows,
                        "tail_scale": state.tail_scale, "cusum": state.cusum,
                        "cusum_threshold": state.cusum_threshold, "alarm": state.alarm, "by": list(state.by)}
        return payload

    def status(self) -> dict[str, object]:
        """The drift part of ``/status``."""
        return {"drift_score": self.score, "drift_fields": self.fields_payload(), "drift_threshold": self.threshold,
                "drift_alarm": self.alarm_payload()}


def fields_window(alarming: Sequence[str], scan_length: int, window_length: int) -> int:
    """How many of the newest buckets the fields are ranked on: the scan's best window while the threshold alarm
    (on the scan) is on — a sudden change shows most there — else the whole recent window, the evidence the CUSUM
    sums and the steadiest view when nothing alarms.

    >>> fields_window(("threshold",), 1, 7), fields_window(("cusum",), 1, 7), fields_window((), 2, 7)
    (1, 7, 7)
    """
    return scan_length if "threshold" in alarming else window_length
