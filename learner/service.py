"""The learner service: a generator kept fitted to a stream's live sketch (see docs/learner.md).

One :class:`LearnerService` is one replica; its loop looks at the stream's learner lease every
turn and, holding it, trains a round, else stands by. The parts, one job each:

* **training** — :mod:`learner.training`: the leader's trainer (resumed from a checkpoint of
  the stream's current spec and incarnation, or fresh), its rounds of warm-started steps against
  the target sketch re-read from Redis, and lease-fenced checkpoints;
* **leadership** — :mod:`learner.replica_role`: the lease (taken, renewed, let go on stop), and
  a standby serving the latest valid checkpoint; a recreated stream's old model is dropped;
* **serving** — :mod:`learner.serving_state`: readiness, samples, ``/status`` and ``/history``,
  built from figures the loop keeps; what is sampled is a :class:`~learner.serving.ServedModel`,
  an immutable copy of the served weights (:mod:`learner.model_slot` holds it with the trainer);
* **drift** — :mod:`learner.drift_monitor`, fed the stream's recent and reference windows every
  turn; the turn's point goes to the history ring buffer (:mod:`learner.history`).

This module keeps the loop itself: a turn as leader or standby, then the drift, status and
history figures; Redis or the stream out of reach makes the replica not ready while it keeps
serving its current model and retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import numpy as np
import redis

from learner.checkpoint_watch import CheckpointWatch
from learner.config import LearnConfig, parse_target
from learner.drift_monitor import DriftMonitor
from learner.history import History, HistoryPoint
from learner.metrics import LearnerMetrics
from learner.model_slot import ModelSlot
from learner.replica_role import ReplicaRole
from learner.serving_state import NoModelError, ServingState
from learner.training import SLICE_STEPS, Training
from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.leadership import CheckpointStore, Lease, LeaseLostError, StaleIncarnationError
from sketch_store.redis_store import SketchStore, StreamNotFoundError
from sketch_store.spec import SketchSpec

__all__ = ["SLICE_STEPS", "LearnConfig", "LearnerService", "NoModelError", "parse_target"]

log = logging.getLogger(__name__)


def _part(part: str, name: str, doc: str) -> property:
    """A service attribute that is ``name`` of its part ``part``, read and written there (a test sets state)."""

    def read(self: LearnerService) -> object:
        return getattr(getattr(self, part), name)

    def write(self: LearnerService, value: object) -> None:
        setattr(getattr(self, part), name, value)

    return property(read, write, doc=doc)


class LearnerService:
    """One replica: leader (training) or hot standby (serving the latest checkpoint).

    Its parts: :attr:`training`, :attr:`role` and :attr:`serving` over one :attr:`slot`; the
    names HTTP and tests read (``model``, ``trainer``, ``rounds``, ``is_leader``, ``status()`` …)
    stay on the service and delegate to them.
    """

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
        self.slot = ModelSlot()
        self.role = ReplicaRole(self.stream, self.lease, self.checkpoints, self.watch, self.slot, self.stop_event)
        self.training = Training(config, store, self.slot, self.lease, self.checkpoints, self.watch, self.metrics,
                                 self.stop_event, renew=self.role.renew_or_step_down)
        self.serving = ServingState(self)
        self.metrics.is_leader.set_function(lambda: 1 if self.is_leader else 0)
        self.drift = DriftMonitor(self.metrics, config.drift_false_alarms_per_day, config.drift_recent,
                                  config.drift_threshold, stream=self.stream)
        self.reachable = True  # False while Redis or the stream cannot be read (not ready, retrying)
        self.lease_holder: str | None = None
        self.checkpoint_saved: float | None = None
        self.history = History(config.history_size)
        self.ingested: int | None = None  # records in the stream's all-time sketch

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
            self.role.let_go(self.training.checkpoint)
            log.info("learner stopped")

    def _tick(self) -> None:
        """One round as leader or one look as standby, then the drift and status figures."""
        try:
            if self.lease.acquire():
                self.role.become(True)
                self.training.round(*self._stream_identity())
            else:
                self.role.become(False)
                self.role.stand_by(*self._stream_identity(), self.config.lease_ttl)
        except (LeaseLostError, StaleIncarnationError, CheckpointError) as exc:
            log.warning("%s", exc)
        self._update_drift()
        self.lease_holder = self.lease.current_holder()
        self.checkpoint_saved = self.role.saved_at()
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

    def _stream_identity(self) -> tuple[SketchSpec, str]:
        """The stream's current spec and incarnation, re-read from Redis."""
        self.spec = self.store.get_spec(self.stream, refresh=True)
        return self.spec, self.store.incarnation(self.stream)

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
        loss, floor = self.training.round_losses or (None, None)
        self.training.round_losses = None
        self.history.record(HistoryPoint(
            time=time.time(), records=float(self.ingested or 0), leader=self.is_leader, loss=loss, floor=floor,
            drift=self.drift.score, threshold=self.drift.threshold, round=self.rounds, steps=self.slot.steps,
        ))

    # -- the parts' state, by the names HTTP and tests read -------------------------

    is_leader = _part("role", "is_leader", "this replica leads (:attr:`ReplicaRole.is_leader`)")
    lock = _part("slot", "lock", "guards the trainer between training slices and checkpointing")
    model = _part("slot", "model", "the snapshot HTTP samples (:class:`~learner.serving.ServedModel`)")
    trainer = _part("slot", "trainer", "the leader's :class:`~learner.trainer.Trainer` (None on a standby)")
    trained_for = _part("slot", "trained_for", "(spec fingerprint, incarnation) of the trainer or served model")
    served = _part("slot", "served", "the checkpoint a standby serves")
    rounds = _part("training", "rounds", "training rounds this replica ran")
    last_loss = _part("training", "last_loss", "the last round's floor-corrected loss")
    sketch_records = _part("training", "sketch_records", "records in the target sketch last read")

    # -- what HTTP reads (no lock, no Redis call): learner.serving_state ----------

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): :meth:`learner.serving_state.ServingState.readiness`."""
        return self.serving.readiness()

    def ready(self) -> bool:
        return self.readiness()[0]

    def has_model(self) -> bool:
        return self.model is not None

    def sample(self, n: int) -> np.ndarray:
        return self.serving.sample(n)

    def status(self) -> dict[str, object]:
        return self.serving.status()

    def spec_summary(self) -> dict[str, object]:
        return self.serving.spec_summary()

    def history_payload(self, since: float | None = None) -> dict[str, object]:
        return self.serving.history_payload(since)
