"""Shared pieces of the beyond-the-paper benchmarks (vs_exact_mmd, sketch_size, digits).

* memory: :func:`rss_bytes` (current resident set, from /proc) and :func:`peak_rss_bytes`
  (the process's high-water mark, ``getrusage``); a child process per measured run gives a
  clean peak.
* exact MMD training (the GMMN recipe): :func:`mixture_mmd2` and :func:`full_data_cross_grad`.
* :func:`train_timed`: a training loop with a wall-clock budget whose clock stops while the
  model is being evaluated, returning the MMD-ratio-against-time curve.
* :func:`train_sketch`: sketchgen's own recipe (``sketchgen fit`` defaults) on a step budget.
"""

from __future__ import annotations

import ctypes
import dataclasses
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from learner.evaluation import BANDWIDTH_FACTORS, mmd_ratio
from learner.generator import GeneratorConfig
from learner.trainer import TrainConfig, Trainer
from sketch_store.pilot import spec_from_pilot
from sketch_store.scale import median_heuristic
from sketch_store.sketch import Sketch
from sketch_store.spec import SketchSpec

#: Torch threads for every benchmark run: one, deliberately, so that the machine's second core
#: absorbs the other engineers' load and every method gets the same single core.
TORCH_THREADS = 1
#: The ``sketchgen fit`` defaults (sketchgen/offline.py) for the generator and optimiser.
HIDDEN = (128, 128, 128)
LATENT = 10
BATCH = 1000
LR = 3e-3
IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def setup_torch() -> None:
    """Pin torch to :data:`TORCH_THREADS` threads."""
    torch.set_num_threads(TORCH_THREADS)


def rss_bytes(trim: bool = True) -> int:
    """Current resident set size of this process, in bytes.

    With ``trim``, glibc first returns freed heap pages to the system (``malloc_trim``), so that
    memory freed earlier is not counted and later reused without showing up as growth.
    """
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set size, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def generator_config(d: int, hidden: tuple[int, ...] = HIDDEN, latent: int = LATENT) -> GeneratorConfig:
    """The default generator architecture for data of dimension ``d``."""
    return GeneratorConfig(latent=latent, hidden=hidden, output=d)


def bandwidths(y: np.ndarray, seed: int = 0) -> torch.Tensor:
    """The evaluation's kernel bandwidths (median distance × 1/8 … 2) for standardised rows ``y``."""
    med = median_heuristic(y, seed=seed)
    return torch.tensor([med * f for f in BANDWIDTH_FACTORS], dtype=torch.float32)


def _kernel_mean(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(a, b).pow(2)
    return torch.exp(-d2[None] / (2.0 * h[:, None, None] ** 2)).mean()


def mixture_mmd2(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Biased ``MMD²(x, y)`` with the mixture kernel ``(1/B) Σ_b exp(−‖·‖²/2h_b²)``; the x–x term is dropped.

    It does not depend on the generator, so the gradient is unchanged and the value is
    ``MMD² − mean k(x, x')``.
    """
    return _kernel_mean(y, y, h) - 2.0 * _kernel_mean(x, y, h)


def full_data_cross_grad(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``∂/∂y`` of ``mean_{i,j} k(x_i, y_j)`` over *all* rows of ``x``, in chunks of ``chunk`` rows.

    ``∂k(x, y)/∂y = (1/B) Σ_b exp(−‖x−y‖²/2h_b²) (x − y)/h_b²``, summed without keeping an
    autograd graph, so memory is ``chunk × b`` whatever ``N``; time is ``N × b`` per step.
    """
    yd = y.detach()
    grad = torch.zeros_like(yd)
    inv = 1.0 / (2.0 * h**2)
    for i in range(0, x.shape[0], chunk):
        xc = x[i : i + chunk]
        d2 = torch.cdist(xc, yd).pow(2)
        w = torch.zeros_like(d2)
        for b in range(h.shape[0]):
            w += torch.exp(-d2 * inv[b]) * (2.0 * inv[b])
        grad += w.T @ xc - w.sum(dim=0)[:, None] * yd
    return grad / (x.shape[0] * yd.shape[0] * h.shape[0])


def full_data_surrogate(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient in ``y`` is that of the full-data ``MMD²(x, y)`` (all rows of ``x``).

    The y–y term goes through autograd; the cross term enters as ``−2 ⟨y, g⟩`` with ``g`` its
    exact gradient from :func:`full_data_cross_grad` (a constant), so backward costs nothing extra.
    """
    return _kernel_mean(y, y, h) - 2.0 * (y * full_data_cross_grad(x, y, h)).sum()


@dataclasses.dataclass
class Curve:
    """A timed training run: MMD ratio at training wall times, step count, time spent stepping."""

    points: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    def time_to(self, target: float) -> float | None:
        """First training wall time at which the ratio was ≤ ``target`` (None if never)."""
        return next((t for t, r in self.points if r <= target), None)

    @property
    def seconds_per_step(self) -> float:
        """Mean wall time of one step."""
        return self.seconds / max(self.steps, 1)


def train_timed(
    step: Callable[[float], None], evaluate: Callable[[], float], budget: float, every: float
) -> Curve:
    """Call ``step(progress)`` for ``budget`` seconds, ``evaluate()`` every ``every`` s (clock stopped)."""
    curve = Curve()
    next_eval = 0.0
    while curve.seconds < budget:
        if curve.seconds >= next_eval:
            curve.points.append((curve.seconds, evaluate()))
            next_eval += every
        t0 = time.perf_counter()
        step(curve.seconds / budget)
        curve.seconds += time.perf_counter() - t0
        curve.steps += 1
    curve.points.append((curve.seconds, evaluate()))
    return curve


def adam_step(generator: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """One Adam step on ``loss`` at learning rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def design_spec(pilot: np.ndarray, m: int, law: str = "adapted-radius", sigma_factor: float = 1.0,
                seed: int = 0) -> SketchSpec:
    """``spec_from_pilot`` with σ estimated on the pilot and then multiplied by ``sigma_factor``."""
    spec = spec_from_pilot(pilot, m=m, law=law, seed=seed)
    if sigma_factor == 1.0:
        return spec
    return spec_from_pilot(pilot, m=m, law=law, sigma=float(spec.sigma) * sigma_factor, seed=seed)


def train_sketch(spec: SketchSpec, sketch: Sketch, steps: int, hidden: tuple[int, ...] = HIDDEN,
                 seed: int = 0) -> Trainer:
    """Train the default generator on ``sketch`` for ``steps`` annealed steps (``sketchgen fit`` recipe)."""
    trainer = Trainer(spec, generator_config(spec.d, hidden), TrainConfig(batch=BATCH, lr=LR, seed=seed, anneal=True))
    trainer.set_target(sketch)
    trainer.train(steps=steps)
    return trainer


def ratio(reference: np.ndarray, samples: np.ndarray, points: int = 2000) -> float:
    """The evaluation's MMD ratio on at most ``points`` rows per side."""
    return mmd_ratio(reference, samples, max_points=points).ratio
