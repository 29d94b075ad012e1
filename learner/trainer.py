"""Training a generator from a sketch alone: Adam on the sketch-matching loss (docs/design.md §1).

A :class:`Trainer` owns the generator, its Adam optimiser and the target
sketch. :meth:`Trainer.train` runs for a number of steps or a wall-clock
budget and can be called again (warm start), also after
:meth:`Trainer.set_target` moved the target to a newer sketch of the stream.
Its whole state round-trips through :mod:`learner.checkpoint`.

Example
-------
>>> import numpy as np
>>> from sketch_store.sketch import Sketch
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=2, m=64, law="gaussian", seed=0)
>>> data = np.random.default_rng(0).normal(size=(2000, 2))
>>> trainer = Trainer(spec, GeneratorConfig(latent=2, hidden=(16,), output=2), TrainConfig(batch=256, seed=0))
>>> trainer.set_target(Sketch.from_data(spec, data))
>>> result = trainer.train(steps=5)
>>> result.steps, trainer.steps
(5, 5)
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from learner.generator import Generator, GeneratorConfig
from learner.loss import LossValue, sketch_loss, smoothing_weights
from learner.typed_heads import sample_rng, sample_typed_rows, typed_heads
from sketch_store.errors import SketchgenError, SpecMismatchError
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec
from sketch_store.torch_features import TorchFeatureMap
from sketch_store.typed_encoding import Encoder

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: batch size ``n``, Adam learning rate and betas, RNG seed.

    ``anneal`` makes :meth:`Trainer.train` follow a schedule over its budget
    (the fraction ``p`` of steps or of seconds used, whichever is larger): the
    learning rate decays along a cosine from ``lr`` to ``lr · final_lr_fraction``,
    and during the first ``smooth_fraction`` of the budget the objective is
    the frequency-weighted loss of :func:`learner.loss.smoothing_weights` with
    a width τ falling linearly from ``smooth_tau`` (standardised units) to 0.
    With ``batch_start`` < 1 the number of latents per step also grows over the budget, linearly from
    ``batch · batch_start`` to ``batch`` (:meth:`batch_at`, docs/learner.md "Spending a time budget").
    Without ``anneal`` all three stay off, as a long-running learner wants.

    ``ema_decay`` (e.g. 0.995) keeps an exponential moving average of the generator's
    weights, ``θ̄ ← β θ̄ + (1 − β) θ`` after every step (Polyak averaging), and samples
    come from it. At a constant learning rate the raw weights wander with the minibatch
    noise (their sketch loss moves several-fold from one 20-step slice to the next); the
    average does not, and sits lower. ``None`` (the default) samples the raw weights.
    """

    batch: int = 1000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int | None = 0
    anneal: bool = False
    final_lr_fraction: float = 0.02
    smooth_tau: float = 1.0
    smooth_fraction: float = 0.4
    ema_decay: float | None = None
    batch_start: float = 1.0

    def __post_init__(self) -> None:
        if int(self.batch) < 2:
            raise SketchgenError(f"batch size must be >= 2, got {self.batch}")
        if not float(self.lr) > 0:
            raise SketchgenError(f"learning rate must be > 0, got {self.lr}")
        if not 0.0 <= float(self.final_lr_fraction) <= 1.0:
            raise SketchgenError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.ema_decay is not None and not 0.0 < float(self.ema_decay) < 1.0:
            raise SketchgenError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if not 0.0 < float(self.batch_start) <= 1.0:
            raise SketchgenError(f"batch_start must be in (0, 1], got {self.batch_start}")

    def lr_at(self, progress: float) -> float:
        """Learning rate at ``progress`` ∈ [0, 1] of an annealed budget (cosine decay)."""
        if not self.anneal:
            return self.lr
        p = min(max(progress, 0.0), 1.0)
        f = self.final_lr_fraction
        return self.lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * p)))

    def batch_at(self, progress: float) -> int:
        """Latents per step at ``progress`` ∈ [0, 1]: ``round(n · (b + (1 − b) p))``, at least 2 (``n`` when off).

        ``b = batch_start``. The minibatch floor ``(1 − ‖z_G‖²)/n`` only matters once the corrected loss
        comes down to it, late in the budget; before that a smaller batch gives nearly the same step for less.
        """
        if not self.anneal or self.batch_start >= 1.0:
            return int(self.batch)
        p = min(max(progress, 0.0), 1.0)
        b = float(self.batch_start)
        return max(2, round(self.batch * (b + (1.0 - b) * p)))

    def tau_at(self, progress: float) -> float:
        """Smoothing width τ at ``progress`` of an annealed budget (0 when off)."""
        if not self.anneal or self.smooth_fraction <= 0 or progress >= self.smooth_fraction:
            return 0.0
        return self.smooth_tau * (1.0 - progress / self.smooth_fraction)


@dataclasses.dataclass
class TrainResult:
    """Outcome of one :meth:`Trainer.train` call."""

    steps: int
    seconds: float
    loss: float
    corrected_loss: float
    floor: float


class Trainer:
    """Adam on ``‖z_X − ẑ_batch‖²`` for a generator of one spec (see module docstring)."""

    def __init__(
        self,
        spec: SketchSpec,
        generator_config: GeneratorConfig,
        config: TrainConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if generator_config.output != spec.d:
            raise SpecMismatchError(f"generator output {generator_config.output} != data dimension {spec.d}")
        self.spec = spec
        self.config = config or TrainConfig()
        self.device = torch.device(device)
        if self.config.seed is not None:
            torch.manual_seed(self.config.seed)
        self.generator = Generator(generator_config, typed_heads(spec.encoder)).to(self.device)
        self.ema: AveragedModel | None = None
        if self.config.ema_decay is not None:
            self.ema = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(self.config.ema_decay))
        self.fmap = TorchFeatureMap(spec).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=self.config.lr, betas=self.config.betas
        )
        self.rng = torch.Generator(device=self.device)
        if self.config.seed is not None:
            self.rng.manual_seed(self.config.seed + 1)
        self.steps = 0
        self.target: Sketch | None = None
        self._z_data: torch.Tensor | None = None
        self.last: LossValue | None = None

    def set_target(self, sketch: Sketch) -> None:
        """Train towards ``z = sketch.mean()`` from now on; the generator and Adam state are kept."""
        if sketch.fingerprint != self.spec.fingerprint:
            raise SpecMismatchError(
                f"sketch spec {sketch.fingerprint} does not match the trainer's spec {self.spec.fingerprint}"
            )
        self.target = sketch
        self._z_data = torch.as_tensor(sketch.mean(), dtype=torch.float32, device=self.device)

    def step(self, tau: float = 0.0, batch: int | None = None) -> LossValue:
        """One Adam step on a fresh batch of ``batch`` latents (default ``config.batch``; smoothed by width
        ``tau`` if > 0)."""
        if self._z_data is None:
            raise SketchgenError("no target sketch: call set_target() first")
        n = self.config.batch if batch is None else int(batch)
        u = torch.randn(n, self.generator.config.latent, generator=self.rng, device=self.device)
        weights = smoothing_weights(self.fmap, tau) if tau > 0 else None
        value = sketch_loss(self.fmap, self._z_data, self.generator(u), weights)
        self.optimizer.zero_grad(set_to_none=True)
        value.objective.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        self.steps += 1
        self.last = value
        return value

    def train(
        self,
        steps: int | None = None,
        seconds: float | None = None,
        callback: Callable[[int, LossValue], None] | None = None,
    ) -> TrainResult:
        """Run until ``steps`` more steps or ``seconds`` of wall time, whichever comes first.

        The reported loss is averaged over the last 10% of the steps (at
        least one), which smooths the minibatch noise.
        """
        if steps is None and seconds is None:
            raise SketchgenError("give a step budget, a time budget, or both")
        self.generator.train()
        self.fmap.reserve(max(self.config.batch_at(0.0), self.config.batch_at(1.0)))  # a growing batch: one buffer
        start = time.perf_counter()
        tail: collections.deque[tuple[float, float]] = collections.deque(maxlen=max(1, (steps or 1000) // 10))
        done = 0
        while True:
            elapsed = time.perf_counter() - start
            progress = max(done / steps if steps else 0.0, elapsed / seconds if seconds else 0.0)
            if progress >= 1.0:
                break
            self._set_lr(self.config.lr_at(progress))
            value = self.step(self.config.tau_at(progress), self.config.batch_at(progress))
            done += 1
            tail.append((value.loss, value.floor))
            if callback is not None:
                callback(self.steps, value)
        elapsed = time.perf_counter() - start
        if not tail:
            raise SketchgenError("the budget allowed no training step")
        loss, floor = (float(v) for v in np.mean(np.array(tail), axis=0))
        log.debug("trained %d steps in %.2fs, loss %.3g (floor %.3g)", done, elapsed, loss, floor)
        return TrainResult(steps=done, seconds=elapsed, loss=loss, corrected_loss=loss - floor, floor=floor)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def served_generator(self) -> Generator:
        """The generator samples come from: the weight average if ``ema_decay`` is set, else the raw one."""
        if self.ema is not None and int(self.ema.n_averaged) > 0:
            return self.ema.module  # type: ignore[return-value]
        return self.generator

    @property
    def decoder(self) -> Encoder | None:
        """The encoder a typed model's samples decode with: the spec's, clipping each numeric field to the range
        the target's rows span when their bounds are known (docs/design.md §1); None for a numeric spec."""
        encoder = self.spec.encoder
        if encoder is None or self.target is None:
            return encoder
        return encoder.clipped_to(self.target.bounds)

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` samples in the data's original units (standardisation undone; a typed spec's blocks sampled)."""
        gen = torch.Generator(device=self.device)
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        served = self.served_generator
        served.eval()
        y = served.sample(int(n), generator=gen).cpu().numpy().astype(np.float64)
        if self.spec.encoder is not None:
            return sample_typed_rows(self.spec.encoder, y, sample_rng(seed))
        return self.spec.unstandardize(y)
