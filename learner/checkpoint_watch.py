"""A learner replica's view of its stream's stored checkpoint: verified, or refused once with a reason.

A checkpoint in Redis is used (restored into a fresh trainer by a new leader, served by a
standby) only if its record is well formed, it was trained for the stream's current spec
*and* incarnation, and the blob loads (:func:`learner.checkpoint.load_checkpoint`). Anything
else is refused without harm: the leader starts afresh (or from the model it served), a
standby keeps its current model. Each distinct refused record — told apart by
:attr:`~sketch_store.leadership.StoredCheckpoint.record_id` — is reported once, however many
loops look at it: one log line, one increment of
``sketchgen_learner_checkpoint_rejected_total``, and :attr:`CheckpointWatch.error` (the
``checkpoint_error`` of ``/status``) until a later checkpoint is accepted or written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from learner.checkpoint import Checkpoint, load_checkpoint
from sketch_store.errors import CheckpointError
from sketch_store.leadership import CheckpointRecordError, CheckpointStore, StoredCheckpoint
from sketch_store.spec import SketchSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


def verify(stored: StoredCheckpoint, spec: SketchSpec, incarnation: str) -> Checkpoint:
    """The checkpoint of ``stored`` if it was trained for ``spec`` and stream ``incarnation``; else CheckpointError."""
    if stored.fingerprint != spec.fingerprint:
        raise CheckpointError(f"it was trained for spec {stored.fingerprint}, not {spec.fingerprint}")
    if stored.incarnation != incarnation:
        raise CheckpointError(f"it was written for another incarnation of the stream ({stored.incarnation or '(none)'}"
                              f", the stream's is {incarnation or '(none)'})")
    ckpt = load_checkpoint(stored.model, expected_fingerprint=spec.fingerprint)
    if ckpt.incarnation is not None and ckpt.incarnation != incarnation:
        raise CheckpointError(f"its model was trained for another incarnation of the stream ({ckpt.incarnation})")
    return ckpt


class CheckpointWatch:
    """Reads one stream's stored checkpoint for a replica and reports each refused record once."""

    def __init__(self, store: CheckpointStore, rejected: _Counter) -> None:
        self.store = store
        self.rejected = rejected
        self.error: dict[str, object] | None = None  # {"reason", "time"} of the last refusal; None once one is accepted
        self.saved: float | None = None  # when the last well-formed record read was written
        self._refused: str | None = None  # record id of the last refusal (reported once)
        self._seen: str | None = None  # record id of the last record looked at

    def take(self, spec: SketchSpec, incarnation: str, use: Callable[[Checkpoint], T], consequence: str,
             only_new: bool = False) -> T | None:
        """``use(checkpoint)`` on the stored checkpoint verified for ``spec`` and ``incarnation``.

        Returns None when there is none, when it is refused (a malformed record, another spec or
        incarnation, a bad blob, or ``use`` raising :class:`CheckpointError`: reported, with
        ``consequence`` saying what the replica does instead), or, with ``only_new``, when this
        very record was already looked at.
        """
        try:
            stored = self.store.load()
        except CheckpointRecordError as exc:
            self.saved = None
            self.refuse(exc.record_id, str(exc), consequence)
            return None
        self.saved = None if stored is None else stored.saved
        if stored is None or (only_new and stored.record_id == self._seen):
            return None
        self._seen = stored.record_id
        try:
            result = use(verify(stored, spec, incarnation))
        except CheckpointError as exc:
            self.refuse(stored.record_id, str(exc), consequence)
            return None
        self.accepted()
        return result

    def refuse(self, record_id: str, reason: str, consequence: str) -> None:
        """Report a refused record: a log line, the counter and :attr:`error`, once per distinct record."""
        if record_id == self._refused:
            return
        self._refused = record_id
        log.error("refusing the stored checkpoint (%s); %s", reason, consequence)
        self.rejected.inc()
        self.error = {"reason": reason, "time": time.time()}

    def accepted(self) -> None:
        """A checkpoint was accepted or written: no current refusal (a later bad record is reported anew)."""
        self.error = None
        self._refused = None
