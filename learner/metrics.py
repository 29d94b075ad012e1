"""Prometheus metrics of the learner service (names are a contract for dashboards and alerts).

| metric | type | meaning |
|---|---|---|
| ``sketchgen_learner_loss`` | gauge | ‖z_data − z_gen‖² with the minibatch floor subtracted (last round's mean) |
| ``sketchgen_learner_steps_total`` | counter | Adam steps |
| ``sketchgen_learner_rounds_total`` | counter | training rounds (read sketch, K steps) |
| ``sketchgen_learner_step_seconds`` | histogram | duration of one step (each round's mean, observed once per round) |
| ``sketchgen_learner_sketch_records`` | gauge | records in the target sketch |
| ``sketchgen_learner_sketch_age_seconds`` | gauge | time since the stream's sketch last changed |
| ``sketchgen_learner_checkpoints_total`` | counter | checkpoints written to Redis |
| ``sketchgen_learner_checkpoint_rejected_total`` | counter | stored checkpoints refused (malformed, tampered, \
of another spec or stream incarnation), each distinct record counted once |
| ``sketchgen_learner_is_leader`` | gauge | 1 when this replica holds the learner lease |
| ``sketchgen_drift_score{window}`` | gauge | recent vs reference sketch distance over its null level |
| ``sketchgen_drift_detected`` | gauge | 1 while a drift alarm is on (threshold or CUSUM, learner/drift_alarm.py) |
| ``sketchgen_drift_threshold{window}`` | gauge | the drift-score threshold in force (set by the false-alarm rate) |
| ``sketchgen_drift_cusum{window}`` | gauge | the CUSUM statistic on the calibrated drift score |
| ``sketchgen_drift_cusum_threshold{window}`` | gauge | the CUSUM level that raises an alarm |
| ``sketchgen_drift_alarms_total{window,detector}`` | counter | drift alarms raised, by detector (threshold, cusum) |
| ``sketchgen_drift_field_score{window,field}`` | gauge | the drift score of one field (learner/drift_fields.py), \
one series per schema field |
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from learner.drift_fields import FieldScore


class LearnerMetrics:
    """The learner's metrics in a private registry, labelled with the stream."""

    def __init__(self, stream: str, drift_window: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, lab = self.registry, {"stream": stream}
        self.loss = Gauge("sketchgen_learner_loss", "Sketch loss minus its minibatch floor.", ["stream"],
                          registry=r).labels(**lab)
        self.steps = Counter("sketchgen_learner_steps", "Adam steps.", ["stream"], registry=r).labels(**lab)
        self.rounds = Counter("sketchgen_learner_rounds", "Training rounds.", ["stream"], registry=r).labels(**lab)
        self.step_seconds = Histogram(
            "sketchgen_learner_step_seconds", "Duration of a training step (a round's mean).", ["stream"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        ).labels(**lab)
        self.sketch_records = Gauge("sketchgen_learner_sketch_records", "Records in the target sketch.", ["stream"],
                                    registry=r).labels(**lab)
        self.sketch_age = Gauge("sketchgen_learner_sketch_age_seconds", "Seconds since the sketch last changed.",
                                ["stream"], registry=r).labels(**lab)
        self.checkpoints = Counter("sketchgen_learner_checkpoints", "Checkpoints written to Redis.", ["stream"],
                                   registry=r).labels(**lab)
        self.checkpoint_rejected = Counter(
            "sketchgen_learner_checkpoint_rejected", "Stored checkpoints refused (each distinct record once).",
            ["stream"], registry=r).labels(**lab)
        self.is_leader = Gauge("sketchgen_learner_is_leader", "1 when this replica holds the learner lease.",
                               ["stream"], registry=r).labels(**lab)
        self.drift_score = Gauge("sketchgen_drift_score", "Recent vs reference sketch distance over its null level.",
                                 ["stream", "window"], registry=r).labels(stream=stream, window=drift_window)
        self.drift_detected = Gauge("sketchgen_drift_detected", "1 while a drift alarm (threshold or CUSUM) is on.",
                                    ["stream"], registry=r).labels(**lab)
        drift = {"stream": stream, "window": drift_window}
        self.drift_threshold = Gauge("sketchgen_drift_threshold", "Drift-score threshold in force.",
                                     ["stream", "window"], registry=r).labels(**drift)
        self.drift_cusum = Gauge("sketchgen_drift_cusum", "CUSUM statistic on the calibrated drift score.",
                                 ["stream", "window"], registry=r).labels(**drift)
        self.drift_cusum_threshold = Gauge("sketchgen_drift_cusum_threshold", "CUSUM level that raises an alarm.",
                                           ["stream", "window"], registry=r).labels(**drift)
        alarms = Counter("sketchgen_drift_alarms", "Drift alarms raised, by detector.",
                         ["stream", "window", "detector"], registry=r)
        self.drift_alarms = {name: alarms.labels(detector=name, **drift) for name in ("threshold", "cusum")}
        self._stream, self._window = stream, drift_window
        self.drift_field_score = Gauge(
            "sketchgen_drift_field_score", "Drift score of one field (recent vs reference, over its null level).",
            ["stream", "window", "field"], registry=r)
        self._fields: set[str] = set()

    def set_field_scores(self, scores: Iterable[FieldScore]) -> None:
        """One ``sketchgen_drift_field_score`` series per field scored; fields no longer scored are removed."""
        values = {f.name: f.score for f in scores}
        for name in self._fields - set(values):
            self.drift_field_score.remove(self._stream, self._window, name)
        for name, score in values.items():
            self.drift_field_score.labels(stream=self._stream, window=self._window, field=name).set(score)
        self._fields = set(values)
