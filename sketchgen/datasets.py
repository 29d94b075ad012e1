"""The paper's three synthetic 2-D datasets (docs/results.md), as in the authors' ESANN demo.

Each generator returns an (n, 2) float64 array. ``normalize=True`` divides by
``max‖x‖`` of the drawn sample, as the authors did, so points lie in the unit
ball; ``scale`` lets a stream keep one fixed normalisation across batches.

Example
-------
>>> x = make_dataset("spiral", 1000, seed=0)
>>> x.shape, bool(abs(x).max() <= 1.0)
((1000, 2), True)
"""

from __future__ import annotations

import functools

import numpy as np

from sketch_store.errors import DataError

DATASETS = ("spiral", "gmm", "circle")


def spiral(n: int, rng: np.random.Generator) -> np.ndarray:
    """``t ~ U(0,1)``, ``r = 0.3 + 1.2 t + 0.01 ε``, ``θ = 2πt``, ``x = r (cos θ, sin θ)``."""
    t = rng.uniform(size=n)
    r = 0.3 + 1.2 * t + 0.01 * rng.standard_normal(n)
    theta = 2 * np.pi * t
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def gmm(n: int, rng: np.random.Generator, k: int = 5, d: int = 2, structure_seed: int = 0) -> np.ndarray:
    """K = 5 Gaussians: weights ∝ 1 + 3U, means ~ N(0, (10/√d)² I), cov ``0.1(1 + U(0,8)) diag(1 + U(0,3))``.

    The mixture itself (weights, means, covariances) is drawn from
    ``structure_seed`` so that every batch of a stream comes from the same law.
    """
    srng = np.random.default_rng(structure_seed)
    weights = 1.0 + 3.0 * srng.uniform(size=k)
    weights /= weights.sum()
    means = srng.normal(scale=10.0 / np.sqrt(d), size=(k, d))
    variances = 0.1 * (1.0 + 8.0 * srng.uniform(size=(k, 1))) * (1.0 + 3.0 * srng.uniform(size=(k, d)))
    labels = rng.choice(k, size=n, p=weights)
    return means[labels] + np.sqrt(variances[labels]) * rng.standard_normal((n, d))


def circle(n: int, rng: np.random.Generator, structure_seed: int = 0) -> np.ndarray:
    """Radius ``R0 = 1 + 3 ε0`` drawn once (from ``structure_seed``), ``r = R0 + 0.08 ε``, ``θ ~ U(0, 2π)``."""
    r0 = 1.0 + 3.0 * abs(np.random.default_rng(structure_seed).standard_normal())
    r = r0 + 0.08 * rng.standard_normal(n)
    theta = rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


@functools.cache
def reference_scale(name: str) -> float:
    """``max‖x‖`` over a large reference sample of dataset ``name`` (fixed seed)."""
    x = _draw(name, 200_000, np.random.default_rng(12345))
    return float(np.max(np.linalg.norm(x, axis=1)))


def _draw(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "spiral":
        return spiral(n, rng)
    if name == "gmm":
        return gmm(n, rng)
    if name == "circle":
        return circle(n, rng)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def make_dataset(name: str, n: int, seed: int | None = None, normalize: bool = True) -> np.ndarray:
    """Draw ``n`` points of dataset ``name`` scaled into the unit ball by a fixed ``max‖x‖``.

    The scale is that of a large reference sample, so two calls with different
    seeds (e.g. training data and fresh evaluation samples) share units.
    """
    x = _draw(name, int(n), np.random.default_rng(seed))
    return x / reference_scale(name) if normalize else x
