"""The learner service: a generator kept fitted to a stream's live sketch (BRIEF §4).

Every round the replica that holds the stream's learner lease (``sketch_store.leadership``)
re-reads the target sketch from Redis (all-time, a window, or half-life decayed), runs K
warm-started Adam steps against it, and every ``checkpoint_every`` seconds writes a
checkpoint that only the lease holder may write. Other replicas are hot standbys: they
serve the latest checkpoint and take the lease when the leader stops renewing it. On
start, and on taking over, training resumes from the stream's latest checkpoint. When the
stream is recreated with another spec, training restarts for the new spec.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
import zlib

import numpy as np
import redis
import torch

from learner.checkpoint import Checkpoint, checkpoint_bytes, load_checkpoint, restore_trainer
from learner.drift import drift_score
from learner.generator import GeneratorConfig
from learner.history import DEFAULT_MAXLEN, History, HistoryPoint
from learner.metrics import LearnerMetrics
from learner.trainer import TrainConfig, Trainer
from sketch_store.errors import CheckpointError, SketchgenError
from sketch_store.leadership import CheckpointStore, Lease, LeaseLostError
from sketch_store.redis_store import SketchStore, StreamNotFoundError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

log = logging.getLogger(__name__)

#: Steps trained under the model lock at a time (between slices: HTTP samples, lease renewal).
SLICE_STEPS = 20


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    """Settings of one learner replica (see ``sketchgen learn --help``)."""

    stream: str
    target: str = "all"
    steps_per_round: int = 200
    checkpoint_every: float = 10.0
    device: str = "auto"
    lease_ttl: float = 10.0
    generator: GeneratorConfig | None = None
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(lr=3e-3, ema_decay=0.995))
    drift_recent: float = 60.0
    drift_reference: float = 600.0
    drift_threshold: float = 5.0
    max_sample: int = 100_000
    history_size: int = DEFAULT_MAXLEN  # points kept for /history (a ring buffer)

    def __post_init__(self) -> None:
        parse_target(self.target)
        if self.steps_per_round < 1 or not self.checkpoint_every > 0 or not self.lease_ttl > 0:
            raise SketchgenError("--steps-per-round, --checkpoint-every and the lease TTL must be positive")
        if self.device not in ("auto", "cpu", "cuda"):
            raise SketchgenError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.history_size < 1:
            raise SketchgenError(f"the history size must be at least 1, got {self.history_size}")

    @property
    def torch_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise SketchgenError("--device cuda asked for, but PyTorch sees no CUDA device")
        return self.device


def parse_target(text: str) -> tuple[str, float]:
    """``all``, ``window:SECONDS`` or ``halflife:SECONDS`` → (kind, seconds)."""
    kind, _, value = text.partition(":")
    if kind == "all" and not value:
        return "all", 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if kind in ("window", "halflife") and seconds > 0:
        return kind, seconds
    raise SketchgenError(f"--target must be all, window:SECONDS or halflife:SECONDS, got {text!r}")


class LearnerService:
    """One replica: leader (training) or hot standby (serving the latest checkpoint)."""

    def __init__(self, config: LearnConfig, store: SketchStore, metrics: LearnerMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.stream = config.stream
        store.get_spec(self.stream, refresh=True)  # unknown stream: fail fast
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = Lease(store.client, self.stream, self.holder, ttl=config.lease_ttl)
        self.checkpoints = CheckpointStore(store.client, self.stream)
        window = f"{config.drift_recent:g}s_vs_{config.drift_reference:g}s"
        self.metrics = metrics or LearnerMetrics(self.stream, window)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()  # guards trainer / served model between the loop and HTTP
        self.trainer: Trainer | None = None
        self.served: Checkpoint | None = None  # what a standby serves
        self.is_leader = False
        self.rounds = 0
        self.last_loss: float | None = None
        self.last_checkpoint = 0.0
        self.sketch_records = 0.0
        self.drift: float | None = None
        self.standby_healthy = False
        self.reachable = True  # False while Redis or the stream cannot be read (not ready, retrying)
        self.lease_holder: str | None = None
        self.checkpoint_saved: float | None = None
        self._seen_checkpoint: tuple[float, int, str] | None = None
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
        finally:
            self._let_go()
            self.metrics.is_leader.set(0)
            log.info("learner stopped")

    def _tick(self) -> None:
        """One round as leader or one look as standby, then the drift and status figures."""
        try:
            if self.lease.acquire():
                self._lead()
            else:
                self._stand_by()
        except (LeaseLostError, CheckpointError) as exc:
            log.warning("%s", exc)
        self._update_drift()
        self.lease_holder = self.lease.current_holder()
        self.checkpoint_saved = self.checkpoints.saved_at()
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

    def _become(self, leader: bool) -> None:
        if leader != self.is_leader:
            log.info("%s the learner lease for stream %s", "took" if leader else "do not hold", self.stream)
        self.is_leader = leader
        self.metrics.is_leader.set(1 if leader else 0)

    def _lead(self) -> None:
        self._become(True)
        spec = self.store.get_spec(self.stream, refresh=True)
        if self.trainer is None or self.trainer.spec.fingerprint != spec.fingerprint:
            self._new_trainer(spec)
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

        Between slices the lock is free (``/sample`` never waits for a whole round) and the
        lease is renewed whenever a third of its TTL has passed, so a round longer than the
        TTL (a slow or busy machine) does not lose the lease.
        """
        corrected: list[float] = []
        renewed = time.monotonic()
        while len(corrected) < self.config.steps_per_round:
            n = min(SLICE_STEPS, self.config.steps_per_round - len(corrected))
            with self.lock:
                assert self.trainer is not None
                self.trainer.train(steps=n, callback=lambda _step, value: corrected.append(value.corrected))
            if time.monotonic() - renewed >= self.config.lease_ttl / 3:
                self._renew_or_step_down()
                renewed = time.monotonic()
        return corrected

    def _renew_or_step_down(self) -> None:
        if not self.lease.renew():
            self._become(False)
            raise LeaseLostError("lost the learner lease during a round; standing by")

    def _new_trainer(self, spec: SketchSpec) -> None:
        gconf = self.config.generator or GeneratorConfig(latent=10, hidden=(128, 128, 128), output=spec.d)
        if gconf.output != spec.d:
            gconf = dataclasses.replace(gconf, output=spec.d)
        trainer = Trainer(spec, gconf, self.config.train, device=self.config.torch_device)
        stored = self.checkpoints.load()
        if stored is not None and stored.fingerprint == spec.fingerprint:
            try:
                restore_trainer(trainer, load_checkpoint(stored.model, expected_fingerprint=spec.fingerprint))
                log.info("resumed from the checkpoint at step %d", trainer.steps)
            except CheckpointError as exc:
                log.error("refusing the stored checkpoint (%s); starting afresh", exc)
        elif stored is not None:
            log.info("the stored checkpoint is for spec %s; starting afresh for %s", stored.fingerprint,
                     spec.fingerprint)
        if self.trainer is not None:
            log.info("the stream's spec changed (%s -> %s): training restarts", self.trainer.spec.fingerprint,
                     spec.fingerprint)
        with self.lock:
            self.trainer = trainer
            self.served = None

    def _target(self) -> Sketch:
        kind, seconds = parse_target(self.config.target)
        if kind == "window":
            return self.store.read_window(self.stream, seconds)
        if kind == "halflife":
            return self.store.read_decayed(self.stream, seconds)
        return self.store.read_total(self.stream)

    def _checkpoint(self) -> None:
        if self.trainer is None or self.trainer.target is None:
            return
        with self.lock:
            blob = checkpoint_bytes(self.trainer, extra={"rounds": self.rounds})
        self.checkpoints.save(self.lease, blob, self.trainer.spec.fingerprint, self.trainer.steps,
                              self.trainer.target.count)
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoints.inc()

    def _stand_by(self) -> None:
        if self.is_leader:
            self._become(False)
        self.metrics.is_leader.set(0)
        stored, seen = None, None
        try:
            stored = self.checkpoints.load()
            seen = None if stored is None else (stored.saved, zlib.crc32(stored.model), stored.fingerprint)
            spec = self.store.get_spec(self.stream, refresh=True)
            if stored is not None and seen != self._seen_checkpoint:
                if stored.fingerprint != spec.fingerprint:
                    raise CheckpointError(f"it was trained for spec {stored.fingerprint}, not {spec.fingerprint}")
                ckpt = load_checkpoint(stored.model, expected_fingerprint=spec.fingerprint)
                with self.lock:
                    self.served, self.trainer = ckpt, None
            self.standby_healthy = True
        except CheckpointError as exc:
            log.error("refusing the stored checkpoint (%s); keeping the current model", exc)
        except StreamNotFoundError:
            self.standby_healthy = False
        if seen is not None:
            self._seen_checkpoint = seen  # look at each stored checkpoint (and each change to it) once
        self.stop_event.wait(min(1.0, self.config.lease_ttl / 3))

    def _update_drift(self) -> None:
        try:
            recent = self.store.read_range(self.stream, 0, self.config.drift_recent)
            reference = self.store.read_range(self.stream, self.config.drift_recent,
                                              self.config.drift_recent + self.config.drift_reference)
            updated = self.store.last_updated(self.stream)
            self.ingested = self.store.total_count(self.stream)
        except SketchgenError as exc:
            log.debug("drift update failed: %s", exc)
            return
        self.drift = drift_score(recent, reference)
        if self.drift is not None:
            self.metrics.drift_score.set(self.drift)
            self.metrics.drift_detected.set(1 if self.drift > self.config.drift_threshold else 0)
        if updated is not None:
            self.metrics.sketch_age.set(max(0.0, time.time() - updated))

    def _record_history(self) -> None:
        """Append this loop's point (loss and floor only when a round ran since the last point)."""
        loss, floor = self._round_losses or (None, None)
        self._round_losses = None
        self.history.record(HistoryPoint(
            time=time.time(), records=float(self.ingested or 0), leader=self.is_leader, loss=loss, floor=floor,
            drift=self.drift, threshold=self.config.drift_threshold, round=self.rounds,
            steps=self.trainer.steps if self.trainer is not None else None,
        ))

    # -- what HTTP reads ------------------------------------------------------

    def ready(self) -> bool:
        """Ready: the stream is reachable and this replica leads with a model or is a healthy standby."""
        if not self.reachable:
            return False
        return self.has_model() if self.is_leader else self.standby_healthy

    def has_model(self) -> bool:
        return (self.trainer is not None and self.trainer.target is not None) or self.served is not None

    def sample(self, n: int) -> np.ndarray:
        """``n`` samples in the data's original units from the current model."""
        with self.lock:
            if self.trainer is not None and self.trainer.target is not None:
                return self.trainer.sample(n)
            if self.served is not None:
                return self.served.sample(n)
        raise SketchgenError("no model yet: the stream has no data, or training has not started")

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
            "drift_score": self.drift,
            "target": self.config.target,
        }

    def spec_summary(self) -> dict[str, object]:
        """The stream's spec in brief (d, m, law, σ as a number or per-dimension values), from the cache."""
        spec = self.store.get_spec(self.stream)
        sigma = spec.sigma
        return {
            "name": spec.name or self.stream,
            "d": spec.d,
            "m": spec.m,
            "law": spec.law,
            "sigma": float(sigma) if sigma.ndim == 0 else [float(v) for v in sigma],
            "scale_method": spec.scale_method,
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
            "drift": self.drift,
            "threshold": self.config.drift_threshold,
            "has_model": self.has_model(),
            "points": self.history.points(since),
        }
