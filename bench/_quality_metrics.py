"""The quality suite's metrics (bench/quality.py): an MMD ratio and a classifier two-sample test.

Both take rows already in common units (the suite standardises every set with the *training*
rows' mean and std first, so a column in 1e4 units does not swamp one in 1e-3 units).

**MMD ratio.** With the Gaussian kernels ``k_b(x, y) = exp(−‖x − y‖² / (2 h_b²))`` at
``h_b = f_b × med``, ``f_b ∈ (1/8, 1/4, 1/2, 1)`` and ``med`` the median pairwise distance of the
reference rows, the *V-statistic* (biased: diagonal terms kept)

    ``MMD²_b(A, B) = mean_ij k_b(a_i, a_j) + mean_ij k_b(b_i, b_j) − 2 mean_ij k_b(a_i, b_j)``

is averaged over the four kernels (= MMD² of the mixture kernel ``(1/4) Σ_b k_b``), and

    ``ratio = mean_k MMD²(samples_k, reference_k) / mean_k MMD²(control_k₁, control_k₂)``

over a few (5) independent generated sets ``k``, each against its own reference set (fresh
draws) for a synthetic law, or all against the one held-out set for a real table; each control
pair is two sets of the same law at the same sizes as (samples, reference): two fresh draws
independent of the references for a synthetic law, training rows against the held-out rows for
a real table (see bench/_quality_data.py). Averaging over sets only reduces the noise: the
expectations are those of a single pair.
The V-statistic's expectation under "same law" is ``(E k(x, x) − E k(x, x'))(1/n_A + 1/n_B)``,
so equal sizes make the denominator its unbiased estimate: ratio ≈ 1 means the samples are as
close to the reference as a second sample of the law is; 10 means ten times the noise level.
(learner/evaluation.py's ``mmd_ratio`` instead divides by that expectation formula and also uses
the 2 × med kernel; this suite uses measured controls and the four kernels above.)

**Classifier two-sample test.** The out-of-fold ROC AUC of a gradient-boosted tree classifier
(scikit-learn's ``HistGradientBoostingClassifier``) trained to tell candidate rows from reference
rows, 5-fold stratified cross-validation: 0.5 = indistinguishable, 1 = fully separable.

Example
-------
>>> rng = np.random.default_rng(0)
>>> ref, cand = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
>>> pairs = [(rng.normal(size=(500, 2)), rng.normal(size=(500, 2))) for _ in range(3)]
>>> 0.3 < mmd_ratio(ref, cand, pairs).ratio < 3
True
>>> mmd_ratio(ref, cand + 1.0, pairs).ratio > 10
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from learner.evaluation import _sq_dists, classifier_auc  # noqa: F401 (re-exported for the bench)
from sketch_store.scale import median_heuristic

#: Bandwidth factors × the reference rows' median pairwise distance.
FACTORS = (0.125, 0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class RatioResult:
    """``ratio = mmd2 / null`` (four-kernel means) and the same ratio for each kernel alone."""

    ratio: float
    mmd2: float
    null: float
    per_bandwidth: tuple[float, ...]
    bandwidths: tuple[float, ...]


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x − mean) / std`` column-wise; a constant column (std 0) is divided by 1."""
    std = np.where(np.asarray(std) > 0, std, 1.0)
    return (np.asarray(x, dtype=np.float64) - mean) / std


def bandwidths(reference: np.ndarray, factors: tuple[float, ...] = FACTORS, seed: int = 0) -> np.ndarray:
    """``f × median pairwise distance of reference`` (at most 2000 rows) for each factor ``f``."""
    return median_heuristic(reference, seed=seed) * np.asarray(factors, dtype=np.float64)


def _kernel_means(a: np.ndarray, b: np.ndarray, h: np.ndarray, block: int = 1024) -> np.ndarray:
    """``mean_ij exp(−‖a_i − b_j‖² / 2h²)`` for each bandwidth ``h`` (blockwise over rows of ``a``)."""
    totals = np.zeros(len(h))
    inv = 1.0 / (2.0 * h**2)
    for i in range(0, a.shape[0], block):
        d2 = _sq_dists(a[i : i + block], b)
        for j, c in enumerate(inv):
            totals[j] += float(np.exp(-d2 * c).sum())
    return totals / (a.shape[0] * b.shape[0])


def mmd2_v(a: np.ndarray, b: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The V-statistic ``MMD²_b(a, b)`` for each bandwidth ``h_b`` (module docstring)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return _kernel_means(a, a, h) + _kernel_means(b, b, h) - 2.0 * _kernel_means(a, b, h)


def _sets(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One (n, d) array or a sequence of them, as a list of float64 arrays."""
    if isinstance(x, np.ndarray) and x.ndim == 2:
        return [np.asarray(x, dtype=np.float64)]
    return [np.asarray(v, dtype=np.float64) for v in x]


def mmd_ratio(references: np.ndarray | Sequence[np.ndarray], candidates: np.ndarray | Sequence[np.ndarray],
              controls: Sequence[tuple[np.ndarray, np.ndarray]], factors: tuple[float, ...] = FACTORS) -> RatioResult:
    """``mean_k MMD²(candidate_k, reference_k) / mean_pairs MMD²(control pair)`` over the kernels (module docstring).

    Candidate ``k`` is compared with reference ``k mod (number of references)``; the bandwidths
    come from the first reference set. Non-finite candidates score ``inf``.
    """
    refs, cands = _sets(references), _sets(candidates)
    if not all(np.all(np.isfinite(c)) for c in cands):
        return RatioResult(float("inf"), float("inf"), float("nan"), tuple(float("inf") for _ in factors), ())
    h = bandwidths(refs[0], factors)
    num = np.mean([mmd2_v(c, refs[k % len(refs)], h) for k, c in enumerate(cands)], axis=0)
    den = np.mean([mmd2_v(c1, c2, h) for c1, c2 in controls], axis=0)
    return RatioResult(ratio=float(num.mean() / den.mean()), mmd2=float(num.mean()), null=float(den.mean()),
                       per_bandwidth=tuple(float(v) for v in num / den), bandwidths=tuple(float(v) for v in h))
