"""Designing a sketch spec from a pilot sample of the data.

The pilot fixes the per-dimension standardisation ``s(x) = (x − mean)/std``
and, unless σ is given, reads the kernel off the standardised pilot: by default a
ladder of scales (:func:`sketch_store.scale.scale_ladder`), or with ``kernel="single"``
one σ from :func:`sketch_store.scale.estimate_scale` (docs/design.md §1). The spec
records which scale method was used.

Example
-------
>>> import numpy as np
>>> x = np.random.default_rng(0).normal(loc=5.0, scale=2.0, size=(1000, 3))
>>> spec = spec_from_pilot(x, m=64, seed=0)
>>> spec.d, spec.scale_method, bool(np.allclose(spec.mean, 5.0, atol=0.5))
(3, 'multiscale', True)
>>> spec_from_pilot(x, m=64, seed=0, kernel="single").scale_method
'sketch'

Typed records (docs/design.md §1, "Typed records") are encoded first and the kernel designed on the encoding:

>>> from sketch_store.schema import Field, Schema
>>> schema = Schema((Field("carat", "float"), Field("cut", "category", ("Fair", "Good"))))
>>> records = [{"carat": 0.3 + i / 100, "cut": "Fair" if i % 3 else "Good"} for i in range(200)]
>>> typed = typed_spec_from_pilot(records, schema, m=64)
>>> typed.d, typed.encoder.column_names, float(typed.std.max())
(3, ('carat', 'cut=Fair', 'cut=Good'), 1.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from sketch_store.errors import DataError
from sketch_store.features import validate_rows
from sketch_store.scale import estimate_scale, pilot_sample, scale_ladder
from sketch_store.schema import Schema
from sketch_store.spec import SketchSpec
from sketch_store.typed_encoding import Encoder, EncodingStats, UnknownPolicy, fit_encoding_stats

#: Defaults of ``sketchgen sketch`` / ``sketchgen create`` (see docs/beyond_paper.md for the experiment behind them).
DEFAULT_M = 1000
#: Frequencies for data of more than :data:`LOW_DIM` dimensions (see :func:`default_m`).
DEFAULT_M_HIGH_DIM = 3000
LOW_DIM = 4
DEFAULT_LAW = "adapted-radius"
PILOT_ROWS = 5000
#: Kernels ``spec_from_pilot`` can design: one σ, or a ladder of scales (docs/design.md §1).
KERNELS = ("single", "multiscale")
#: The kernel designed when none is named: measured in docs/bench/quality.md.
DEFAULT_KERNEL = "multiscale"


def default_m(d: int) -> int:
    """The default number of frequencies for ``d``-dimensional data: 1000 up to d = 4, 3000 above.

    From ``bench/sketch_size.py`` and ``bench/digits.py`` (docs/beyond_paper.md): on the 2-D
    datasets quality levels off by m = 1000, while a 10-d Gaussian mixture (MMD ratio 6.3 → 4.0)
    and the 64-d digits (3.8 → 1.8) need m = 3000. Dimensions 5–9 were not measured; they get
    the larger sketch, which costs speed (≈ 1.5–2× slower training steps), not accuracy.

    >>> default_m(2), default_m(10)
    (1000, 3000)
    """
    if d < 1:
        raise ValueError(f"dimension must be >= 1, got {d}")
    return DEFAULT_M if d <= LOW_DIM else DEFAULT_M_HIGH_DIM


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of ``x``; a constant column gets std 1."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[~(std > 0)] = 1.0
    return mean, std


def spec_from_pilot(
    x: np.ndarray,
    m: int | None = None,
    law: str = DEFAULT_LAW,
    sigma: float | None = None,
    seed: int | None = 0,
    estimator: str = "sketch",
    standardize: bool = True,
    name: str = "",
    kernel: str = DEFAULT_KERNEL,
) -> SketchSpec:
    """A spec whose standardisation and σ come from the pilot rows ``x`` (see module docstring).

    ``m`` defaults to :func:`default_m` of the data's dimension; ``estimator`` is the single kernel's σ estimator.
    """
    rows = validate_rows(x, np.asarray(x).shape[-1])
    d = rows.shape[1]
    m = default_m(d) if m is None else m
    mean, std = standardization(rows) if standardize else (np.zeros(d), np.ones(d))
    if kernel not in KERNELS:
        raise DataError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    scales = None
    if sigma is None:
        pilot = (pilot_sample(rows, PILOT_ROWS, seed) - mean) / std
        if kernel == "multiscale":
            scales = scale_ladder(pilot, law, seed=seed)
            sigma, method = float(scales[0]), "multiscale"
        else:
            sigma, method = estimate_scale(pilot, estimator, seed=seed), estimator
    else:
        method = "given"
    return SketchSpec.create(
        d=d, m=m, law=law, sigma=sigma, mean=mean, std=std, seed=seed, scale_method=method, name=name,
        scales=scales,
    )


def typed_spec_from_pilot(
    records: Sequence[Mapping[str, object]],
    schema: Schema,
    m: int | None = None,
    law: str = DEFAULT_LAW,
    seed: int | None = 0,
    name: str = "",
    kernel: str = DEFAULT_KERNEL,
    sigma: float | None = None,
    unknown: UnknownPolicy = "reject",
    keep_ranges: bool = False,
) -> SketchSpec:
    """A typed spec from pilot ``records`` (typed values, e.g. :func:`parse_text_record`'s output) of ``schema``.

    Fits the encoding's means and stds on the pilot (:func:`fit_encoding_stats`), encodes it to ``u ∈ R^D``
    and designs Ω on ``u`` with :func:`spec_from_pilot` without standardising again (docs/design.md §1, "Typed
    records"), then attaches schema and encoding. A schema of plain float fields gives today's numeric spec
    (the records' vectors in schema order, standardised, no schema stored). ``keep_ranges`` makes decoding clip
    each numeric field to its pilot range (:func:`fit_encoding_stats`). A bad record raises
    :class:`~sketch_store.typed_encoding.RecordError` naming it.
    """
    if schema.is_numeric:
        raw = Encoder(schema, EncodingStats({n: (0.0, 1.0) for n in schema.names})).encode_many(records)
        return spec_from_pilot(raw, m=m, law=law, sigma=sigma, seed=seed, name=name, kernel=kernel)
    stats = fit_encoding_stats(schema, records, unknown=unknown, keep_ranges=keep_ranges)
    encoded = Encoder(schema, stats).encode_many(records)
    spec = spec_from_pilot(encoded, m=m, law=law, sigma=sigma, seed=seed, standardize=False, name=name,
                           kernel=kernel)
    return dataclasses.replace(spec, schema=schema, encoding=stats)
