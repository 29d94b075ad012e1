"""Scale estimation: the sketch-based estimator, the median heuristic, and pilot-designed specs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sketch_store.errors import DataError, SketchgenError
from sketch_store.pilot import spec_from_pilot, standardization
from sketch_store.scale import (
    MEDIAN_FLOOR_FRACTION,
    estimate_scale,
    median_heuristic,
    pilot_sample,
    sketch_scale,
)


@pytest.mark.parametrize("d", [2, 5])
def test_sketch_scale_recovers_gaussian_std(d):
    x = np.random.default_rng(d).normal(scale=0.3, size=(2000, d))
    sigma = sketch_scale(x, seed=0)
    assert sigma == pytest.approx(0.3, rel=0.15)


def test_sketch_scale_follows_the_data_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    small, large = sketch_scale(0.05 * x, seed=0), sketch_scale(20.0 * x, seed=0)
    assert small == pytest.approx(0.05, rel=0.15)
    assert large == pytest.approx(20.0, rel=0.15)


@pytest.mark.parametrize("d", [2, 5])
def test_estimate_scale_sketch_method(d):
    x = np.random.default_rng(10 + d).normal(scale=0.3, size=(2000, d))
    assert estimate_scale(x, "sketch", seed=0) == pytest.approx(0.3, rel=0.15)


def test_median_heuristic_standard_gaussian_2d():
    # ‖x − y‖ for independent N(0, I₂) points is √2 · Rayleigh(1), whose median is √2 · √(2 ln 2).
    x = np.random.default_rng(1).normal(size=(2000, 2))
    assert median_heuristic(x) == pytest.approx(2.0 * math.sqrt(math.log(2.0)), rel=0.05)


def test_median_heuristic_scales_linearly():
    x = np.random.default_rng(2).normal(size=(500, 3))
    assert median_heuristic(7.0 * x) == pytest.approx(7.0 * median_heuristic(x), rel=1e-9)


def test_median_heuristic_two_points():
    assert median_heuristic(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)


def test_estimate_scale_median_method_is_median_heuristic():
    x = np.random.default_rng(3).normal(size=(800, 2))
    assert estimate_scale(x, "median", seed=0) == median_heuristic(x, seed=0)


def test_estimate_scale_never_below_median_floor():
    x = np.random.default_rng(4).normal(size=(800, 2))
    assert estimate_scale(x, "sketch") >= MEDIAN_FLOOR_FRACTION * median_heuristic(x)


def test_estimate_scale_rejects_unknown_method():
    x = np.random.default_rng(5).normal(size=(100, 2))
    with pytest.raises(DataError, match="unknown scale estimator 'mean'"):
        estimate_scale(x, "mean")


@pytest.mark.parametrize("estimator", [median_heuristic, sketch_scale])
def test_identical_rows_raise_data_error(estimator):
    x = np.tile([[1.0, 2.0]], (50, 1))
    with pytest.raises(DataError, match="identical"):
        estimator(x)


def test_identical_rows_raise_data_error_in_estimate_scale():
    with pytest.raises(DataError):
        estimate_scale(np.zeros((30, 3)), "sketch")


def test_single_row_raises_data_error():
    with pytest.raises(DataError, match="at least 2 rows"):
        median_heuristic(np.ones((1, 2)))


def test_nan_rows_raise_data_error():
    x = np.random.default_rng(6).normal(size=(50, 2))
    x[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        median_heuristic(x)


def test_pilot_sample_subsamples_without_replacement():
    x = np.arange(1000, dtype=float)[:, None]
    pilot = pilot_sample(x, 100, seed=0)
    assert pilot.shape == (100, 1)
    assert len(np.unique(pilot)) == 100
    assert np.all(np.diff(pilot[:, 0]) > 0)  # original order kept
    few = x[:50]
    assert pilot_sample(few, 100) is few


# -- pilot-designed specs ------------------------------------------------------


def test_spec_from_pilot_estimated_scale_is_recorded_as_sketch():
    rng = np.random.default_rng(7)
    x = rng.normal(loc=[5.0, -3.0], scale=[2.0, 0.5], size=(3000, 2))
    spec = spec_from_pilot(x, m=64, seed=0, kernel="single")
    assert spec.scale_method == "sketch"
    assert spec.d == 2 and spec.m == 64
    assert np.allclose(spec.mean, x.mean(axis=0))
    assert np.allclose(spec.std, x.std(axis=0))
    # standardised data are ~N(0, I): the estimated σ is about 1.
    assert float(spec.sigma) == pytest.approx(1.0, rel=0.2)


def test_spec_from_pilot_given_sigma():
    x = np.random.default_rng(8).normal(size=(500, 3))
    spec = spec_from_pilot(x, m=32, sigma=0.25, seed=1)
    assert spec.scale_method == "given"
    assert float(spec.sigma) == 0.25


def test_spec_from_pilot_median_estimator():
    x = np.random.default_rng(9).normal(size=(500, 2))
    spec = spec_from_pilot(x, m=32, seed=1, estimator="median", kernel="single")
    assert spec.scale_method == "median"
    assert float(spec.sigma) == pytest.approx(median_heuristic((x - x.mean(0)) / x.std(0), seed=1))


def test_spec_from_pilot_without_standardisation():
    x = np.random.default_rng(10).normal(loc=4.0, size=(500, 2))
    spec = spec_from_pilot(x, m=16, sigma=1.0, standardize=False, name="raw")
    assert np.array_equal(spec.mean, np.zeros(2))
    assert np.array_equal(spec.std, np.ones(2))
    assert spec.name == "raw"


def test_spec_from_pilot_rejects_nan():
    x = np.random.default_rng(11).normal(size=(100, 2))
    x[0, 0] = np.inf
    with pytest.raises(SketchgenError):
        spec_from_pilot(x, m=8)


def test_standardization_constant_column_gets_unit_std():
    x = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    mean, std = standardization(x)
    assert np.allclose(mean, [4.5, 3.0])
    assert std[1] == 1.0 and std[0] == pytest.approx(np.arange(10.0).std())
