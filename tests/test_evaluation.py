"""Sample-based evaluation: the MMD ratio and the sliced Wasserstein distance."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from learner.evaluation import BANDWIDTH_FACTORS, mmd_ratio, sliced_wasserstein
from sketch_store.errors import DataError
from sketch_store.scale import median_heuristic


def normal(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# -- MMD ratio -------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
def test_mmd_ratio_near_one_for_one_law(d):
    result = mmd_ratio(normal(800, d, seed=1), normal(800, d, seed=2))
    assert 0.5 <= result.ratio <= 2.0
    assert result.ratio == pytest.approx(result.mmd2 / result.null)
    assert result.null > 0


def test_mmd_ratio_averages_to_one_under_the_null():
    ratios = [mmd_ratio(normal(300, 2, seed=10 + k), normal(400, 2, seed=100 + k)).ratio for k in range(20)]
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.25)


def test_mmd_ratio_large_for_shifted_law():
    a = normal(800, 2, seed=3)
    b = normal(800, 2, seed=4, shift=1.0)
    forward, backward = mmd_ratio(a, b), mmd_ratio(b, a)
    assert forward.ratio > 10 and backward.ratio > 10
    # symmetric up to the bandwidths, which come from the reference set
    assert 0.67 < forward.ratio / backward.ratio < 1.5


def test_mmd_ratio_grows_with_the_shift():
    a = normal(600, 2, seed=5)
    ratios = [mmd_ratio(a, normal(600, 2, seed=6, shift=s)).ratio for s in (0.0, 0.3, 1.0, 3.0)]
    assert all(x < y for x, y in itertools.pairwise(ratios))


def test_mmd_ratio_default_bandwidths_from_reference():
    a = normal(500, 2, seed=7)
    result = mmd_ratio(a, normal(500, 2, seed=8))
    med = median_heuristic(a, seed=0)
    assert result.bandwidths == pytest.approx(tuple(med * f for f in BANDWIDTH_FACTORS))


def test_mmd_of_identical_sets_is_zero():
    a = normal(300, 3, seed=9)
    result = mmd_ratio(a, a.copy(), bandwidths=(1.0,))
    assert result.mmd2 == pytest.approx(0.0, abs=1e-12)
    assert result.bandwidths == (1.0,)


def test_mmd_v_statistic_by_hand():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(20, 2)), rng.normal(size=(30, 2)) + 0.3
    h = 0.7

    def kmean(x, y):
        d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * h * h)).mean()

    expected = kmean(a, a) + kmean(b, b) - 2 * kmean(a, b)
    assert mmd_ratio(a, b, bandwidths=(h,)).mmd2 == pytest.approx(expected, rel=1e-10)


def test_mmd_ratio_subsamples_large_sets():
    a, b = normal(5000, 2, seed=12), normal(5000, 2, seed=13)
    result = mmd_ratio(a, b, max_points=400)
    assert 0.3 < result.ratio < 3.0


@pytest.mark.parametrize(
    "a,b",
    [
        (np.zeros((10, 2)), np.zeros((10, 3))),
        (np.zeros(10), np.zeros((10, 1))),
        (np.zeros((10, 2)), np.zeros((1, 2))),
    ],
)
def test_mmd_ratio_rejects_mismatched_or_tiny_inputs(a, b):
    with pytest.raises(DataError):
        mmd_ratio(a, b, bandwidths=(1.0,))


def test_mmd_ratio_rejects_non_finite():
    a = normal(50, 2, seed=14)
    b = normal(50, 2, seed=15)
    b[3, 0] = np.nan
    with pytest.raises(DataError):
        mmd_ratio(a, b, bandwidths=(1.0,))


# -- sliced Wasserstein ---------------------------------------------------------------


def test_sliced_wasserstein_of_same_sample_is_zero():
    a = normal(500, 3, seed=16)
    assert sliced_wasserstein(a, a.copy()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("t", [0.5, -2.0])
def test_sliced_wasserstein_1d_translation(t):
    a = normal(1000, 1, seed=17)
    assert sliced_wasserstein(a, a + t) == pytest.approx(abs(t), rel=1e-9)


@pytest.mark.parametrize("d", [2, 5])
def test_sliced_wasserstein_translation_along_one_axis(d):
    a = normal(1000, d, seed=18)
    t = 1.5
    b = a.copy()
    b[:, 0] += t
    sw = sliced_wasserstein(a, b, n_projections=500, n_quantiles=200, seed=0)
    # every projection is shifted by t·θ₁, so SW₂ = |t|·√(mean θ₁²) exactly for these θ …
    theta = np.random.default_rng(0).standard_normal((d, 500))
    theta /= np.linalg.norm(theta, axis=0)
    assert sw == pytest.approx(t * math.sqrt(np.mean(theta[0] ** 2)), rel=1e-9)
    # … and E θ₁² = 1/d for θ uniform on the sphere.
    assert sw == pytest.approx(t / math.sqrt(d), rel=0.1)


def test_sliced_wasserstein_between_independent_translated_samples():
    a = normal(2000, 2, seed=19)
    b = normal(2000, 2, seed=20, shift=np.array([2.0, 0.0]))
    assert sliced_wasserstein(a, b, n_quantiles=200) == pytest.approx(2.0 / math.sqrt(2.0), rel=0.15)


def test_sliced_wasserstein_is_symmetric():
    a, b = normal(400, 2, seed=21), normal(500, 2, seed=22, shift=0.4)
    assert sliced_wasserstein(a, b) == pytest.approx(sliced_wasserstein(b, a), rel=1e-12)


def test_sliced_wasserstein_rejects_mismatched_dimensions():
    with pytest.raises(DataError, match="same d"):
        sliced_wasserstein(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(DataError):
        sliced_wasserstein(np.zeros(10), np.zeros((10, 1)))
