"""The random Fourier feature map in PyTorch, differentiable, for training (docs/design.md §1).

Works on *standardised* inputs ``y = s(x)`` (the generator lives in
standardised units): ``Φ(y) = [cos(Ωᵀy); sin(Ωᵀy)] / √m``.

:func:`batch_sketch` returns the batch mean ``(1/n) Σ_j Φ(y_j)`` through a
custom autograd function that keeps the cos/sin of the forward pass for the
backward pass (``∂cos p = −sin p``, ``∂sin p = cos p``) instead of
recomputing them, and reuses its work buffers from step to step.

Example
-------
>>> import torch
>>> from sketch_store.spec import SketchSpec
>>> spec = SketchSpec.create(d=2, m=8, law="gaussian", seed=0)
>>> fmap = TorchFeatureMap(spec)
>>> fmap.batch_sketch(torch.zeros(4, 2)).shape
torch.Size([16])
"""

from __future__ import annotations

import math

import torch

from sketch_store.spec import SketchSpec


class _Workspace:
    """Reusable (n, m) buffers for the batch sketch.

    Allocating two 40 MB tensors per step costs more than the cos/sin
    themselves (fresh pages from the OS), so training steps reuse them. A
    generation counter makes a stale backward (buffers overwritten by another
    forward pass before it ran) fail loudly instead of computing garbage.
    """

    def __init__(self) -> None:
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None
        self.generation = 0

    def reserve(self, n: int, m: int, dtype: torch.dtype, device: torch.device) -> None:
        """Hold buffers of at least n rows (of m columns, this dtype and device) from now on."""
        fits = self.cos is not None and self.cos.shape[0] >= n and self.cos.shape[1] == m
        if not (fits and self.cos.dtype == dtype and self.cos.device == device):
            self.cos = torch.empty((n, m), dtype=dtype, device=device)
            self.sin = torch.empty((n, m), dtype=dtype, device=device)

    def take(self, n: int, m: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (n, m) buffers: the first n rows of the kept ones (contiguous), grown when n exceeds them.

        A batch that changes from step to step (:meth:`learner.trainer.TrainConfig.batch_at`) allocates
        once when its largest size was reserved first (:meth:`TorchFeatureMap.reserve`).
        """
        self.reserve(n, m, like.dtype, like.device)
        self.generation += 1
        assert self.cos is not None and self.sin is not None
        return self.cos[:n], self.sin[:n]


class _FourierMean(torch.autograd.Function):
    """``y ↦ [mean_j cos(Ωᵀy_j) ; mean_j sin(Ωᵀy_j)]`` with a hand-written backward.

    With ``P = yΩ``, ``∂L/∂P = −sin P · g_cos + cos P · g_sin`` (per column),
    so ``∂L/∂y = cos P · (Ω g_sin)ᵀ − sin P · (Ω g_cos)ᵀ`` / n: two thin
    matrix products instead of materialising ``∂L/∂P``.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, omega: torch.Tensor, workspace: _Workspace | None) -> torch.Tensor:  # type: ignore[override]
        n, m = y.shape[0], omega.shape[1]
        if workspace is None:
            cos = y @ omega
            sin = torch.sin(cos)
            torch.cos(cos, out=cos)
        else:
            cos, sin = workspace.take(n, m, y)
            torch.mm(y, omega, out=cos)
            torch.sin(cos, out=sin)
            torch.cos(cos, out=cos)
        ctx.save_for_backward(omega)
        ctx.trig = (cos, sin)
        ctx.workspace = workspace
        ctx.generation = None if workspace is None else workspace.generation
        return torch.cat([cos.mean(dim=0), sin.mean(dim=0)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (omega,) = ctx.saved_tensors
        cos, sin = ctx.trig
        if ctx.workspace is not None and ctx.workspace.generation != ctx.generation:
            raise RuntimeError("batch_sketch buffers were reused by another forward pass before backward")
        n, m = cos.shape
        g_cos = grad[:m] / n
        g_sin = grad[m:] / n
        grad_y = cos @ (omega * g_sin).T
        grad_y.sub_(sin @ (omega * g_cos).T)
        return grad_y, None, None


class TorchFeatureMap(torch.nn.Module):
    """Differentiable feature map of a :class:`SketchSpec` on standardised inputs."""

    def __init__(self, spec: SketchSpec, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.m = spec.m
        self.d = spec.d
        self.register_buffer("omega", torch.tensor(spec.omega, dtype=dtype))
        self.register_buffer("radii", torch.linalg.vector_norm(self.omega, dim=0))
        self.scale = 1.0 / math.sqrt(spec.m)
        self._workspace = _Workspace()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Per-row features ``Φ(y_j)``, shape (n, 2m)."""
        phases = y @ self.omega
        return torch.cat([torch.cos(phases), torch.sin(phases)], dim=1) * self.scale

    def reserve(self, n: int) -> None:
        """Allocate the work buffers of :meth:`batch_sketch` for batches of up to ``n`` rows now, once."""
        self._workspace.reserve(int(n), self.m, self.omega.dtype, self.omega.device)

    def batch_sketch(self, y: torch.Tensor) -> torch.Tensor:
        """Batch sketch ``ẑ = (1/n) Σ_j Φ(y_j)``, shape (2m,).

        When gradients are needed the (n, m) work buffers are reused from the
        previous call, so run ``backward`` before the next differentiable call.
        """
        workspace = self._workspace if (torch.is_grad_enabled() and y.requires_grad) else None
        return _FourierMean.apply(y, self.omega, workspace) * self.scale
