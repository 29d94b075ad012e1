"""The sketch-matching loss and its minibatch noise floor (docs/design.md §1).

For a batch of ``n`` generated (standardised) samples ``y_j = G_θ(u_j)``:

``L(θ) = ‖z_X − ẑ‖²`` with ``ẑ = (1/n) Σ_j Φ(y_j)``.

Because features have unit norm, ``E‖z_X − ẑ‖² = ‖z_X − z_G‖² + (1 − ‖z_G‖²)/n``:
the second term is noise, the *minibatch floor*. :func:`minibatch_floor`
estimates it without bias from the batch itself, using
``E‖ẑ‖² = ‖z_G‖² + (1 − ‖z_G‖²)/n``, i.e. ``‖z_G‖² ≈ (n‖ẑ‖² − 1)/(n − 1)``.

Example
-------
>>> import torch
>>> from sketch_store.spec import SketchSpec
>>> from sketch_store.torch_features import TorchFeatureMap
>>> fmap = TorchFeatureMap(SketchSpec.create(d=2, m=64, law="gaussian", seed=0))
>>> y = torch.randn(500, 2)
>>> z = fmap.batch_sketch(torch.randn(100_000, 2))
>>> out = sketch_loss(fmap, z, y)
>>> bool(out.loss < 5 * out.floor)   # same law: the loss is mostly noise
True
"""

from __future__ import annotations

import dataclasses

import torch

from sketch_store.torch_features import TorchFeatureMap


@dataclasses.dataclass
class LossValue:
    """A loss evaluation.

    ``objective`` is the differentiable quantity to minimise (the loss, or its
    frequency-weighted form while smoothing); ``loss`` is always the plain
    ``‖z_X − ẑ‖²`` and ``floor`` its minibatch floor.
    """

    objective: torch.Tensor
    loss: float
    floor: float

    @property
    def corrected(self) -> float:
        """``‖z_X − ẑ‖² − floor``: an unbiased estimate of ``‖z_X − z_G‖²``."""
        return self.loss - self.floor

    @property
    def unsquared(self) -> float:
        """``‖z_X − ẑ‖``, the form the paper logged."""
        return max(self.loss, 0.0) ** 0.5


def minibatch_floor(z_batch: torch.Tensor, n: int) -> float:
    """``(1 − ‖z_G‖²)/n`` with ``‖z_G‖²`` estimated without bias from the batch sketch."""
    if n < 2:
        return 0.0
    sq = float(torch.sum(z_batch.detach() ** 2))
    zg2 = min(max((n * sq - 1.0) / (n - 1.0), 0.0), 1.0)
    return (1.0 - zg2) / n


def smoothing_weights(fmap: TorchFeatureMap, tau: float) -> torch.Tensor:
    """Per-entry weights ``w_k = exp(−τ² ‖ω_k‖² / 2)`` for the cos and sin entries (length 2m).

    ``Σ_k w_k |z_X(ω_k) − ẑ(ω_k)|²`` is the sketch distance between both
    distributions blurred by a Gaussian of width τ: far-apart mass still
    feels a gradient, which keeps a cold start from dropping modes.
    """
    w = torch.exp(-0.5 * (tau * fmap.radii) ** 2)
    return torch.cat([w, w])


def sketch_loss(
    fmap: TorchFeatureMap, z_data: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
) -> LossValue:
    """``‖z_X − (1/n) Σ_j Φ(y_j)‖²`` for standardised samples ``y`` (n, d).

    With ``weights``, the objective is ``Σ_k w_k (z_X − ẑ)_k²`` (see
    :func:`smoothing_weights`); the reported loss stays unweighted.
    """
    z_batch = fmap.batch_sketch(y)
    sq = (z_data - z_batch) ** 2
    loss = torch.sum(sq)
    objective = loss if weights is None else torch.sum(weights * sq)
    return LossValue(objective=objective, loss=float(loss.detach()), floor=minibatch_floor(z_batch, y.shape[0]))
