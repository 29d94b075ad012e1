"""The leader's training: a trainer for the stream, rounds of warm-started steps, and checkpoints.

Every round (:meth:`Training.round`) re-reads the target sketch from Redis (all-time, a window,
or half-life decayed) and runs ``steps_per_round`` Adam steps against it in slices of
:data:`SLICE_STEPS`; after each slice the served snapshot is replaced, and the lease is renewed
when a third of its TTL has passed. Every ``checkpoint_every`` seconds the leader writes a
checkpoint that only the lease holder may write, and only for the stream incarnation its trainer
was built for. A new trainer (on start, on taking over, on a recreated stream) resumes from the
stream's latest checkpoint if it is valid and of the stream's current spec and incarnation
(:mod:`learner.checkpoint_watch`), else from the model this replica served as a standby, else
starts afresh (docs/learner.md).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from learner.checkpoint import Checkpoint, checkpoint_bytes, restore_trainer
from learner.checkpoint_watch import CheckpointWatch
from learner.config import LearnConfig, parse_target
from learner.generator import GeneratorConfig
from learner.metrics import LearnerMetrics
from learner.model_slot import ModelSlot
from learner.serving import ServedModel
from learner.trainer import Trainer
from sketch_store.errors import CheckpointError
from sketch_store.leadership import CheckpointStore, Lease
from sketch_store.redis_store import SketchStore
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

log = logging.getLogger(__name__)

#: Steps trained under the model lock at a time (between slices: a new served snapshot, lease renewal).
SLICE_STEPS = 20


class Training:
    """The leader's rounds and checkpoints (see module docstring).

    ``renew()`` renews the lease or raises :class:`~sketch_store.leadership.LeaseLostError`.
    """

    def __init__(
        self, config: LearnConfig, store: SketchStore, slot: ModelSlot, lease: Lease, checkpoints: CheckpointStore,
        watch: CheckpointWatch, metrics: LearnerMetrics, stop_event: threading.Event, renew: Callable[[], None],
    ) -> None:
        self.config, self.store, self.stream, self.slot = config, store, config.stream, slot
        self.lease, self.checkpoints, self.watch = lease, checkpoints, watch
        self.metrics, self.stop_event, self.renew = metrics, stop_event, renew
        self.rounds, self.last_loss = 0, None
        self.last_checkpoint = time.monotonic()  # the first checkpoint comes checkpoint_every after the start
        self.sketch_records = 0.0  # records in the target sketch last read
        self.round_losses: tuple[float, float] | None = None  # (loss, floor) of a round not yet in the history

    def round(self, spec: SketchSpec, incarnation: str) -> None:
        """One round towards the current target (a new trainer first if the stream changed), then maybe a checkpoint."""
        slot = self.slot
        if slot.trainer is None or slot.trained_for != (spec.fingerprint, incarnation):
            self.new_trainer(spec, incarnation)
        sketch = self.target(spec)
        self.sketch_records = float(sketch.count)
        self.metrics.sketch_records.set(sketch.count)
        if sketch.count == 0:
            self.stop_event.wait(1.0)
            return
        with slot.lock:
            assert slot.trainer is not None
            slot.trainer.set_target(sketch)
        start = time.perf_counter()
        corrected = self.train_round()
        elapsed = time.perf_counter() - start
        loss = float(np.mean(corrected[-max(1, len(corrected) // 10) :]))  # the round's last 10 %
        self.rounds += 1
        self.last_loss = loss
        floor = slot.trainer.last.floor if slot.trainer is not None and slot.trainer.last is not None else 0.0
        self.round_losses = (loss + floor, floor)  # the plain loss and its floor, for the history
        self.metrics.loss.set(loss)
        self.metrics.steps.inc(len(corrected))
        self.metrics.rounds.inc()
        self.metrics.step_seconds.observe(elapsed / len(corrected))  # the round's mean step time
        self.renew()
        if time.monotonic() - self.last_checkpoint >= self.config.checkpoint_every:
            self.checkpoint()

    def train_round(self) -> list[float]:
        """K steps in slices of :data:`SLICE_STEPS`; returns each step's floor-corrected loss.

        After each slice the served snapshot is replaced (HTTP samples it without any lock), and
        the lease is renewed whenever a third of its TTL has passed since it was last taken or
        renewed (counting the work done before the round: reading the target, building a trainer),
        so a round on a slow or busy machine does not lose the lease.
        """
        corrected: list[float] = []
        slot = self.slot
        while len(corrected) < self.config.steps_per_round:
            if time.monotonic() - self.lease.renewed_at >= self.config.lease_ttl / 3:
                self.renew()
            n = min(SLICE_STEPS, self.config.steps_per_round - len(corrected))
            with slot.lock:
                assert slot.trainer is not None and slot.trained_for is not None
                slot.trainer.train(steps=n, callback=lambda _step, value: corrected.append(value.corrected))
                slot.model = ServedModel.from_trainer(slot.trainer, slot.trained_for[1])
        return corrected

    def fresh_trainer(self, spec: SketchSpec) -> Trainer:
        gconf = self.config.generator or GeneratorConfig(latent=10, hidden=(128, 128, 128), output=spec.d)
        if gconf.output != spec.d:
            gconf = dataclasses.replace(gconf, output=spec.d)
        return Trainer(spec, gconf, self.config.train, device=self.config.torch_device)

    def new_trainer(self, spec: SketchSpec, incarnation: str) -> None:
        """A trainer for the stream's spec and incarnation: resumed from a valid checkpoint of both, else fresh."""
        slot = self.slot
        previous, identity = slot.trained_for, (spec.fingerprint, incarnation)
        fallback = slot.served if previous == identity else None  # what this replica served as a standby
        if previous is not None and previous[0] != spec.fingerprint:
            log.info("the stream's spec changed (%s -> %s): training restarts", previous[0], spec.fingerprint)
        elif previous is not None and previous[1] != incarnation:
            log.info("stream %s was recreated (incarnation %s -> %s): training restarts from scratch", self.stream,
                     previous[1] or "(none)", incarnation or "(none)")
        trainer = self.fresh_trainer(spec)
        consequence = "resuming from the model it served" if fallback is not None else "starting afresh"
        resumed = self.watch.take(spec, incarnation, lambda ckpt: restore_trainer(trainer, ckpt) or True, consequence)
        if not resumed:
            trainer = self.fresh_trainer(spec)  # untouched by a refused restore
            resumed = fallback is not None and self._resume_from_served(trainer, fallback)
        if resumed:
            log.info("resumed from the checkpoint at step %d", trainer.steps)
        with slot.lock:
            slot.trainer, slot.trained_for, slot.served = trainer, identity, None
            slot.model = ServedModel.from_trainer(trainer, incarnation) if resumed else None

    @staticmethod
    def _resume_from_served(trainer: Trainer, served: Checkpoint) -> bool:
        """Restore ``trainer`` from the checkpoint this replica served as a standby; False (logged) if it cannot."""
        try:
            restore_trainer(trainer, served)
        except CheckpointError as exc:
            log.error("cannot resume from the checkpoint it served (%s); starting afresh", exc)
            return False
        return True

    def target(self, spec: SketchSpec) -> Sketch:
        """The sketch trained towards; a typed stream's window or decayed target carries the all-time bounds."""
        kind, seconds = parse_target(self.config.target)
        if kind == "all":
            return self.store.read_total(self.stream)
        if kind == "window":
            sketch = self.store.read_window(self.stream, seconds)
        else:
            sketch = self.store.read_decayed(self.stream, seconds)
        return self.store.with_bounds(self.stream, sketch) if spec.encoder is not None else sketch

    def checkpoint(self) -> None:
        """Write the trainer's checkpoint, refused by Redis unless we lead the trainer's incarnation."""
        trainer, identity = self.slot.trainer, self.slot.trained_for
        if trainer is None or trainer.target is None or identity is None:
            return
        with self.slot.lock:
            blob = checkpoint_bytes(trainer, extra={"rounds": self.rounds}, incarnation=identity[1])
            steps, count = trainer.steps, trainer.target.count
        self.checkpoints.save(self.lease, blob, identity[0], steps, count, incarnation=identity[1])
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoints.inc()
        self.watch.accepted()
