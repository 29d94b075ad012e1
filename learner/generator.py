"""The generator network ``G_θ : R^k → R^d`` (docs/design.md §1): an MLP fed with ``u ~ N(0, I_k)``.

The generator produces *standardised* data ``y = s(x)``; the spec's
standardisation is undone when samples leave the service. For a spec of typed records the
last layer's coordinates go through :class:`~learner.typed_heads.TypedHeads` (design §1,
"Typed outputs"); a numeric spec's generator has no heads (a linear output).

Example
-------
>>> import torch
>>> config = GeneratorConfig(latent=4, hidden=(16, 16), output=2)
>>> g = Generator(config)
>>> g.sample(5, generator=torch.Generator().manual_seed(0)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from sketch_store.errors import SketchgenError

if TYPE_CHECKING:
    from learner.typed_heads import TypedHeads


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the MLP: latent size ``k``, hidden widths, LeakyReLU slope, output ``d``."""

    latent: int = 10
    hidden: tuple[int, ...] = (128, 128, 128)
    output: int = 2
    slope: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if int(self.latent) < 1 or int(self.output) < 1:
            raise SketchgenError(f"latent and output sizes must be >= 1, got {self.latent}, {self.output}")
        if any(h < 1 for h in self.hidden):
            raise SketchgenError(f"hidden widths must be >= 1, got {self.hidden}")
        if not 0.0 <= float(self.slope) < 1.0:
            raise SketchgenError(f"LeakyReLU slope must be in [0, 1), got {self.slope}")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"latent": self.latent, "hidden": list(self.hidden), "output": self.output, "slope": self.slope}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`, validating the values."""
        try:
            return cls(
                latent=int(data["latent"]),  # type: ignore[arg-type]
                hidden=tuple(int(h) for h in data["hidden"]),  # type: ignore[union-attr]
                output=int(data["output"]),  # type: ignore[arg-type]
                slope=float(data["slope"]),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SketchgenError(f"invalid generator architecture {data!r}: {exc}") from None


def parse_hidden(text: str) -> tuple[int, ...]:
    """Parse ``"128,128,128"`` into widths; ``""`` means no hidden layer."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SketchgenError(f"--hidden must be comma-separated integers, got {text!r}") from None


class Generator(torch.nn.Module):
    """MLP ``Linear → LeakyReLU → … → Linear`` from latent ``u`` to standardised data, then the typed heads if any.

    ``heads`` (no parameters, so the state dict is the MLP's alone) maps the output blocks of a typed spec.
    """

    def __init__(self, config: GeneratorConfig, heads: TypedHeads | None = None) -> None:
        super().__init__()
        self.config = config
        layers: list[torch.nn.Module] = []
        width = config.latent
        for h in config.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.LeakyReLU(config.slope)]
            width = h
        layers.append(torch.nn.Linear(width, config.output))
        self.net = torch.nn.Sequential(*layers)
        self.heads = heads

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``G_θ(u)``: the MLP, then the heads (when typed)."""
        h = self.net(u)
        return h if self.heads is None else self.heads(h)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` standardised samples ``G_θ(u)``, ``u ~ N(0, I_k)``, without gradients."""
        device = next(self.parameters()).device
        with torch.no_grad():
            u = torch.randn(n, self.config.latent, generator=generator, device=device)
            return self(u)
