"""The multi-scale ladder and Ω: scales follow the data's finest resolved structure."""

from __future__ import annotations

import numpy as np
import pytest

from sketch_store.errors import SpecError
from sketch_store.frequency_laws import draw_multiscale_frequencies, scale_of_column, validate_scales
from sketch_store.scale import MAX_SCALES, characteristic_energy, finest_resolved_radius, scale_ladder


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def test_pure_noise_energy_is_near_zero_and_structure_is_positive() -> None:
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(4000, 2))
    energy = characteristic_energy(smooth, radii=np.array([0.5, 50.0]))
    assert energy[0] > 100 and abs(energy[1]) < 1.0


def test_narrower_clusters_give_a_finer_ladder() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(8, 2))
    labels = rng.integers(0, 8, 5000)
    wide = _standardised(centres[labels] + 0.5 * rng.normal(size=(5000, 2)))
    narrow = _standardised(centres[labels] + 0.02 * rng.normal(size=(5000, 2)))
    assert finest_resolved_radius(narrow) > 4 * finest_resolved_radius(wide)
    coarse_ladder, fine_ladder = scale_ladder(wide), scale_ladder(narrow)
    assert fine_ladder[-1] < coarse_ladder[-1] / 4
    assert np.allclose(fine_ladder[:-1] / fine_ladder[1:], 2.0)


def test_discrete_data_resolve_every_radius_but_the_ladder_is_capped() -> None:
    rng = np.random.default_rng(2)
    lattice = _standardised(rng.integers(0, 4, size=(5000, 2)).astype(float))
    assert len(scale_ladder(lattice)) == MAX_SCALES


def test_multiscale_columns_take_their_scale_in_turn() -> None:
    scales = np.array([1.0, 0.1, 0.01])
    om = draw_multiscale_frequencies("gaussian", 3, 3000, scales, seed=0)
    k = scale_of_column(3000, 3)
    medians = [np.median(np.linalg.norm(om[:, k == i], axis=0)) for i in range(3)]
    assert medians[1] == pytest.approx(10 * medians[0], rel=0.1)
    assert medians[2] == pytest.approx(100 * medians[0], rel=0.1)


@pytest.mark.parametrize("bad", [[], [1.0, -1.0], [np.nan], [[1.0]], ["a"]])
def test_bad_scales_are_refused(bad: object) -> None:
    with pytest.raises(SpecError):
        validate_scales(bad)


def test_a_multiscale_spec_records_its_ladder_and_round_trips() -> None:
    from sketch_store.pilot import spec_from_pilot
    from sketch_store.spec import SketchSpec

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-3, 0.05, (2000, 2)), rng.normal(3, 0.05, (2000, 2))])
    spec = spec_from_pilot(x, m=120)  # the default kernel
    assert spec.scale_method == "multiscale" and spec.scales is not None and len(spec.scales) >= 3
    again = SketchSpec.from_bytes(spec.to_bytes())
    assert again.fingerprint == spec.fingerprint
    assert np.array_equal(again.scales, spec.scales) and np.array_equal(again.omega, spec.omega)
    assert "scales" in spec.describe()
    single = spec_from_pilot(x, m=120, kernel="single")
    assert single.scales is None and single.scale_method == "sketch"


def test_an_unknown_kernel_is_refused() -> None:
    from sketch_store.errors import DataError
    from sketch_store.pilot import spec_from_pilot

    with pytest.raises(DataError, match="unknown kernel"):
        spec_from_pilot(np.random.default_rng(0).normal(size=(100, 2)), m=10, kernel="fancy")


def test_sketch_command_with_the_multiscale_kernel(tmp_path) -> None:
    import subprocess
    import sys

    from sketch_store.sketch import load_sketch

    rng = np.random.default_rng(4)
    data = tmp_path / "d.npy"
    np.save(data, np.concatenate([rng.normal(-3, 0.05, (3000, 2)), rng.normal(3, 0.05, (3000, 2))]))
    out = tmp_path / "s.npz"
    subprocess.run([sys.executable, "-m", "sketchgen", "sketch", str(data), "--out", str(out), "--kernel",
                    "multiscale", "--m", "200"], check=True, capture_output=True)
    spec, sketch = load_sketch(out)
    assert spec.scales is not None and sketch.count == 6000
    bad = subprocess.run([sys.executable, "-m", "sketchgen", "sketch", str(data), "--out", str(out), "--kernel",
                          "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_the_coarse_end_follows_the_data_not_the_dimension() -> None:
    """The median distance grows like √d, but frequencies at √d-wide scales see only the mean."""
    from sketch_store.scale import median_heuristic

    rng = np.random.default_rng(4)
    low, high = rng.normal(size=(3000, 2)), rng.normal(size=(3000, 50))
    assert median_heuristic(high) > 4 * median_heuristic(low)
    assert scale_ladder(high)[0] == pytest.approx(scale_ladder(low)[0], rel=0.5)

