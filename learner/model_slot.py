"""What one learner replica trains and serves, shared by its leader and standby roles and by HTTP.

The leader's trainer, the (spec fingerprint, incarnation) it was built for, the checkpoint a
standby serves (resumed from on takeover) and the :class:`~learner.serving.ServedModel` HTTP
samples from. The trainer is guarded by :attr:`ModelSlot.lock` between training slices and
checkpointing; the served model is replaced, never modified, so sampling never takes the lock.
"""

from __future__ import annotations

import dataclasses
import threading

from learner.checkpoint import Checkpoint
from learner.serving import ServedModel
from learner.trainer import Trainer


@dataclasses.dataclass(eq=False)
class ModelSlot:
    """A replica's trainer, the identity it was built for, and what it serves (see module docstring)."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    trainer: Trainer | None = None
    trained_for: tuple[str, str] | None = None  # (spec fingerprint, incarnation) of the trainer / model
    model: ServedModel | None = None  # what HTTP samples: replaced, never modified
    served: Checkpoint | None = None  # the checkpoint a standby serves (resumed from on takeover)

    @property
    def steps(self) -> int | None:
        """The trainer's steps, or None without a trainer (a standby)."""
        return self.trainer.steps if self.trainer is not None else None

    def drop(self) -> None:
        """Stop serving and training (the stream was recreated)."""
        with self.lock:
            self.trainer, self.trained_for, self.served, self.model = None, None, None, None
