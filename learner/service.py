"""The learner service: a generator kept fitted to a stream's live sketch (see docs/learner.md).

Every round the replica that holds the stream's learner lease (``sketch_store.leadership``)
re-reads the target sketch from Redis (all-time, a window, or half-life decayed), runs K
warm-started Adam steps against it, and every ``checkpoint_every`` seconds writes a
checkpoint that only the lease holder may write, and only for the stream incarnation its
trainer was built for. Other replicas are hot standbys: they serve the latest checkpoint
and take the lease when the leader stops renewing it. On start, and on taking over,
training resumes from the stream's latest checkpoint if it is valid and of the stream's
current spec and incarnation (:mod:`learner.checkpoint_watch`); a refused one is reported
and never stops training. When the stream is recreated — with another spec, or the same
spec (a new incarnation) — training restarts from scratch and the old model is no longer
served.

What HTTP serves is a :class:`~learner.serving.ServedModel`, an immutable copy of the
served weights published after every training slice, so sampling never holds the lock
training runs under.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid

import numpy as np
import redis

from learner.checkpoint import Checkpoint, checkpoint_bytes, restore_trainer
from learner.checkpoint_watch import CheckpointWatch
from learner.config import LearnConfig, parse_target
from learner.drift_monitor import DriftMonitor
from learner.generator import GeneratorConfig
from learner.history import History, HistoryPoint
from learner.metrics import LearnerMetrics
from learner.serving import ServedModel
from learner.trainer import Trainer
from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.leadership import (
    CheckpointRecordError,
    CheckpointStore,
    Lease,
    LeaseLostError,
    StaleIncarnationError,
)
from sketch_store.redis_store import SketchStore, StreamNotFoundError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

__all__ = ["SLICE_STEPS", "LearnConfig", "LearnerService", "NoModelError", "parse_target"]

log = logging.getLogger(__name__)

#: Steps trained under the model lock at a time (between slices: a new served snapshot, lease renewal).
SLICE_STEPS = 20


class NoModelError(SketchgenError):
    """This replica has no model to sample yet."""


class LearnerService:
    """One replica: leader (training) or hot standby (serving the latest checkpoint)."""

    def __init__(self, config: LearnConfig, store: SketchStore, metrics: LearnerMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.stream = config.stream
        self.spec = store.get_spec(self.stream, refresh=True)  # unknown stream: fail fast
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = Lease(store.client, self.stream, self.holder, ttl=config.lease_ttl,
                           wait_for_replicas=store.durability != "none")
        self.checkpoints = CheckpointStore(store.client, self.stream)
        window = f"{config.drift_recent:g}s_vs_{config.drift_reference:g}s"
        self.metrics = metrics or LearnerMetrics(self.stream, window)
        self.watch = CheckpointWatch(self.checkpoints, self.metrics.checkpoint_rejected)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()  # guards the trainer between the loop's slices and checkpointing
        self.trainer: Trainer | None = None
        self.trained_for: tuple[str, str] | None = None  # (spec fingerprint, incarnation) of the trainer / model
        self.model: ServedModel | None = None  # what HTTP samples: replaced, never modified
        self.served: Checkpoint | None = None  # the checkpoint a standby serves (resumed from on takeover)
        self._leader = False  # what this loop last learned; is_leader also needs the lease still valid
        self.metrics.is_leader.set_function(lambda: 1 if self.is_leader else 0)
        self.rounds = 0
        self.last_loss: float | None = None
        self.last_checkpoint = time.monotonic()  # the first checkpoint comes checkpoint_every after the start
        self.sketch_records = 0.0
        self.drift = DriftMonitor(self.metrics, config.drift_false_alarms_per_day, config.drift_recent,
                                  config.drift_threshold, stream=self.stream)
        self.reachable = True  # False while Redis or the stream cannot be read (not ready, retrying)
        self.lease_holder: str | None = None
        self.checkpoint_saved: float | None = None
        self.history = History(config.history_size)
        self.ingested: int | None = None  # records in the stream's all-time sketch
        self._round_losses: tuple[float, float] | None = None  # (loss, floor) of a round not yet in the history

    # -- the loop --------------------------------------------------------------

    def run(self) -> None:
        """Lead or stand by until :attr:`stop_event`; on stop, checkpoint and let the lease go."""
        log.info("learner %s for stream %s (target %s)", self.holder, self.stream, self.config.target)
        try:
            while not self.stop_event.is_set():
                try:
                    self._tick()
                except (StreamNotFoundError, redis.RedisError) as exc:
                    self._unreachable(exc)
                except SketchgenError as exc:  # e.g. the stream recreated between two reads: look again
                    log.warning("%s; retrying", exc)
                    self.stop_event.wait(1.0)
        finally:
            self._let_go()
            self._leader = False
            log.info("learner stopped")

    def _tick(self) -> None:
        """One round as leader or one look as standby, then the drift and status figures."""
        try:
            if self.lease.acquire():
                self._lead()
            else:
                self._stand_by()
        except (LeaseLostError, StaleIncarnationError, CheckpointError) as exc:
            log.warning("%s", exc)
        self._update_drift()
        self.lease_holder = self.lease.current_holder()
        self.checkpoint_saved = self._saved_at()
        self._record_history()
        if not self.reachable:
            log.info("stream %s is reachable again", self.stream)
            self.reachable = True

    def _unreachable(self, exc: Exception) -> None:
        """Redis or the stream is gone: not ready, keep serving the current model, retry."""
        if self.reachable:
            what = "stream not found" if isinstance(exc, StreamNotFoundError) else "cannot reach Redis"
            log.error("%s (%s): not ready; serving the current model and retrying", what, exc)
            self.reachable = False
        self.stop_event.wait(1.0)

    def _let_go(self) -> None:
        """On stop: a leader writes a last checkpoint and releases the lease, if Redis lets it."""
        if not self.is_leader:
            return
        try:
            self._checkpoint()
            self.lease.release()
        except (SketchgenError, redis.RedisError) as exc:
            log.warning("could not checkpoint or release the lease on stop: %s", exc)

    @property
    def is_leader(self) -> bool:
        """This replica leads: it took the lease, and its last take or renewal is less than one TTL old.

        The second half makes a leader stuck in a Redis outage or a failover stop calling itself one
        (``/status``, ``/readyz``, the metric) before a standby can take the lease over.
        """
        return self._leader and self.lease.held

    def _become(self, leader: bool) -> None:
        if leader != self._leader:
            log.info("%s the learner lease for stream %s", "took" if leader else "do not hold", self.stream)
        self._leader = leader

    def _stream_identity(self) -> tuple[SketchSpec, str]:
        """The stream's current spec and incarnation, re-read from Redis."""
        self.spec = self.store.get_spec(self.stream, refresh=True)
        return self.spec, self.store.incarnation(self.stream)

    def _saved_at(self) -> float | None:
        """When the stored checkpoint was written (a standby knows it from its last read)."""
        if not self.is_leader:
            return self.watch.saved
        try:
            return self.checkpoints.saved_at()
        except CheckpointRecordError as exc:
            self.watch.refuse(exc.record_id, str(exc), "the leader's next checkpoint replaces it")
            return None

    # -- leading ---------------------------------------------------------------

    def _lead(self) -> None:
        self._become(True)
        spec, incarnation = self._stream_identity()
        if self.trainer is None or self.trained_for != (spec.fingerprint, incarnation):
            self._new_trainer(spec, incarnation)
        sketch = self._target()
        self.sketch_records = float(sketch.count)
        self.metrics.sketch_records.set(sketch.count)
        if sketch.count == 0:
            self.stop_event.wait(1.0)
            return
        with self.lock:
            assert self.trainer is not None
            self.trainer.set_target(sketch)
        start = time.perf_counter()
        corrected = self._train_round()
        elapsed = time.perf_counter() - start
        loss = float(np.mean(corrected[-max(1, len(corrected) // 10) :]))  # the round's last 10 %
        self.rounds += 1
        self.last_loss = loss
        floor = self.trainer.last.floor if self.trainer is not None and self.trainer.last is not None else 0.0
        self._round_losses = (loss + floor, floor)  # the plain loss and its floor, for the history
        self.metrics.loss.set(loss)
        self.metrics.steps.inc(len(corrected))
        self.metrics.rounds.inc()
        self.metrics.step_seconds.observe(elapsed / len(corrected))  # the round's mean step time
        self._renew_or_step_down()
        if time.monotonic() - self.last_checkpoint >= self.config.checkpoint_every:
            self._checkpoint()

    def _train_round(self) -> list[float]:
        """K steps in slices of :data:`SLICE_STEPS`; returns each step's floor-corrected loss.

        After each slice the served snapshot is replaced (HTTP samples it without any lock), and
        the lease is renewed whenever a third of its TTL has passed since it was last taken or
        renewed (counting the work done before the round: reading the target, building a trainer),
        so a round on a slow or busy machine does not lose the lease.
        """
        corrected: list[float] = []
        while len(corrected) < self.config.steps_per_round:
            if time.monotonic() - self.lease.renewed_at >= self.config.lease_ttl / 3:
                self._renew_or_step_down()
            n = min(SLICE_STEPS, self.config.steps_per_round - len(corrected))
            with self.lock:
                assert self.trainer is not None and self.trained_for is not None
                self.trainer.train(steps=n, callback=lambda _step, value: corrected.append(value.corrected))
                self.model = ServedModel.from_trainer(self.trainer, self.trained_for[1])
        return corrected

    def _renew_or_step_down(self) -> None:
        if not self.lease.renew():
            self._become(False)
            raise LeaseLostError("lost the learner lease during a round; standing by")

    def _fresh_trainer(self, spec: SketchSpec) -> Trainer:
        gconf = self.config.generator or GeneratorConfig(latent=10, hidden=(128, 128, 128), output=spec.d)
        if gconf.output != spec.d:
            gconf = dataclasses.replace(gconf, output=spec.d)
        return Trainer(spec, gconf, self.config.train, device=self.config.torch_device)

    def _new_trainer(self, spec: SketchSpec, incarnation: str) -> None:
        """A trainer for the stream's spec and incarnation: resumed from a valid checkpoint of both, else fresh."""
        previous, identity = self.trained_for, (spec.fingerprint, incarnation)
        fallback = self.served if previous == identity else None  # what this replica served as a standby
        if previous is not None and previous[0] != spec.fingerprint:
            log.info("the stream's spec changed (%s -> %s): training restarts", previous[0], spec.fingerprint)
        elif previous is not None and previous[1] != incarnation:
            log.info("stream %s was recreated (incarnation %s -> %s): training restarts from scratch", self.stream,
                     previous[1] or "(none)", incarnation or "(none)")
        trainer = self._fresh_trainer(spec)
        consequence = "resuming from the model it served" if fallback is not None else "starting afresh"
        resumed = self.watch.take(spec, incarnation, lambda ckpt: restore_trainer(trainer, ckpt) or True, consequence)
        if not resumed:
            trainer = self._fresh_trainer(spec)  # untouched by a refused restore
            resumed = fallback is not None and self._resume_from_served(trainer, fallback)
        if resumed:
            log.info("resumed from the checkpoint at step %d", trainer.steps)
        with self.lock:
            self.trainer, self.trained_for, self.served = trainer, identity, None
            self.model = ServedModel.from_trainer(trainer, incarnation) if resumed else None

    def _resume_from_served(self, trainer: Trainer, served: Checkpoint) -> bool:
        """Restore ``trainer`` from the checkpoint this replica served as a standby; False (logged) if it cannot."""
        try:
            restore_trainer(trainer, served)
        except CheckpointError as exc:
            log.error("cannot resume from the checkpoint it served (%s); starting afresh", exc)
            return False
        return True

    def _target(self) -> Sketch:
        """The sketch trained towards; a typed stream's window or decayed target carries the all-time bounds."""
        kind, seconds = parse_target(self.config.target)
        if kind == "all":
            return self.store.read_total(self.stream)
        if kind == "window":
            sketch = self.store.read_window(self.stream, seconds)
        else:
            sketch = self.store.read_decayed(self.stream, seconds)
        return self.store.with_bounds(self.stream, sketch) if self.spec.encoder is not None else sketch

    def _checkpoint(self) -> None:
        """Write the trainer's checkpoint, refused by Redis unless we lead the trainer's incarnation."""
        trainer, identity = self.trainer, self.trained_for
        if trainer is None or trainer.target is None or identity is None:
            return
        with self.lock:
            blob = checkpoint_bytes(trainer, extra={"rounds": self.rounds}, incarnation=identity[1])
            steps, count = trainer.steps, trainer.target.count
        self.checkpoints.save(self.lease, blob, identity[0], steps, count, incarnation=identity[1])
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoints.inc()
        self.watch.accepted()

    # -- standing by -------------------------------------------------------------

    def _stand_by(self) -> None:
        """Serve the latest valid checkpoint of the stream's spec and incarnation; keep the current model otherwise."""
        self._become(False)
        spec, incarnation = self._stream_identity()
        identity = (spec.fingerprint, incarnation)
        if self.trained_for is not None and self.trained_for != identity:
            self._drop_model(identity)

        def serve(ckpt: Checkpoint) -> tuple[Checkpoint, ServedModel]:
            return ckpt, ServedModel.from_checkpoint(ckpt, incarnation)

        accepted = self.watch.take(spec, incarnation, serve, "keeping the current model", only_new=True)
        if accepted is not None:
            with self.lock:
                self.served, self.model = accepted
                self.trainer, self.trained_for = None, identity
        self.stop_event.wait(min(1.0, self.config.lease_ttl / 3))

    def _drop_model(self, identity: tuple[str, str]) -> None:
        """The stream was recreated: stop serving (and training) the model of its previous spec or incarnation."""
        assert self.trained_for is not None
        log.info("stream %s was recreated (spec %s, incarnation %s -> spec %s, incarnation %s): its previous model "
                 "is no longer served", self.stream, *self.trained_for, *identity)
        with self.lock:
            self.trainer, self.trained_for, self.served, self.model = None, None, None, None

    def _update_drift(self) -> None:
        try:
            recent = self.store.read_buckets(self.stream, 0, self.config.drift_recent)  # newest first: the scan
            reference = self.store.read_range(self.stream, self.config.drift_recent,
                                              self.config.drift_recent + self.config.drift_reference)
            updated = self.store.last_updated(self.stream)
            self.ingested = self.store.total_count(self.stream)
        except SketchgenError as exc:
            log.debug("drift update failed: %s", exc)
            return
        self.drift.update(recent, reference, self.spec, now=time.monotonic())  # windows are a cadence: no clock jumps
        if updated is not None:
            self.metrics.sketch_age.set(max(0.0, time.time() - updated))

    def _record_history(self) -> None:
        """Append this loop's point (loss and floor only when a round ran since the last point)."""
        loss, floor = self._round_losses or (None, None)
        self._round_losses = None
        self.history.record(HistoryPoint(
            time=time.time(), records=float(self.ingested or 0), leader=self.is_leader, loss=loss, floor=floor,
            drift=self.drift.score, threshold=self.drift.threshold, round=self.rounds,
            steps=self.trainer.steps if self.trainer is not None else None,
        ))

    # -- what HTTP reads (no lock, no Redis call) ---------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): ready while the stream is reachable and this replica has a model to serve."""
        if not self.reachable:
            return False, "cannot read the stream from Redis (deleted, or Redis unreachable); retrying"
        if self.model is None:
            if not self.is_leader:
                return False, "no model yet: no checkpoint of the stream's current spec from the leader yet"
            if not self.sketch_records:
                return False, "no model yet: the stream has no records to train on"
            return False, "no model yet: the first training slice has not finished"
        return True, "leading with a model" if self.is_leader else "standing by, serving the latest checkpoint"

    def ready(self) -> bool:
        return self.readiness()[0]

    def has_model(self) -> bool:
        return self.model is not None

    def sample(self, n: int) -> np.ndarray:
        """``n`` samples in the data's original units from the served snapshot (:class:`NoModelError` if none)."""
        model = self.model
        if model is None:
            raise NoModelError("no model yet: the stream has no data, or training has not started")
        return model.sample(n)

    def status(self) -> dict[str, object]:
        """The ``/status`` JSON, from figures the loop keeps (no Redis call: it answers during outages)."""
        saved = self.checkpoint_saved
        return {
            "stream": self.stream,
            "records": self.sketch_records,
            "loss": self.last_loss,
            "rounds": self.rounds,
            "steps": self.trainer.steps if self.trainer is not None else None,
            "leader": self.is_leader,
            "lease_holder": self.lease_holder,
            "reachable": self.reachable,
            "checkpoint_age_seconds": None if saved is None else round(max(0.0, time.time() - saved), 3),
            "checkpoint_error": self.watch.error,
            **self.drift.status(),
            "target": self.config.target,
        }

    def spec_summary(self) -> dict[str, object]:
        """The stream's spec in brief (d, m, law, σ as a number or per-dimension values), as last read."""
        spec = self.spec
        sigma = spec.sigma
        return {
            "name": spec.name or self.stream,
            "d": spec.d,
            "m": spec.m,
            "law": spec.law,
            "sigma": float(sigma) if sigma.ndim == 0 else [float(v) for v in sigma],
            "scale_method": spec.scale_method,
            "scales": None if spec.scales is None else [float(v) for v in spec.scales],
            "fingerprint": spec.fingerprint,
        }

    def history_payload(self, since: float | None = None) -> dict[str, object]:
        """The ``/history`` JSON: the state now, the spec summary, and the held points newer than ``since``.

        Built from figures the loop keeps (no Redis call), so it answers during outages too.
        """
        return {
            "stream": self.stream,
            "now": time.time(),
            "maxlen": self.history.maxlen,
            "leader": self.is_leader,
            "holder": self.holder,
            "lease_holder": self.lease_holder,
            "reachable": self.reachable,
            "target": self.config.target,
            "spec": self.spec_summary(),
            "records": self.ingested,
            "target_records": self.sketch_records,
            "rate": self.history.rate(),
            "rounds": self.rounds,
            "steps": self.trainer.steps if self.trainer is not None else None,
            "loss": self.last_loss,
            "drift": self.drift.score,
            "drift_fields": self.drift.fields_payload(),
            "threshold": self.drift.threshold,
            "has_model": self.has_model(),
            "points": self.history.points(since),
        }
