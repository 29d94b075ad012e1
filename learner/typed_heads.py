"""Output heads of a generator of typed records, and drawing records from them (docs/design.md §1, "Typed outputs").

The MLP's last layer gives ``D`` raw coordinates ``h``, laid out as the spec's
:class:`~sketch_store.typed_encoding.Encoder` lays out a record. :class:`TypedHeads` maps each field's block so
that samples live where encoded records live (``c`` the category scale, ``T = 1``):

* **category** (K slots, plus the null slot when nullable): ``c · softmax(h / T)``, a point of the scaled
  simplex whose expectation over the latents is the one-hot mean the sketch sees;
* **bool**: ``(c/√2) · tanh(h)``, inside ``(−c/√2, c/√2)``;
* the **null indicator** of a numeric or bool field: ``m · sigmoid(h)`` with ``m`` the field's null mark;
* **numeric** coordinates: the identity.

The heads have no parameters: they are a pure function of the encoder, so a checkpoint rebuilds them from the
encoding in its metadata. :func:`sample_typed_rows` turns head outputs into encoded records by *sampling* each
block (a category from its softmax probabilities, a bool from ``(tanh + 1)/2``, a null from its sigmoid), not by
arg-max, which would never draw a minority category; :meth:`Encoder.decode_many` then reads the records exactly.

Example
-------
>>> import numpy as np, torch
>>> from sketch_store.schema import Field, Schema
>>> from sketch_store.typed_encoding import Encoder, EncodingStats
>>> enc = Encoder(Schema((Field("x", "float", nullable=True), Field("cut", "category", ("a", "b", "c")))),
...               EncodingStats({"x": (0.0, 1.0)}))
>>> heads = TypedHeads(enc)
>>> y = heads(torch.zeros(2, enc.dim))
>>> [round(v, 3) for v in y[0].tolist()]  # x, x=null at m/2, then c/3 in each of the three slots
[0.0, 0.477, 0.225, 0.225, 0.225]
>>> rows = sample_typed_rows(enc, y.numpy().astype(np.float64), np.random.default_rng(0))
>>> sorted(enc.decode_many(rows)[0])
['cut', 'x']
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sketch_store.errors import DataError
from sketch_store.typed_encoding import Encoder

#: Softmax temperature of a category head (fixed: the sketch only sees the mean embedding).
TEMPERATURE = 1.0


class TypedHeads(torch.nn.Module):
    """Per-block output maps of an :class:`Encoder`'s layout (formulas in the module docstring); no parameters."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.category_scale = encoder.stats.category_scale
        self.bool_value = self.category_scale / math.sqrt(2.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` (N, D) raw coordinates → (N, D) coordinates in the encoded ranges, block by block."""
        if h.shape[-1] != self.encoder.dim:
            raise DataError(f"typed heads expect {self.encoder.dim} coordinates, got {h.shape[-1]}")
        pieces: list[torch.Tensor] = []
        for block in self.encoder.blocks:
            part = h[:, block.start: block.start + block.width]
            if block.slots:
                pieces.append(self.category_scale * torch.softmax(part / TEMPERATURE, dim=1))
                continue
            value = part[:, :1]
            pieces.append(self.bool_value * torch.tanh(value) if block.field.type == "bool" else value)
            if block.field.nullable:
                pieces.append(block.null_mark * torch.sigmoid(part[:, 1:2]))
        return torch.cat(pieces, dim=1)


def typed_heads(encoder: Encoder | None) -> TypedHeads | None:
    """The heads of a typed spec's encoder; None for a numeric spec (its generator keeps a linear output)."""
    return None if encoder is None else TypedHeads(encoder)


def _draw_slot(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One slot index per row, drawn with the row's (clipped, renormalised) probabilities."""
    p = np.clip(probs, 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    p = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), p.shape[1] - 1)


def sample_typed_rows(encoder: Encoder, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Encoded records drawn from head outputs ``y`` (N, D): each category, bool and null sampled, numbers kept.

    Category: slot ``j`` with probability ``y_j / c``, written ``c·e_j``; bool: true with probability
    ``(y/(c/√2) + 1)/2``, written ``±c/√2``; a null indicator: null with probability ``y/m``, written ``m`` (and the
    value coordinate 0, as :meth:`Encoder.encode` writes a null). Probabilities are clipped to [0, 1], so rows
    that did not come through :class:`TypedHeads` are drawn from too.
    """
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != encoder.dim:
        raise DataError(f"expected rows of dimension {encoder.dim}, got an array of shape {arr.shape}")
    c = encoder.stats.category_scale
    out = arr.copy()
    rows = np.arange(arr.shape[0])
    for block in encoder.blocks:
        span = slice(block.start, block.start + block.width)
        if block.slots:
            slot = _draw_slot(arr[:, span] / c, rng)
            out[:, span] = 0.0
            out[rows, block.start + slot] = c
            continue
        if block.field.type == "bool":
            true = rng.random(arr.shape[0]) < np.clip((arr[:, block.start] / (c / math.sqrt(2.0)) + 1) / 2, 0, 1)
            out[:, block.start] = np.where(true, c / math.sqrt(2.0), -c / math.sqrt(2.0))
        if block.field.nullable:
            null = rng.random(arr.shape[0]) < np.clip(arr[:, block.indicator] / block.null_mark, 0, 1)
            out[:, block.indicator] = np.where(null, block.null_mark, 0.0)
            out[null, block.start] = 0.0
    return out


def sample_rng(seed: int | None) -> np.random.Generator:
    """The numpy RNG of the discrete draws of :func:`sample_typed_rows` (a stream apart from the latents' seed)."""
    return np.random.default_rng(None if seed is None else [int(seed) & (2**64 - 1), 0x7E1])
