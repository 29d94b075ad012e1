"""Leader or hot standby: the learner lease, and what a standby serves.

The replica that holds the stream's learner lease (:class:`sketch_store.leadership.Lease`)
trains (:mod:`learner.training`); the others are hot standbys: they serve the latest valid
checkpoint of the stream's current spec and incarnation (:mod:`learner.checkpoint_watch`) and
take the lease when the leader stops renewing it. A leader that fails to renew steps down at
once; one stuck in a Redis outage stops calling itself leader once its last take or renewal is
a TTL old. On stop, a leader writes a last checkpoint and lets the lease go. When the stream is
recreated — with another spec, or the same spec (a new incarnation) — the previous model is no
longer served (docs/learner.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from learner.checkpoint import Checkpoint
from learner.checkpoint_watch import CheckpointWatch
from learner.model_slot import ModelSlot
from learner.serving import ServedModel
from sketch_store.errors import SketchgenError
from sketch_store.leadership import CheckpointRecordError, CheckpointStore, Lease, LeaseLostError
from sketch_store.spec import SketchSpec

log = logging.getLogger(__name__)


class ReplicaRole:
    """Whether this replica leads, and the standby's side of the work (see module docstring)."""

    def __init__(self, stream: str, lease: Lease, checkpoints: CheckpointStore, watch: CheckpointWatch,
                 slot: ModelSlot, stop_event: threading.Event) -> None:
        self.stream, self.lease, self.checkpoints = stream, lease, checkpoints
        self.watch, self.slot, self.stop_event = watch, slot, stop_event
        self._leader = False  # what the loop last learned; is_leader also needs the lease still valid

    @property
    def is_leader(self) -> bool:
        """This replica leads: it took the lease, and its last take or renewal is less than one TTL old.

        The second half makes a leader stuck in a Redis outage or a failover stop calling itself one
        (``/status``, ``/readyz``, the metric) before a standby can take the lease over.
        """
        return self._leader and self.lease.held

    def become(self, leader: bool) -> None:
        """Record what the loop learned of the lease (logged when it changes)."""
        if leader != self._leader:
            log.info("%s the learner lease for stream %s", "took" if leader else "do not hold", self.stream)
        self._leader = leader

    def renew_or_step_down(self) -> None:
        """Renew the lease, or stand by and raise :class:`LeaseLostError` if another replica took it."""
        if not self.lease.renew():
            self.become(False)
            raise LeaseLostError("lost the learner lease during a round; standing by")

    def let_go(self, checkpoint: Callable[[], None]) -> None:
        """On stop: a leader writes a last checkpoint and releases the lease, if Redis lets it."""
        if self.is_leader:
            try:
                checkpoint()
                self.lease.release()
            except (SketchgenError, redis.RedisError) as exc:
                log.warning("could not checkpoint or release the lease on stop: %s", exc)
        self._leader = False

    def stand_by(self, spec: SketchSpec, incarnation: str, lease_ttl: float) -> None:
        """Serve the latest valid checkpoint of the stream's spec and incarnation; keep the current model otherwise.

        The loop has recorded that this replica does not hold the lease (:meth:`become`) before it re-read the spec.
        """
        identity = (spec.fingerprint, incarnation)
        if self.slot.trained_for is not None and self.slot.trained_for != identity:
            self._drop_model(identity)

        def serve(ckpt: Checkpoint) -> tuple[Checkpoint, ServedModel]:
            return ckpt, ServedModel.from_checkpoint(ckpt, incarnation)

        accepted = self.watch.take(spec, incarnation, serve, "keeping the current model", only_new=True)
        if accepted is not None:
            with self.slot.lock:
                self.slot.served, self.slot.model = accepted
                self.slot.trainer, self.slot.trained_for = None, identity
        self.stop_event.wait(min(1.0, lease_ttl / 3))

    def _drop_model(self, identity: tuple[str, str]) -> None:
        """The stream was recreated: stop serving (and training) the model of its previous spec or incarnation."""
        assert self.slot.trained_for is not None
        log.info("stream %s was recreated (spec %s, incarnation %s -> spec %s, incarnation %s): its previous model "
                 "is no longer served", self.stream, *self.slot.trained_for, *identity)
        self.slot.drop()

    def saved_at(self) -> float | None:
        """When the stored checkpoint was written (a standby knows it from its last read)."""
        if not self.is_leader:
            return self.watch.saved
        try:
            return self.checkpoints.saved_at()
        except CheckpointRecordError as exc:
            self.watch.refuse(exc.record_id, str(exc), "the leader's next checkpoint replaces it")
            return None
