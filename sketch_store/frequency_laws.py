"""Frequency laws Λ for random Fourier features (docs/design.md §1).

Every law draws frequencies as ``ω = R · D φ`` where ``φ`` is uniform on the
unit sphere of ``R^d``, ``R ≥ 0`` is a radius drawn from the law, and ``D`` maps
the unit scale to the data's scale: ``D = diag(1/σ)`` for a scalar or
per-dimension σ. The radius laws are those of Keriven et al. (2016):

* ``gaussian``: ``R ~ χ_d`` so that ``ω ~ N(0, σ⁻² I)`` (Gaussian kernel of
  bandwidth σ);
* ``folded-gaussian``: ``R ~ |N(0, 1)|`` (the law used by the paper);
* ``adapted-radius``: ``p(R) ∝ √(R² + R⁴/4) · exp(−R²/2)`` on ``[0, 5]``,
  sampled by inverse CDF on a fine grid.

A *multi-scale* Ω (:func:`draw_multiscale_frequencies`) gives column ``j`` the
scale ``σ_{k(j)}`` of a ladder ``σ_1 > … > σ_S`` (``k(j) = j mod S``), so the
kernel is the equal mixture ``κ(δ) = (1/S) Σ_k κ_law(δ/σ_k)`` (docs/design.md §1).

Example
-------
>>> import numpy as np
>>> omega = draw_frequencies("adapted-radius", d=2, m=4, sigma=0.5, seed=0)
>>> omega.shape
(2, 4)
>>> bool(np.all(np.isfinite(omega)))
True
"""

from __future__ import annotations

import numpy as np

from sketch_store.errors import SpecError

LAWS = ("gaussian", "folded-gaussian", "adapted-radius")

_ADAPTED_RADIUS_MAX = 5.0
_ADAPTED_RADIUS_GRID = 100_001


def adapted_radius_density(r: np.ndarray) -> np.ndarray:
    """Unnormalised adapted-radius density ``√(R² + R⁴/4) · exp(−R²/2)``."""
    r = np.asarray(r, dtype=np.float64)
    return np.sqrt(r**2 + r**4 / 4.0) * np.exp(-(r**2) / 2.0)


def _adapted_radius_cdf() -> tuple[np.ndarray, np.ndarray]:
    """Grid and normalised CDF of the adapted-radius law (trapezoid rule)."""
    grid = np.linspace(0.0, _ADAPTED_RADIUS_MAX, _ADAPTED_RADIUS_GRID)
    pdf = adapted_radius_density(grid)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2.0 * np.diff(grid))])
    return grid, cdf / cdf[-1]


def draw_radii(law: str, d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``m`` radii ``R`` from the radius law of ``law`` (see module docstring)."""
    if law == "gaussian":
        return np.sqrt(rng.chisquare(d, size=m))
    if law == "folded-gaussian":
        return np.abs(rng.standard_normal(m))
    if law == "adapted-radius":
        grid, cdf = _adapted_radius_cdf()
        return np.interp(rng.uniform(size=m), cdf, grid)
    raise SpecError(f"unknown frequency law {law!r}; expected one of {', '.join(LAWS)}")


def draw_directions(d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``m`` directions uniform on the unit sphere of ``R^d``, as a (d, m) array."""
    phi = rng.standard_normal((d, m))
    norms = np.linalg.norm(phi, axis=0)
    norms[norms == 0.0] = 1.0
    return phi / norms


def draw_frequencies(
    law: str,
    d: int,
    m: int,
    sigma: float | np.ndarray = 1.0,
    seed: int | None = None,
) -> np.ndarray:
    """Draw the (d, m) frequency matrix ``Ω`` with columns ``ω_j = R_j · diag(1/σ) · φ_j``.

    ``sigma`` is a positive scalar or a length-``d`` vector of per-dimension
    scales. The same ``(law, d, m, sigma, seed)`` always gives the same ``Ω``.
    """
    if law not in LAWS:
        raise SpecError(f"unknown frequency law {law!r}; expected one of {', '.join(LAWS)}")
    if int(d) < 1 or int(m) < 1:
        raise SpecError(f"need d >= 1 and m >= 1, got d={d}, m={m}")
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.shape not in ((), (int(d),)):
        raise SpecError(f"sigma must be a scalar or have length d={d}, got shape {sig.shape}")
    sig = np.broadcast_to(sig, (int(d),))
    if not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise SpecError(f"sigma must be positive and finite, got {sigma!r}")
    rng = np.random.default_rng(seed)
    radii = draw_radii(law, int(d), int(m), rng)
    phi = draw_directions(int(d), int(m), rng)
    return (phi * radii[None, :]) / sig[:, None]


def validate_scales(scales: object) -> np.ndarray:
    """``scales`` as a 1-D float64 array of positive finite values, or :class:`SpecError`."""
    arr = np.asarray(scales, dtype=np.float64) if np.asarray(scales).dtype.kind in "fiu" else None
    if arr is None or arr.ndim != 1 or arr.size < 1:
        raise SpecError(f"scales must be a non-empty 1-D array of numbers, got {scales!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise SpecError(f"scales must be positive and finite, got {arr.tolist()}")
    return arr


def scale_of_column(m: int, n_scales: int) -> np.ndarray:
    """The scale index ``k(j) = j mod S`` of each of the ``m`` columns: the scales share Ω equally."""
    return np.arange(int(m)) % int(n_scales)


def draw_multiscale_frequencies(
    law: str, d: int, m: int, scales: np.ndarray, seed: int | None = None
) -> np.ndarray:
    """The (d, m) matrix with columns ``ω_j = R_j φ_j / σ_{k(j)}`` (see module docstring).

    ``scales`` is the ladder ``σ_1, …, σ_S`` (standardised units); ``S = 1`` is the
    single-scale :func:`draw_frequencies` at ``σ_1``.

    >>> om = draw_multiscale_frequencies("adapted-radius", 2, 6, np.array([1.0, 0.1]), seed=0)
    >>> bool(np.median(np.linalg.norm(om[:, 1::2], axis=0)) > 5 * np.median(np.linalg.norm(om[:, ::2], axis=0)))
    True
    """
    ladder = validate_scales(scales)
    unit = draw_frequencies(law, d, m, 1.0, seed)
    return unit / ladder[scale_of_column(m, ladder.size)][None, :]
