"""Estimating the scale σ of the frequency law from a small pilot sample (docs/design.md §1).

Two estimators, both on data already standardised:

* :func:`median_heuristic`: σ = median pairwise distance of the pilot rows.
  Simple and robust, but blind to fine structure, so it tends to be too large.
* :func:`sketch_scale`: the estimator of Keriven et al. (2016). Take a small
  sketch ``z(ω) = (1/n) Σ_i exp(i ωᵀx_i)`` of the pilot rows with frequencies
  drawn at the current scale, sort the frequencies by radius ``‖ω‖``, keep the
  largest ``|z(ω)|`` in each of ``n_blocks`` blocks, and fit
  ``|z(ω)| ≈ exp(−σ² ‖ω‖² / 2)`` to those block maxima by least squares.
  Repeat a few times, drawing the next frequencies at the new σ.

:func:`estimate_scale` picks one by name and never returns less than a small
fraction of the median heuristic (a floor that guards against a degenerate fit).

Example
-------
>>> import numpy as np
>>> x = np.random.default_rng(0).normal(scale=0.1, size=(2000, 2))
>>> round(sketch_scale(x, seed=0), 1)
0.1
"""

from __future__ import annotations

import numpy as np

from sketch_store.errors import DataError
from sketch_store.features import validate_rows
from sketch_store.frequency_laws import draw_directions, draw_frequencies, draw_radii

SCALE_ESTIMATORS = ("sketch", "median")
#: The sketch-based σ is never taken below this fraction of the median heuristic.
MEDIAN_FLOOR_FRACTION = 1e-3


def pilot_sample(x: np.ndarray, n: int, seed: int | None = 0) -> np.ndarray:
    """At most ``n`` rows of ``x`` drawn without replacement."""
    if x.shape[0] <= n:
        return x
    idx = np.random.default_rng(seed).choice(x.shape[0], size=n, replace=False)
    return x[np.sort(idx)]


def median_heuristic(x: np.ndarray, max_rows: int = 2000, seed: int | None = 0) -> float:
    """Median Euclidean distance between distinct pairs of (at most ``max_rows``) rows."""
    rows = pilot_sample(validate_rows(x, np.asarray(x).shape[-1]), max_rows, seed)
    if rows.shape[0] < 2:
        raise DataError("need at least 2 rows to estimate a scale")
    sq = np.sum(rows**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T, 0.0)
    iu = np.triu_indices(rows.shape[0], k=1)
    med = float(np.sqrt(np.median(d2[iu])))
    if not med > 0:
        raise DataError("all pilot rows are identical: cannot estimate a scale")
    return med


def _fit_envelope(radii: np.ndarray, moduli: np.ndarray) -> float:
    """Least-squares ``s = σ²`` minimising ``Σ (exp(−s R²/2) − |z|)²`` (log-grid then refinement)."""
    r2 = radii**2 / 2.0

    def cost(log_s: np.ndarray) -> np.ndarray:
        s = np.exp(log_s)[:, None]
        return np.sum((np.exp(-s * r2[None, :]) - moduli[None, :]) ** 2, axis=1)

    grid = np.linspace(np.log(1e-12), np.log(1e12), 481)
    best = grid[int(np.argmin(cost(grid)))]
    step = grid[1] - grid[0]
    for _ in range(4):
        fine = np.linspace(best - step, best + step, 41)
        best = fine[int(np.argmin(cost(fine)))]
        step = fine[1] - fine[0]
    return float(np.exp(best))


def sketch_scale(
    x: np.ndarray,
    m0: int = 500,
    n_blocks: int = 30,
    iterations: int = 5,
    law: str = "adapted-radius",
    max_rows: int = 5000,
    seed: int | None = 0,
    sigma0: float | None = None,
) -> float:
    """Keriven et al.'s sketch-based estimate of σ (see module docstring)."""
    rows = np.asarray(x, dtype=np.float64)
    rows = pilot_sample(validate_rows(rows, rows.shape[-1]), max_rows, seed)
    sigma = float(sigma0) if sigma0 else median_heuristic(rows, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        omega = draw_frequencies(law, rows.shape[1], m0, sigma, int(rng.integers(2**31)))
        phases = rows @ omega
        moduli = np.hypot(np.cos(phases).mean(axis=0), np.sin(phases).mean(axis=0))
        radii = np.linalg.norm(omega, axis=0)
        order = np.argsort(radii)
        keep_r, keep_z = [], []
        for block in np.array_split(order, n_blocks):
            if block.size:
                j = block[int(np.argmax(moduli[block]))]
                keep_r.append(radii[j])
                keep_z.append(moduli[j])
        sigma = float(np.sqrt(_fit_envelope(np.array(keep_r), np.array(keep_z))))
    return sigma


def estimate_scale(x: np.ndarray, method: str = "sketch", seed: int | None = 0) -> float:
    """σ by ``method`` (``"sketch"`` or ``"median"``) on standardised pilot rows ``x``."""
    if method not in SCALE_ESTIMATORS:
        raise DataError(f"unknown scale estimator {method!r}; expected one of {', '.join(SCALE_ESTIMATORS)}")
    med = median_heuristic(x, seed=seed)
    if method == "median":
        return med
    sigma = sketch_scale(x, seed=seed, sigma0=med)
    if not np.isfinite(sigma):
        return med
    return max(sigma, MEDIAN_FLOOR_FRACTION * med)


# -- the multi-scale ladder (docs/design.md §1, "A kernel from the data") ----------------------------

#: Radii probed on the pilot's characteristic function: a √2-spaced grid, standardised units⁻¹.
PROBE_RADII = np.geomspace(0.25, 1024.0, 25)
#: A radius is *resolved* while the pilot's mean ``|z(ω)|²`` there exceeds this many times its noise level 1/n.
RESOLVED_ENERGY = 3.0
#: A direction is informative at radius R when ``n |z(Rφ)|²`` exceeds this (p ≈ 5·10⁻⁵ under pure noise) …
INFORMATIVE_POWER = 10.0
#: … and the finest scale is where at least this fraction of random directions still is.
INFORMATIVE_FRACTION = 0.5
#: The coarsest scale is where the mean ``|z(Rφ)|²`` has fallen to this (the half-power point).
HALF_POWER = 0.5
#: Directions averaged at each probed radius.
PROBE_DIRECTIONS = 256
#: Adjacent scales of the ladder differ by this factor (one octave).
LADDER_RATIO = 2.0
#: At most this many scales (10 octaves): discrete data resolve every radius.
MAX_SCALES = 11


def characteristic_power(x: np.ndarray, radii: np.ndarray = PROBE_RADII, directions: int = PROBE_DIRECTIONS,
                         seed: int | None = 0) -> np.ndarray:
    """``n |z(R_i φ_j)|²`` for each probed radius ``R_i`` (rows) and random unit direction ``φ_j`` (columns).

    ``z(ω) = (1/n) Σ_k exp(i ωᵀx_k)`` is the pilot's empirical characteristic function; under pure
    noise (no structure at scale 1/R) ``n|z(ω)|²`` is ≈ Exp(1), of mean 1.
    """
    rows = np.asarray(x, dtype=np.float64)
    n, d = rows.shape
    rng = np.random.default_rng(seed)
    power = np.empty((len(radii), directions))
    for i, r in enumerate(radii):
        phases = rows @ (draw_directions(d, directions, rng) * float(r))
        power[i] = n * (np.cos(phases).mean(axis=0) ** 2 + np.sin(phases).mean(axis=0) ** 2)
    return power


def characteristic_energy(x: np.ndarray, radii: np.ndarray = PROBE_RADII, directions: int = PROBE_DIRECTIONS,
                          seed: int | None = 0) -> np.ndarray:
    """Excess energy of the pilot's empirical characteristic function at each radius, in noise units.

    ``e(R) = mean over random unit φ of n|z(Rφ)|², minus 1`` (:func:`characteristic_power`): ≈ 0
    where the data have no structure at scale 1/R, large where they do.
    """
    return characteristic_power(x, radii, directions, seed).mean(axis=1) - 1.0


def finest_resolved_radius(x: np.ndarray, threshold: float = RESOLVED_ENERGY, seed: int | None = 0) -> float:
    """The largest probed radius ``R`` with ``e(R) ≥ threshold`` (:func:`characteristic_energy`)."""
    energy = characteristic_energy(x, seed=seed)
    resolved = np.nonzero(energy >= threshold)[0]
    return float(PROBE_RADII[resolved[-1]] if resolved.size else PROBE_RADII[0])


def ladder_radii(power: np.ndarray, n: int, radii: np.ndarray = PROBE_RADII) -> tuple[float, float]:
    """(R_coarse, R_fine) read off :func:`characteristic_power` of an ``n``-row pilot.

    ``R_coarse``: the first radius where the mean ``|z|²`` has fallen to :data:`HALF_POWER` (below it
    every frequency sees the data's overall spread only). ``R_fine``: the largest radius where at
    least :data:`INFORMATIVE_FRACTION` of the directions have ``n|z|² > INFORMATIVE_POWER`` (beyond
    it most frequencies drawn would be noise: in many dimensions structure seen along a few
    directions is not enough).
    """
    mean_power = power.mean(axis=1) / n
    below = np.nonzero(mean_power <= HALF_POWER)[0]
    coarse = float(radii[below[0]] if below.size else radii[-1])
    informative = (power > INFORMATIVE_POWER).mean(axis=1) >= INFORMATIVE_FRACTION
    kept = np.nonzero(informative)[0]
    fine = float(radii[kept[-1]] if kept.size else radii[0])
    return coarse, max(fine, coarse)


def scale_ladder(x: np.ndarray, law: str = "adapted-radius", seed: int | None = 0) -> np.ndarray:
    """Scales ``σ_1 > … > σ_S`` for a multi-scale frequency law, from standardised pilot rows ``x``.

    With ``R̃`` the median radius of ``law`` at unit scale and ``(R_coarse, R_fine)`` from
    :func:`ladder_radii`, the ladder runs from ``σ_1 = R̃ / R_coarse`` (the data's global shape: a
    typical frequency of the coarsest scale sits where the characteristic function is at half
    power) down by octaves to ``σ_S ≈ R̃ / R_fine`` (the finest structure most directions still
    see above the noise), at most :data:`MAX_SCALES` scales.

    >>> rng = np.random.default_rng(0)
    >>> blobs = np.concatenate([rng.normal(-3, 0.05, (2000, 1)), rng.normal(3, 0.05, (2000, 1))])
    >>> ladder = scale_ladder((blobs - blobs.mean()) / blobs.std())
    >>> bool(ladder[0] > 1.0 and ladder[-1] < 0.1)
    True
    """
    rows = validate_rows(np.asarray(x, dtype=np.float64), np.asarray(x).shape[-1])
    if rows.shape[0] < 2:
        raise DataError("need at least 2 rows to estimate a scale")
    unit_radius = float(np.median(draw_radii(law, rows.shape[1], 20_000, np.random.default_rng(seed))))
    r_coarse, r_fine = ladder_radii(characteristic_power(rows, seed=seed), rows.shape[0])
    coarse = unit_radius / r_coarse
    count = min(MAX_SCALES, int(np.ceil(np.log(r_fine / r_coarse) / np.log(LADDER_RATIO) - 1e-9)) + 1)
    return coarse / LADDER_RATIO ** np.arange(count)
