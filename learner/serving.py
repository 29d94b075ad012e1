"""What a learner replica serves: an immutable snapshot of the weights samples come from.

Training mutates the generator under the service's lock; HTTP must neither wait for a
training slice nor see weights half-way through an Adam step. So after every slice the
training loop (holding the lock) copies the served generator — the weight average when
there is one — into a :class:`ServedModel` and publishes it by swapping one reference; a
standby does the same from each checkpoint it accepts. A ``ServedModel`` is never modified
afterwards, so any number of requests can sample it at once without a lock (a PyTorch
module's forward pass only reads its weights), and training is never blocked by sampling.

:func:`sample_in_chunks` runs the network over the latents a chunk at a time, so the peak
memory of drawing 10⁵ samples is that of :data:`SAMPLE_CHUNK` rows of hidden activations,
not of all of them. A snapshot of a typed stream keeps its encoder: its samples are encoded records drawn
from the typed heads' outputs (:func:`~learner.typed_heads.sample_typed_rows`), and :meth:`ServedModel.sample_body`
decodes them to records.

Example
-------
>>> from sketch_store.spec import SketchSpec
>>> from learner.generator import GeneratorConfig
>>> from learner.trainer import Trainer
>>> trainer = Trainer(SketchSpec.create(d=2, m=8, seed=0), GeneratorConfig(latent=2, hidden=(4,), output=2))
>>> model = ServedModel.from_trainer(trainer, incarnation="a1")
>>> model.sample(25_000).shape, model.d, model.steps
((25000, 2), 2, 0)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

from learner.generator import Generator
from learner.typed_heads import sample_rng, sample_typed_rows

if TYPE_CHECKING:
    from learner.checkpoint import Checkpoint
    from learner.trainer import Trainer
    from sketch_store.typed_encoding import Encoder

#: Rows run through the network at a time when sampling.
SAMPLE_CHUNK = 8192


def seeded_rng(seed: int | None) -> torch.Generator:
    """A torch RNG seeded with ``seed``, or from the OS when it is None."""
    rng = torch.Generator()
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(seed)
    return rng


def sample_in_chunks(generator: Generator, n: int, rng: torch.Generator, chunk: int = SAMPLE_CHUNK) -> np.ndarray:
    """``n`` standardised samples ``G(u)`` (float64, n × d); the latents are drawn at once, the network chunked.

    Drawing all latents first keeps the samples identical to an unchunked ``generator.sample``
    with the same ``rng``.
    """
    device = next(generator.parameters()).device
    out = np.empty((n, generator.config.output), dtype=np.float64)
    with torch.no_grad():
        u = torch.randn(n, generator.config.latent, generator=rng, device=device)
        for start in range(0, n, chunk):
            out[start : start + chunk] = generator(u[start : start + chunk]).cpu().numpy()
    return out


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A private, never-trained copy of the served generator with its standardisation and provenance."""

    generator: Generator
    mean: np.ndarray
    std: np.ndarray
    fingerprint: str
    incarnation: str
    steps: int
    encoder: Encoder | None = None

    @classmethod
    def from_trainer(cls, trainer: Trainer, incarnation: str) -> ServedModel:
        """Copy ``trainer``'s served generator (call under the lock that guards the trainer)."""
        generator = copy.deepcopy(trainer.served_generator).cpu().eval().requires_grad_(False)
        for parameter in generator.parameters():
            parameter.grad = None
        return cls(generator, trainer.spec.mean.copy(), trainer.spec.std.copy(), trainer.spec.fingerprint,
                   incarnation, trainer.steps, trainer.decoder)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, incarnation: str) -> ServedModel:
        """The generator a checkpoint serves (:class:`~sketch_store.errors.CheckpointError` if it cannot be built)."""
        generator = ckpt.build_generator().requires_grad_(False)
        return cls(generator, ckpt.mean.copy(), ckpt.std.copy(), ckpt.fingerprint, incarnation, ckpt.steps,
                   ckpt.encoder)

    @property
    def d(self) -> int:
        return self.generator.config.output

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` samples in the data's original units (a typed stream's: encoded records, blocks sampled)."""
        out = sample_in_chunks(self.generator, int(n), seeded_rng(seed))
        if self.encoder is not None:
            return sample_typed_rows(self.encoder, out, sample_rng(seed))
        out *= self.std
        out += self.mean
        return out

    def sample_body(self, n: int, seed: int | None = None) -> dict[str, object]:
        """The ``/sample`` JSON: ``{"samples": [[…], …]}``; a typed stream's ``{"fields": […], "records": […]}``."""
        rows = self.sample(n, seed)
        if self.encoder is None:
            return {"samples": rows}
        return {"fields": list(self.encoder.schema.names), "records": self.encoder.decode_many(rows)}
