"""Frequency laws: exact radius distributions (Kolmogorov–Smirnov), directions, scaling, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sketch_store.errors import SpecError
from sketch_store.frequency_laws import (
    LAWS,
    adapted_radius_density,
    draw_directions,
    draw_frequencies,
    draw_radii,
)
from sketch_store.spec import SketchSpec

M = 20_000
KS_CRITICAL = 1.95 / math.sqrt(M)  # α = 0.001, large-n asymptotic


def ks_statistic(samples: np.ndarray, cdf) -> float:
    """Two-sided one-sample Kolmogorov–Smirnov statistic ``sup |F_n − F|``."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    f = np.asarray(cdf(x), dtype=np.float64)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def radii_of(law: str, d: int, seed: int = 0) -> np.ndarray:
    omega = draw_frequencies(law, d=d, m=M, sigma=1.0, seed=seed)
    return np.linalg.norm(omega, axis=0)


# -- reference CDFs, written independently of the module --------------------

_erf = np.vectorize(math.erf)


def rayleigh_cdf(r: np.ndarray) -> np.ndarray:
    """χ_2 radius of a standard 2-D Gaussian."""
    return 1.0 - np.exp(-(r**2) / 2.0)


def folded_gaussian_cdf(r: np.ndarray) -> np.ndarray:
    """|N(0, 1)|."""
    return _erf(np.asarray(r) / math.sqrt(2.0))


def _density(r: np.ndarray) -> np.ndarray:
    return np.sqrt(r * r + r**4 / 4.0) * np.exp(-r * r / 2.0)


def _simpson_cdf(upper: float = 5.0, panels: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative composite-Simpson integral of the adapted-radius density on [0, upper], normalised."""
    grid = np.linspace(0.0, upper, 2 * panels + 1)
    f = _density(grid)
    h = grid[1] - grid[0]
    per_panel = h / 3.0 * (f[0:-1:2] + 4.0 * f[1::2] + f[2::2])
    cum = np.concatenate([[0.0], np.cumsum(per_panel)])
    return grid[::2], cum / cum[-1]


_ADAPTED_GRID, _ADAPTED_CDF = _simpson_cdf()


def adapted_radius_cdf(r: np.ndarray) -> np.ndarray:
    return np.interp(r, _ADAPTED_GRID, _ADAPTED_CDF)


def adapted_radius_cdf_closed_form(r: np.ndarray) -> np.ndarray:
    """With w = 2 + r²/2 the density becomes ∝ √w e^{−w}: F(r) ∝ γ(3/2, 2 + r²/2) − γ(3/2, 2)."""

    def lower_gamma_3_2(x: float) -> float:
        return math.sqrt(math.pi) / 2.0 * math.erf(math.sqrt(x)) - math.sqrt(x) * math.exp(-x)

    lo, hi = lower_gamma_3_2(2.0), lower_gamma_3_2(2.0 + 25.0 / 2.0)
    return np.array([(lower_gamma_3_2(2.0 + v * v / 2.0) - lo) / (hi - lo) for v in np.atleast_1d(r)])


# -- sanity of the references ---------------------------------------------------


def test_module_density_is_the_documented_formula():
    r = np.linspace(0, 5, 101)
    assert np.allclose(adapted_radius_density(r), np.sqrt(r**2 + r**4 / 4) * np.exp(-(r**2) / 2), rtol=1e-14)


def test_simpson_reference_matches_closed_form():
    r = np.linspace(0.0, 5.0, 57)
    assert np.max(np.abs(adapted_radius_cdf(r) - adapted_radius_cdf_closed_form(r))) < 1e-9


def test_ks_statistic_of_exact_uniform_quantiles_is_tiny():
    n = 1000
    u = (np.arange(n) + 0.5) / n
    assert ks_statistic(u, lambda x: x) == pytest.approx(0.5 / n)


# -- radius laws: goodness of fit -----------------------------------------------


def test_gaussian_law_radius_in_2d_is_rayleigh():
    assert ks_statistic(radii_of("gaussian", d=2), rayleigh_cdf) < KS_CRITICAL


def test_folded_gaussian_radius():
    assert ks_statistic(radii_of("folded-gaussian", d=3, seed=1), folded_gaussian_cdf) < KS_CRITICAL


def test_adapted_radius_law():
    radii = radii_of("adapted-radius", d=2, seed=2)
    assert radii.min() >= 0.0 and radii.max() <= 5.0 + 1e-12
    assert ks_statistic(radii, adapted_radius_cdf) < KS_CRITICAL


def test_adapted_radius_law_independent_of_dimension():
    radii = radii_of("adapted-radius", d=7, seed=3)
    assert ks_statistic(radii, adapted_radius_cdf) < KS_CRITICAL


def test_ks_has_power_against_wrong_law():
    folded = radii_of("folded-gaussian", d=2, seed=4)
    assert ks_statistic(folded, adapted_radius_cdf) > 5 * KS_CRITICAL
    gaussian = radii_of("gaussian", d=2, seed=5)
    assert ks_statistic(gaussian, folded_gaussian_cdf) > 5 * KS_CRITICAL
    adapted = radii_of("adapted-radius", d=2, seed=6)
    assert ks_statistic(adapted, rayleigh_cdf) > KS_CRITICAL


def test_gaussian_law_coordinates_are_normal_with_variance_sigma_minus_two():
    sigma = 0.5
    omega = draw_frequencies("gaussian", d=4, m=M, sigma=sigma, seed=7)
    var = omega.var(axis=1)
    assert np.allclose(var, sigma**-2, rtol=0.05)
    assert np.allclose(omega.mean(axis=1), 0.0, atol=5 * sigma**-1 / math.sqrt(M))
    # each coordinate ~ N(0, σ⁻²)
    for row in omega:
        assert ks_statistic(row * sigma, lambda x: 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))) < KS_CRITICAL


# -- directions ------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5, 64])
def test_directions_have_unit_norm(d):
    phi = draw_directions(d, 500, np.random.default_rng(d))
    assert phi.shape == (d, 500)
    assert np.allclose(np.linalg.norm(phi, axis=0), 1.0, rtol=0, atol=1e-12)


def test_directions_uniform_on_circle():
    phi = draw_directions(2, M, np.random.default_rng(8))
    angles = np.arctan2(phi[1], phi[0])
    assert ks_statistic(angles, lambda a: (a + math.pi) / (2 * math.pi)) < KS_CRITICAL


def test_directions_isotropic_in_3d():
    phi = draw_directions(3, M, np.random.default_rng(9))
    assert np.allclose(phi.mean(axis=1), 0.0, atol=0.03)
    assert np.allclose(phi @ phi.T / M, np.eye(3) / 3.0, atol=0.02)


@pytest.mark.parametrize("law", LAWS)
def test_frequency_is_radius_times_direction(law):
    omega = draw_frequencies(law, d=3, m=200, sigma=1.0, seed=11)
    rng = np.random.default_rng(11)
    radii = draw_radii(law, 3, 200, rng)
    phi = draw_directions(3, 200, rng)
    assert np.allclose(omega, phi * radii, rtol=1e-14, atol=0)


# -- scaling and seeding ---------------------------------------------------------


@pytest.mark.parametrize("law", LAWS)
def test_per_dimension_sigma_divides_rows(law):
    sigma = np.array([0.25, 1.0, 4.0])
    base = draw_frequencies(law, d=3, m=300, sigma=1.0, seed=12)
    scaled = draw_frequencies(law, d=3, m=300, sigma=sigma, seed=12)
    assert np.allclose(scaled, base / sigma[:, None], rtol=1e-14, atol=0)


@pytest.mark.parametrize("law", LAWS)
def test_scalar_sigma_scales_radii(law):
    base = draw_frequencies(law, d=2, m=300, sigma=1.0, seed=13)
    scaled = draw_frequencies(law, d=2, m=300, sigma=2.5, seed=13)
    assert np.allclose(scaled * 2.5, base, rtol=1e-14, atol=0)


@pytest.mark.parametrize("law", LAWS)
def test_same_seed_same_omega_different_seed_different(law):
    a = draw_frequencies(law, d=3, m=100, sigma=0.7, seed=42)
    b = draw_frequencies(law, d=3, m=100, sigma=0.7, seed=42)
    c = draw_frequencies(law, d=3, m=100, sigma=0.7, seed=43)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a))


def test_spec_create_uses_the_law_draw():
    spec = SketchSpec.create(d=2, m=50, law="folded-gaussian", sigma=0.3, seed=5)
    assert np.array_equal(spec.omega, draw_frequencies("folded-gaussian", 2, 50, 0.3, 5))


# -- errors ----------------------------------------------------------------------


def test_unknown_law():
    with pytest.raises(SpecError, match="unknown frequency law"):
        draw_frequencies("uniform", d=2, m=4)
    with pytest.raises(SpecError, match="unknown frequency law"):
        draw_radii("uniform", 2, 4, np.random.default_rng(0))


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf"), np.array([1.0, -1.0])])
def test_bad_sigma(sigma):
    with pytest.raises(SpecError, match="sigma"):
        draw_frequencies("gaussian", d=2, m=4, sigma=sigma)


@pytest.mark.parametrize("d,m", [(0, 4), (2, 0), (-1, 3)])
def test_bad_sizes(d, m):
    with pytest.raises(SpecError):
        draw_frequencies("gaussian", d=d, m=m)


def test_sigma_vector_of_wrong_length_raises_spec_error():
    with pytest.raises(SpecError):
        SketchSpec.create(d=2, m=4, law="gaussian", sigma=np.array([1.0, 1.0, 1.0]))
