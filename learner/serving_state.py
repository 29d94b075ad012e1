"""What a learner replica's HTTP API reads: readiness, samples, ``/status`` and ``/history``.

Everything here is built from figures the service's loop keeps (no lock, no Redis call), so it
answers during Redis outages too; samples come from the published
:class:`~learner.serving.ServedModel` snapshot, never from the trainer (docs/learner.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from sketch_store.errors import SketchgenError

if TYPE_CHECKING:
    from learner.service import LearnerService


class NoModelError(SketchgenError):
    """This replica has no model to sample yet."""


class ServingState:
    """The replica as HTTP sees it (see module docstring)."""

    def __init__(self, service: LearnerService) -> None:
        self.service = service

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): ready while the stream is reachable and this replica has a model to serve."""
        s = self.service
        if not s.reachable:
            return False, "cannot read the stream from Redis (deleted, or Redis unreachable); retrying"
        if s.model is None:
            if not s.is_leader:
                return False, "no model yet: no checkpoint of the stream's current spec from the leader yet"
            if not s.sketch_records:
                return False, "no model yet: the stream has no records to train on"
            return False, "no model yet: the first training slice has not finished"
        return True, "leading with a model" if s.is_leader else "standing by, serving the latest checkpoint"

    def sample(self, n: int) -> np.ndarray:
        """``n`` samples in the data's original units from the served snapshot (:class:`NoModelError` if none)."""
        model = self.service.model
        if model is None:
            raise NoModelError("no model yet: the stream has no data, or training has not started")
        return model.sample(n)

    def status(self) -> dict[str, object]:
        """The ``/status`` JSON, from figures the loop keeps (no Redis call: it answers during outages)."""
        s = self.service
        saved = s.checkpoint_saved
        return {
            "stream": s.stream,
            "records": s.sketch_records,
            "loss": s.last_loss,
            "rounds": s.rounds,
            "steps": s.slot.steps,
            "leader": s.is_leader,
            "lease_holder": s.lease_holder,
            "reachable": s.reachable,
            "checkpoint_age_seconds": None if saved is None else round(max(0.0, time.time() - saved), 3),
            "checkpoint_error": s.watch.error,
            **s.drift.status(),
            "target": s.config.target,
        }

    def spec_summary(self) -> dict[str, object]:
        """The stream's spec in brief (d, m, law, σ as a number or per-dimension values), as last read."""
        spec = self.service.spec
        sigma = spec.sigma
        return {
            "name": spec.name or self.service.stream,
            "d": spec.d,
            "m": spec.m,
            "law": spec.law,
            "sigma": float(sigma) if sigma.ndim == 0 else [float(v) for v in sigma],
            "scale_method": spec.scale_method,
            "scales": None if spec.scales is None else [float(v) for v in spec.scales],
            "fingerprint": spec.fingerprint,
        }

    def history_payload(self, since: float | None = None) -> dict[str, object]:
        """The ``/history`` JSON: the state now, the spec summary, and the held points newer than ``since``."""
        s = self.service
        return {
            "stream": s.stream,
            "now": time.time(),
            "maxlen": s.history.maxlen,
            "leader": s.is_leader,
            "holder": s.holder,
            "lease_holder": s.lease_holder,
            "reachable": s.reachable,
            "target": s.config.target,
            "spec": self.spec_summary(),
            "records": s.ingested,
            "target_records": s.sketch_records,
            "rate": s.history.rate(),
            "rounds": s.rounds,
            "steps": s.slot.steps,
            "loss": s.last_loss,
            "drift": s.drift.score,
            "drift_fields": s.drift.fields_payload(),
            "threshold": s.drift.threshold,
            "has_model": s.has_model(),
            "points": s.history.points(since),
        }
