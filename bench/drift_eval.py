"""Drift-detector evaluation in the style of NEWMA (Keriven, Garreau, Poli 2020): delay, misses, false alarms.

Streams are simulated bucket by bucket as :mod:`bench.drift` does (``--rate`` records/s, ``--bucket`` = 10 s
buckets, Poisson counts per bucket); every detector sees the same buckets and returns a score per bucket.

**Records.** To afford days of stream, a stream's records are drawn uniformly (with replacement) from a *pool*
of ``--pool`` rows of its law whose features ``Φ`` are computed once with :class:`FeatureMap`; a bucket's feature
sum is the sum of its records' pool features (exactly what ``FeatureMap.feature_sum`` gives on those rows, up to
float32 rounding), computed for many buckets at once as ``counts @ Φ_pool``. The stationary law is thus the pool's
empirical law (a discrete law of ``--pool`` atoms: the raw-data tests see ties). A change is a *coupled* map of
the pool (each atom shifted, rescaled, re-correlated, or a share of atoms replaced/re-labelled), so the law after
differs from the law before by the intended change only, not by a fresh pool's sampling noise.

**Change kinds** (d = 5 fields, change after the windows fill plus ``--warmup``): ``mean_one`` (field 0 shifted by
0.25 σ), ``mean_all`` (every field by 0.15 σ), ``var_one`` (field 0's σ × 1.3), ``corr_flip`` (Gaussian copula:
corr(x0, x1) 0.5 → −0.5, marginals unchanged), ``new_mode`` (5 % of records from a new cluster of the mixture),
``category`` (typed stream of 4 floats and a 4-value category, encoded by :mod:`sketch_store.typed_encoding`;
shares 0.4/0.3/0.2/0.1 → 0.3/0.3/0.2/0.2). Stationary laws: ``gaussian``, ``mixture`` (3 clusters), ``student_t``
(ν = 3) and ``typed``.

**Detectors** (``DETECTORS``): ``ours`` — the learner's score, :func:`learner.drift.scan_score` of the last
``--recent`` s of buckets (its newest 1, 2, 4, … buckets and all of them) against the ``--reference`` s before
(service defaults 60 s / 600 s); ``ours_window`` — the same without the scan (the whole recent window only);
``newma`` — :class:`Newma`; ``exact_mmd`` — the sliding-window exact-MMD detector of :mod:`bench.drift`
(subsampled windows, Gaussian kernel mixture);
``ks_chi2`` — per-column tests as Evidently runs them: KS per numeric column, χ² per categorical column of the
recent vs reference raw windows (subsampled), score ``−log10(min p)``, alarm at ``p < α/d`` (Bonferroni).
The raw-data detectors are evaluated every ``--raw-every`` buckets (default 6: once per recent window) and hold
their score in between. alibi-detect's ``MMDDriftOnline`` is absent: alibi-detect 0.13 pins numpy < 2.

**Plugging in a detector.** A detector is a class with ``name`` and
``update(bucket_sum, bucket_count, rows, want_score=True) -> float``: ``bucket_sum`` is the bucket's
``Σ Φ(x_i)`` (float64, 2m), ``bucket_count`` its record count, ``rows`` a :class:`Rows` uniform subsample of its
records (raw ``table`` with categories as integer codes, and ``vectors`` = the standardised feature-map input);
it returns the score after this bucket (NaN while it cannot score; it may skip work and return NaN when
``want_score`` is False). Its constructor takes ``(setup: StreamSetup, cfg: Config)``; add the class to
``DETECTORS``. Alarm = score > threshold; thresholds are swept over quantiles of the stationary scores.

**Metrics.** False alarms per simulated day = rising edges of ``score > threshold`` on the stationary streams; delay
= first alarm after the change (median over trials that alarm within ``--horizon``), miss rate = share of trials
with none. At equal false-alarm rate: per detector and rate, the smallest threshold giving ≤ 1 false alarm per day
on every stationary stream. Output: docs/bench/drift_eval.md, docs/bench/drift_eval.json, docs/img/drift_eval.png.

Run: ``nice -n 19 .venv/bin/python bench/drift_eval.py [--quick] [--days 7] [--trials 20] [--rates 10,100,1000]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import DOCS, markdown_table, write_report  # noqa: E402
from bench.drift import WindowedDetectors, rising_edges  # noqa: E402
from learner.drift import drift_score, scan_score  # noqa: E402
from learner.evaluation import BANDWIDTH_FACTORS  # noqa: E402
from sketch_store.features import FeatureMap  # noqa: E402
from sketch_store.pilot import spec_from_pilot, typed_spec_from_pilot  # noqa: E402
from sketch_store.scale import median_heuristic  # noqa: E402
from sketch_store.schema import Field, Schema  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402

D = 5
CATEGORIES = ("c0", "c1", "c2", "c3")
CATEGORY_SHARES = np.array([0.4, 0.3, 0.2, 0.1])
RHO = 0.5
DAY = 86400.0

# -- laws -------------------------------------------------------------------------------------------------------

Law = Callable[[int, np.random.Generator], np.ndarray]


def gaussian(n: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, C), unit variances, corr(x0, x1) = ρ: ``x1 = ρ x0 + √(1−ρ²) w``."""
    x = rng.standard_normal((n, D))
    x[:, 1] = RHO * x[:, 0] + math.sqrt(1 - RHO**2) * x[:, 1]
    return x


MIXTURE_MEANS = np.array([[0.0] * D, [3.0, -2.0, 1.0, 0.0, 2.0], [-2.0, 2.5, -1.5, 2.0, -1.0]])
NEW_MODE_MEAN = np.array([2.0, 3.0, -3.0, -2.0, 3.0])


def mixture(n: int, rng: np.random.Generator) -> np.ndarray:
    """Equal-weight mixture of three unit Gaussians at ``MIXTURE_MEANS``."""
    return MIXTURE_MEANS[rng.integers(len(MIXTURE_MEANS), size=n)] + rng.standard_normal((n, D))


def student_t(n: int, rng: np.random.Generator) -> np.ndarray:
    """Multivariate Student t, ν = 3: ``g / √(χ²_ν / ν)``, one χ² per record."""
    return rng.standard_normal((n, D)) / np.sqrt(rng.chisquare(3, size=(n, 1)) / 3)


def typed(n: int, rng: np.random.Generator) -> np.ndarray:
    """Four N(0, 1) floats and a category code (last column) with shares ``CATEGORY_SHARES``."""
    codes = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARES)
    return np.column_stack([rng.standard_normal((n, D - 1)), codes.astype(np.float64)])


LAWS: dict[str, Law] = {"gaussian": gaussian, "mixture": mixture, "student_t": student_t, "typed": typed}

# -- coupled changes: table of the law before → table of the law after -------------------------------------------

Change = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def mean_one(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x0 + 0.25."""
    return x + np.eye(D)[0] * 0.25


def mean_all(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every field + 0.15."""
    return x + 0.15


def var_one(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x0 × 1.3 (its mean is 0)."""
    y = x.copy()
    y[:, 0] *= 1.3
    return y


def corr_flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x1 − 2ρ x0 = −ρ x0 + √(1−ρ²) w``: corr(x0, x1) ρ → −ρ, both marginals still N(0, 1)."""
    y = x.copy()
    y[:, 1] = x[:, 1] - 2 * RHO * x[:, 0]
    return y


def new_mode(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """5 % of the records replaced by draws of N(``NEW_MODE_MEAN``, I)."""
    y = x.copy()
    hit = rng.random(len(x)) < 0.05
    y[hit] = NEW_MODE_MEAN + rng.standard_normal((int(hit.sum()), D))
    return y


def category_share(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A quarter of category c0 relabelled c3: shares 0.4/0.3/0.2/0.1 → 0.3/0.3/0.2/0.2."""
    y = x.copy()
    move = (x[:, -1] == 0) & (rng.random(len(x)) < 0.25)
    y[move, -1] = 3
    return y


CHANGES: dict[str, tuple[str, Change]] = {
    "mean_one": ("gaussian", mean_one), "mean_all": ("gaussian", mean_all), "var_one": ("gaussian", var_one),
    "corr_flip": ("gaussian", corr_flip), "new_mode": ("mixture", new_mode), "category": ("typed", category_share),
}

# -- stream setup and pools --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Window and detector settings shared by all streams."""

    bucket: float = 10.0
    recent: float = 60.0
    reference: float = 600.0
    m: int = 1000
    pool: int = 4096
    raw_every: int = 6
    mmd_recent: int = 200
    mmd_reference: int = 400
    ks_recent: int = 600
    ks_reference: int = 2000
    newma_ratio: float = 2.0

    @property
    def n_recent(self) -> int:
        return round(self.recent / self.bucket)

    @property
    def n_reference(self) -> int:
        return round(self.reference / self.bucket)

    @property
    def keep(self) -> int:
        """Records kept per bucket for the raw-data detectors (enough for their recent subsample)."""
        return math.ceil(max(self.mmd_recent, self.ks_recent) / self.n_recent)


@dataclasses.dataclass(frozen=True)
class StreamSetup:
    """A stream's spec, column kinds ("num"/"cat" per raw column), table → feature-map input, MMD bandwidths."""

    spec: SketchSpec
    kinds: tuple[str, ...]
    encode: Callable[[np.ndarray], np.ndarray]
    bandwidths: tuple[float, ...]


def typed_schema() -> Schema:
    """The typed stream's schema: x0 … x3 floats and a category ``cat``."""
    return Schema((*(Field(f"x{j}", "float") for j in range(D - 1)), Field("cat", "category", CATEGORIES)))


def typed_records(table: np.ndarray) -> list[dict[str, object]]:
    """Rows of the typed table as records (last column = category code)."""
    return [{**{f"x{j}": float(r[j]) for j in range(D - 1)}, "cat": CATEGORIES[int(r[-1])]} for r in table]


@functools.lru_cache(maxsize=16)
def make_setup(name: str, cfg: Config) -> StreamSetup:
    """The spec ``sketchgen create`` would make from a 5000-row pilot, and the exact detector's bandwidths."""
    pilot = LAWS[name](5000, np.random.default_rng(7))
    if name == "typed":
        spec = typed_spec_from_pilot(typed_records(pilot), typed_schema(), m=cfg.m, seed=0, name=name)
        encoder = spec.encoder
        assert encoder is not None
        encode: Callable[[np.ndarray], np.ndarray] = lambda t: encoder.encode_many(typed_records(t))  # noqa: E731
        kinds = ("num",) * (D - 1) + ("cat",)
    else:
        spec = spec_from_pilot(pilot, m=cfg.m, seed=0, name=name)
        encode, kinds = (lambda t: t), ("num",) * D
    med = median_heuristic(spec.standardize(encode(pilot)), seed=0)
    return StreamSetup(spec, kinds, encode, tuple(med * f for f in BANDWIDTH_FACTORS))


@dataclasses.dataclass(frozen=True)
class Pool:
    """Rows a stream draws from: raw ``table``, standardised ``vectors`` and float32 ``features`` Φ."""

    table: np.ndarray
    vectors: np.ndarray
    features: np.ndarray


def make_pool(setup: StreamSetup, table: np.ndarray) -> Pool:
    """Encode and featurise ``table`` once."""
    enc = setup.encode(table)
    features = FeatureMap(setup.spec).transform(enc).astype(np.float32)
    return Pool(table, setup.spec.standardize(enc), features)


@dataclasses.dataclass(frozen=True)
class Rows:
    """A uniform subsample of a bucket's records: raw table and standardised vectors."""

    table: np.ndarray
    vectors: np.ndarray


def bucket_block(pool: Pool, rate: float, cfg: Config, n_buckets: int, rng: np.random.Generator,
                 ) -> tuple[np.ndarray, np.ndarray, list[Rows]]:
    """``n_buckets`` buckets of Poisson(rate·bucket) records drawn from ``pool``: sums (B, 2m), counts, rows."""
    counts = rng.poisson(rate * cfg.bucket, size=n_buckets)
    idx = np.split(rng.integers(len(pool.table), size=int(counts.sum())), np.cumsum(counts)[:-1])
    if rate * cfg.bucket * 32 < len(pool.table):
        sums = np.stack([pool.features[i].sum(axis=0, dtype=np.float64) for i in idx])
    else:
        hist = np.stack([np.bincount(i, minlength=len(pool.table)) for i in idx]).astype(np.float32)
        sums = (hist @ pool.features).astype(np.float64)
    rows = [Rows(pool.table[i[: cfg.keep]], pool.vectors[i[: cfg.keep]]) for i in idx]
    return sums, counts, rows


# -- detectors ---------------------------------------------------------------------------------------------------


class Detector(Protocol):
    """One score per bucket; alarm when the score is above a threshold."""

    name: str

    def update(self, bucket_sum: np.ndarray, bucket_count: int, rows: Rows, want_score: bool = True) -> float:
        ...


class Ours:
    """The learner's score: :func:`learner.drift.scan_score` of the recent window's buckets (newest first) against
    the reference window — ``max`` over the newest 1, 2, 4, … buckets and the whole window of
    ``‖z_r − z_ref‖² / ((1 − ‖z‖²)(1/n_r + 1/n_ref))``."""

    name = "ours"

    def __init__(self, setup: StreamSetup, cfg: Config) -> None:
        self.cfg, self.fp = cfg, setup.spec.fingerprint
        self.sums: deque[tuple[np.ndarray, int]] = deque(maxlen=cfg.n_recent + cfg.n_reference)

    def update(self, bucket_sum: np.ndarray, bucket_count: int, rows: Rows, want_score: bool = True) -> float:
        self.sums.append((bucket_sum, int(bucket_count)))
        if len(self.sums) < self.sums.maxlen:
            return math.nan
        buckets = list(self.sums)
        ref, recent = buckets[: self.cfg.n_reference], buckets[self.cfg.n_reference :]
        score = self.score(recent, self._sketch(ref))
        return math.nan if score is None else score

    def score(self, recent: list[tuple[np.ndarray, int]], reference: Sketch) -> float | None:
        """The scan over ``recent`` (oldest first, as kept)."""
        return scan_score([Sketch(t, c, self.fp) for t, c in reversed(recent)], reference)

    def _sketch(self, buckets: list[tuple[np.ndarray, int]]) -> Sketch:
        """The merged sketch of ``buckets`` (what the store's window read returns)."""
        return Sketch(np.sum([t for t, _ in buckets], axis=0), sum(c for _, c in buckets), self.fp)


class OursWindow(Ours):
    """Ablation: :func:`learner.drift.drift_score` of the whole recent window only (the learner's score before
    the scan)."""

    name = "ours_window"

    def score(self, recent: list[tuple[np.ndarray, int]], reference: Sketch) -> float | None:
        return drift_score(self._sketch(recent), reference)


@functools.lru_cache(maxsize=4096)
def newma_factors(window: float, ratio: float) -> tuple[float, float]:
    """``(Λ, λ)`` with ``Λ = ratio·λ`` whose EWMA weights cross at lag ``window`` (records).

    The weight of the record ``k`` steps back is ``Λ(1−Λ)^k`` in ``z_Λ`` and ``λ(1−λ)^k`` in ``z_λ``; they are
    equal at ``k = log(Λ/λ) / log((1−λ)/(1−Λ))``, so ``z_Λ − z_λ`` compares the last ``window`` records
    (positive weights) with the ones before (negative weights), as a window of that size would. Solved by
    bisection on λ. (This crossing-point rule with Λ = 2λ is our reading of the paper's "factors from a window
    size"; the paper's exact heuristic was not re-checked, and ``Config.newma_ratio`` changes the ratio.)
    """
    lo, hi = 1e-12, (1.0 - 1e-12) / ratio
    for _ in range(200):
        lam = math.sqrt(lo * hi)
        cross = math.log(ratio) / math.log((1 - lam) / (1 - ratio * lam))
        lo, hi = (lo, lam) if cross < window else (lam, hi)
    return ratio * lam, lam


def ewma_null_factor(a: float, b: float) -> float:
    """``Σ_k (a(1−a)^k − b(1−b)^k)²``: the variance factor of ``z_a − z_b`` for i.i.d. inputs of unit variance."""
    return a * a / (1 - (1 - a) ** 2) + b * b / (1 - (1 - b) ** 2) - 2 * a * b / (1 - (1 - a) * (1 - b))


class Newma:
    """NEWMA: ``z_Λ ← (1−Λ) z_Λ + Λ Φ(x_t)``, same for ``z_λ`` (Λ > λ), statistic ``‖z_Λ − z_λ‖²``.

    Per bucket of n records each average moves as if the records arrived one by one with the bucket's mean
    feature: ``z ← (1−Λ)^n z + (1 − (1−Λ)^n) · (Σ Φ / n)`` (the per-record recursion in expectation). The
    factors come from :func:`newma_factors` with ``window`` = the recent window's records (60 s × rate, the
    rate read off the counts). The score is the statistic over its stationary expectation
    ``(1 − ‖z_λ‖²) / n · ewma_null_factor(a, b)`` (a, b the per-bucket factors; ``1 − ‖EΦ‖² = tr Cov Φ``
    since ``‖Φ(x)‖ = 1``), so that one threshold reads across rates; ``statistic`` keeps the raw value.
    """

    name = "newma"

    def __init__(self, setup: StreamSetup, cfg: Config) -> None:
        self.cfg = cfg
        self.fast: np.ndarray | None = None
        self.slow: np.ndarray | None = None
        self.seen = 0
        self.mean_count = 0.0
        self.statistic = math.nan

    def update(self, bucket_sum: np.ndarray, bucket_count: int, rows: Rows, want_score: bool = True) -> float:
        if bucket_count == 0:
            return self._score()
        self.seen += 1
        self.mean_count += (bucket_count - self.mean_count) / min(self.seen, 100)
        window = float(f"{self.mean_count * self.cfg.n_recent:.3g}")  # 3 digits: cached
        big, small = newma_factors(window, self.cfg.newma_ratio)
        a, b = 1 - (1 - big) ** bucket_count, 1 - (1 - small) ** bucket_count
        mean = bucket_sum / bucket_count
        if self.fast is None or self.slow is None:
            self.fast, self.slow = mean.copy(), mean.copy()
        else:
            self.fast += a * (mean - self.fast)
            self.slow += b * (mean - self.slow)
        self.statistic = float(np.sum((self.fast - self.slow) ** 2))
        self._null = (1 - float(np.sum(self.slow**2))) / self.mean_count * ewma_null_factor(a, b)
        return self._score()

    def _score(self) -> float:
        if self.seen < self.cfg.n_recent + self.cfg.n_reference:
            return math.nan  # warm-up: as long as the windowed detectors'
        return self.statistic / self._null if self._null > 1e-12 else 0.0


class RawWindows:
    """Base of the raw-data detectors: the kept rows of the last recent + reference buckets, scored every k."""

    name = "raw"

    def __init__(self, setup: StreamSetup, cfg: Config) -> None:
        self.setup, self.cfg = setup, cfg
        self.rows: deque[Rows] = deque(maxlen=cfg.n_recent + cfg.n_reference)
        self.tick = 0
        self.last = math.nan

    def update(self, bucket_sum: np.ndarray, bucket_count: int, rows: Rows, want_score: bool = True) -> float:
        self.rows.append(rows)
        self.tick += 1
        if len(self.rows) < self.rows.maxlen or not want_score:
            self.last = math.nan
        elif self.tick % self.cfg.raw_every == 0 or math.isnan(self.last):
            self.last = self.evaluate()
        return self.last

    def windows(self) -> tuple[list[Rows], list[Rows]]:
        """(reference, recent) bucket rows."""
        rows = list(self.rows)
        return rows[: self.cfg.n_reference], rows[self.cfg.n_reference :]

    def evaluate(self) -> float:
        raise NotImplementedError


class ExactMMD(RawWindows):
    """:class:`bench.drift.WindowedDetectors` ``exact_score``: MMD² (5 Gaussian kernels) over its null level."""

    name = "exact_mmd"

    def __init__(self, setup: StreamSetup, cfg: Config) -> None:
        super().__init__(setup, cfg)
        args = argparse.Namespace(recent=cfg.recent, reference=cfg.reference, bucket=cfg.bucket,
                                  exact_recent=cfg.mmd_recent, exact_reference=cfg.mmd_reference)
        self.inner = WindowedDetectors(setup.spec, args, setup.bandwidths, np.random.default_rng(0))
        self.per_bucket = math.ceil(cfg.mmd_recent / cfg.n_recent)

    def evaluate(self) -> float:
        self.inner.rows.clear()
        self.inner.rows.extend(r.vectors[: self.per_bucket] for r in self.rows)
        return self.inner.exact_score()


def subsample(parts: Sequence[np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``k`` rows of the concatenated ``parts``, uniformly without replacement."""
    rows = np.concatenate(parts)
    return rows if len(rows) <= k else rows[rng.choice(len(rows), size=k, replace=False)]


def ks_pvalues(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Two-sample KS per column: ``D = sup |F_ref − F_cur|``, p from ``kstwo(round(n·k/(n+k)))``.

    scipy's ``ks_2samp(method="asymp")`` p-value (Evidently calls ``ks_2samp``), vectorised over columns.
    """
    n, k = len(ref), len(cur)
    out = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        a, b = np.sort(ref[:, j]), np.sort(cur[:, j])
        grid = np.concatenate([a, b])
        d = np.max(np.abs(np.searchsorted(a, grid, "right") / n - np.searchsorted(b, grid, "right") / k))
        out[j] = d
    return stats.kstwo.sf(out, round(n * k / (n + k)))


def chi2_pvalue(ref: np.ndarray, cur: np.ndarray) -> float:
    """χ² goodness of fit of the current category counts to the reference shares (add-½ smoothed), as Evidently."""
    cats = np.union1d(ref, cur).astype(int)
    f_ref = np.array([np.sum(ref == c) for c in cats]) + 0.5
    f_obs = np.array([np.sum(cur == c) for c in cats], dtype=np.float64)
    if len(cats) < 2:
        return 1.0
    return float(stats.chisquare(f_obs, f_ref / f_ref.sum() * f_obs.sum()).pvalue)


class ColumnTests(RawWindows):
    """Per column: KS (numeric) or χ² (category), recent vs reference; score ``−log10(min p)``.

    Evidently's rule "drift if any column's p < α/d" is score > ``−log10(α/d)``; α is the threshold knob.
    """

    name = "ks_chi2"

    def __init__(self, setup: StreamSetup, cfg: Config) -> None:
        super().__init__(setup, cfg)
        self.rng = np.random.default_rng(1)

    def evaluate(self) -> float:
        ref_rows, recent_rows = self.windows()
        ref = subsample([r.table for r in ref_rows], self.cfg.ks_reference, self.rng)
        cur = subsample([r.table for r in recent_rows], self.cfg.ks_recent, self.rng)
        num = [j for j, kind in enumerate(self.setup.kinds) if kind == "num"]
        pvals = [*ks_pvalues(ref[:, num], cur[:, num]),
                 *(chi2_pvalue(ref[:, j], cur[:, j]) for j, kind in enumerate(self.setup.kinds) if kind == "cat")]
        return float(-np.log10(max(min(pvals), 1e-300)))


DETECTORS: tuple[type, ...] = (Ours, OursWindow, Newma, ExactMMD, ColumnTests)

# -- simulation --------------------------------------------------------------------------------------------------


def run_stream(setup: StreamSetup, pools: Sequence[Pool], change_bucket: int, n_buckets: int, rate: float,
               cfg: Config, rng: np.random.Generator, score_from: int = 0, score_until: int | None = None,
               chunk: int = 720, detectors: Sequence[type] = DETECTORS) -> dict[str, np.ndarray]:
    """Scores per bucket of every detector; buckets ``≥ change_bucket`` draw from ``pools[1]``.

    Scores are asked for (``want_score``) only in buckets ``score_from ≤ b < score_until``, to skip work the
    caller does not use: the raw-data detectors then return NaN.
    """
    until = n_buckets if score_until is None else score_until
    running = [cls(setup, cfg) for cls in detectors]
    scores = {det.name: np.full(n_buckets, np.nan) for det in running}
    b = 0
    while b < n_buckets:
        pool = pools[0] if b < change_bucket else pools[1]
        size = min(chunk, n_buckets - b, (change_bucket - b) if b < change_bucket else n_buckets)
        sums, counts, rows = bucket_block(pool, rate, cfg, size, rng)
        for j in range(size):
            for det in running:
                scores[det.name][b + j] = det.update(sums[j], int(counts[j]), rows[j], score_from <= b + j < until)
        b += size
    return scores


def stationary_scores(name: str, rate: float, days: float, cfg: Config, seed: int,
                      raw_days: float | None = None, detectors: Sequence[type] = DETECTORS) -> dict[str, np.ndarray]:
    """Every detector's scores over ``days`` of a stationary stream of law ``name``.

    The raw-data detectors (the costly ones) score only the first ``raw_days`` (default: all ``days``).
    """
    rng = np.random.default_rng(seed)
    setup = make_setup(name, cfg)
    pool = make_pool(setup, LAWS[name](cfg.pool, rng))
    warm = cfg.n_recent + cfg.n_reference
    n = round(days * DAY / cfg.bucket) + warm
    until = None if raw_days is None else round(raw_days * DAY / cfg.bucket) + warm
    return run_stream(setup, [pool, pool], n, n, rate, cfg, rng, score_until=until, detectors=detectors)


def change_scores(kind: str, rate: float, cfg: Config, seed: int, warmup: float, horizon: float,
                  detectors: Sequence[type] = DETECTORS) -> dict[str, np.ndarray]:
    """Scores of the ``horizon`` seconds after a change of ``kind`` (bucket 0 = first bucket after it)."""
    rng = np.random.default_rng(seed)
    base, change = CHANGES[kind]
    setup = make_setup(base, cfg)
    before = LAWS[base](cfg.pool, rng)
    pools = [make_pool(setup, before), make_pool(setup, change(before, rng))]
    at = cfg.n_recent + cfg.n_reference + round(warmup / cfg.bucket)
    n = at + round(horizon / cfg.bucket)
    scores = run_stream(setup, pools, at, n, rate, cfg, rng, score_from=at, detectors=detectors)
    return {k: v[at:] for k, v in scores.items()}


# -- metrics -----------------------------------------------------------------------------------------------------


def threshold_grid(stationary: Sequence[np.ndarray], extra: Sequence[float] = ()) -> np.ndarray:
    """Candidate thresholds: upper quantiles of the pooled stationary scores, a few above their max, ``extra``."""
    pooled = np.concatenate([s[np.isfinite(s)] for s in stationary])
    q = np.quantile(pooled, 1 - np.logspace(-0.3, -6, 80))
    top = pooled.max() * np.array([1.02, 1.1, 1.25, 1.5, 2, 3, 5, 10])
    return np.unique(np.concatenate([q, top, extra]))


def false_alarms_per_day(scores: np.ndarray, thresholds: np.ndarray, bucket: float) -> np.ndarray:
    """Rising edges of ``score > threshold`` per simulated day (scored buckets only), for each threshold."""
    s = scores[np.isfinite(scores)]
    days = len(s) * bucket / DAY
    return np.array([rising_edges(s, t) / days for t in thresholds])


def delays(post: np.ndarray, thresholds: np.ndarray, bucket: float) -> np.ndarray:
    """(threshold, trial) delay in seconds to the first bucket after the change above the threshold; NaN = missed.

    ``post`` is (trials, buckets), bucket 0 ending ``bucket`` seconds after the change.
    """
    out = np.full((len(thresholds), len(post)), np.nan)
    s = np.nan_to_num(post, nan=-np.inf)
    for i, t in enumerate(thresholds):
        above = s > t
        hit = above.any(axis=1)
        out[i, hit] = (np.argmax(above[hit], axis=1) + 1) * bucket
    return out


def summarise_delays(d: np.ndarray, horizon: float) -> dict[str, list[float]]:
    """Per threshold: median delay over the trials that alarmed (NaN if none), the miss rate, and the median
    over all trials with a miss counted as ``horizon`` (the curve plotted: it does not hide misses)."""
    miss = np.mean(np.isnan(d), axis=1)
    med = np.array([np.median(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan for r in d])
    censored = np.median(np.where(np.isnan(d), horizon, d), axis=1)
    return {"median_delay_s": med.tolist(), "miss_rate": miss.tolist(),
            "median_delay_misses_as_horizon_s": censored.tolist()}


def operating_index(fa: np.ndarray, limit: float = 1.0) -> int:
    """Index of the smallest threshold whose false alarms/day (max over streams, rows of ``fa``) are ≤ ``limit``."""
    ok = np.nonzero(np.max(fa, axis=0) <= limit)[0]
    return int(ok[0]) if ok.size else fa.shape[1] - 1


# -- the run -----------------------------------------------------------------------------------------------------


def evaluate(rates: Sequence[float], datasets: Sequence[str], kinds: Sequence[str], days: float, trials: int,
             cfg: Config, warmup: float, horizon: float, jobs: int = 1, raw_days: float | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict:
    """All curves: per rate and detector, thresholds, false alarms/day per dataset, delay and miss per kind."""
    result: dict = {"rates": {}}
    names = [cls.name for cls in DETECTORS]
    with concurrent.futures.ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        run = pool.map if pool is not None else map
        for rate in rates:
            stat = dict(zip(datasets, run(stationary_scores, datasets, [rate] * len(datasets),
                                           [days] * len(datasets), [cfg] * len(datasets),
                                           [11 + i for i in range(len(datasets))],
                                           [raw_days] * len(datasets)), strict=True))
            log(f"rate {rate:g}: stationary done")
            tasks = [(k, s) for k in kinds for s in range(trials)]
            done = list(run(change_scores, [k for k, _ in tasks], [rate] * len(tasks), [cfg] * len(tasks),
                            [1000 + s for _, s in tasks], [warmup] * len(tasks), [horizon] * len(tasks)))
            post = {k: [d for (kk, _), d in zip(tasks, done, strict=True) if kk == k] for k in kinds}
            log(f"rate {rate:g}: changes done")
            result["rates"][f"{rate:g}"] = curves_for_rate(names, datasets, kinds, stat, post, cfg)
    return result


def curves_for_rate(names: Sequence[str], datasets: Sequence[str], kinds: Sequence[str],
                    stat: dict[str, dict[str, np.ndarray]], post: dict[str, list[dict[str, np.ndarray]]],
                    cfg: Config) -> dict:
    """Per detector: threshold grid, false alarms/day per dataset, delay/miss curves per kind, operating index."""
    per_det = {}
    for name in names:
        extra = [5.0] if name.startswith("ours") else []
        grid = threshold_grid([stat[ds][name] for ds in datasets], extra)
        fa = np.stack([false_alarms_per_day(stat[ds][name], grid, cfg.bucket) for ds in datasets])
        curves = {}
        for k in kinds:
            scores = np.stack([p[name] for p in post[k]])
            curves[k] = summarise_delays(delays(scores, grid, cfg.bucket), scores.shape[1] * cfg.bucket)
        i = operating_index(fa)
        per_det[name] = {"thresholds": grid.tolist(), "false_alarms_per_day": dict(zip(datasets, fa.tolist(),
                         strict=True)), "changes": curves, "operating_index": i}
    return per_det


def fmt_point(curves: dict, i: int) -> str:
    """``median delay s (miss %)`` at threshold index ``i``."""
    med, miss = curves["median_delay_s"][i], curves["miss_rate"][i]
    text = "–" if med is None or not np.isfinite(med) else f"{med:.0f} s"
    return text + (f" (miss {miss:.0%})" if miss else "")


def operating_table(result: dict, kinds: Sequence[str]) -> str:
    """Markdown: per rate and detector, the ≤ 1 FA/day threshold and its delay/miss per change kind."""
    rows = []
    for rate, per_det in result["rates"].items():
        for name, r in per_det.items():
            i = r["operating_index"]
            fa = max(v[i] for v in r["false_alarms_per_day"].values())
            rows.append([rate, name, f"{r['thresholds'][i]:.3g}", f"{fa:.2f}",
                         *[fmt_point(r["changes"][k], i) for k in kinds]])
    return markdown_table(["rate (rec/s)", "detector", "threshold", "max FA/day", *kinds], rows)


def plot(result: dict, kinds: Sequence[str], path: Path) -> None:
    """Median delay (misses counted as the horizon) vs false alarms/day (max over stationary streams), one panel
    per change kind, a line per detector and rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    fig, axes = plt.subplots(math.ceil(len(kinds) / cols), cols, figsize=(15, 4.5 * math.ceil(len(kinds) / cols)),
                             squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, k in zip(axes.flat, kinds, strict=False):
        for ri, (rate, per_det) in enumerate(result["rates"].items()):
            for di, (name, r) in enumerate(per_det.items()):
                fa = np.max(np.array(list(r["false_alarms_per_day"].values())), axis=0)
                med = np.array(r["changes"][k]["median_delay_misses_as_horizon_s"], dtype=float)
                ax.plot(np.maximum(fa, 1e-2), med, styles[ri % 4], color=f"C{di}",
                        label=f"{name} @ {rate}/s")
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", yscale="log", title=k, xlabel="false alarms / day (0 plotted at 0.01)",
               ylabel="median delay (s), a miss counted as the horizon")
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def json_safe(x: object) -> object:
    """NaN/inf → None, recursively (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_safe(v) for v in x]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="0.25 days, 5 trials, rates 10,100")
    ap.add_argument("--days", type=float, default=7.0, help="stationary days per dataset and rate")
    ap.add_argument("--trials", type=int, default=20, help="seeded trials per change kind and rate")
    ap.add_argument("--rates", default="10,100,1000")
    ap.add_argument("--datasets", default=",".join(LAWS))
    ap.add_argument("--kinds", default=",".join(CHANGES))
    ap.add_argument("--warmup", type=float, default=300.0)
    ap.add_argument("--horizon", type=float, default=1800.0, help="seconds after a change; no alarm = missed")
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=4096)
    ap.add_argument("--raw-every", type=int, default=6)
    ap.add_argument("--raw-days", type=float, default=None,
                    help="stationary days scored by the raw-data detectors (default: --days)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = ap.parse_args()
    if args.quick:
        args.days, args.trials, args.rates, args.raw_days = 0.25, 5, "10,100", None
    cfg = Config(m=args.m, pool=args.pool, raw_every=args.raw_every)
    rates = [float(r) for r in args.rates.split(",")]
    datasets, kinds = args.datasets.split(","), args.kinds.split(",")
    started = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - started:.0f} s] {s}", flush=True)  # noqa: E731
    result = evaluate(rates, datasets, kinds, args.days, args.trials, cfg, args.warmup, args.horizon,
                      args.jobs, args.raw_days, log=log)
    wall = time.perf_counter() - started
    result["config"] = {**dataclasses.asdict(cfg), **vars(args), "wall_seconds": wall}
    (DOCS / "drift_eval.json").write_text(json.dumps(json_safe(result), indent=1))
    plot(result, kinds, ROOT / "docs" / "img" / "drift_eval.png")
    write_report("drift_eval", "Drift detectors at equal false-alarm rate: delay and misses per change kind",
                 report_body(args, cfg, datasets, kinds, result, wall),
                 "python bench/drift_eval.py " + " ".join(sys.argv[1:]))


def report_body(args: argparse.Namespace, cfg: Config, datasets: Sequence[str], kinds: Sequence[str],
                result: dict, wall: float) -> str:
    """The markdown report: the run's configuration and the equal-false-alarm table."""
    raw_days = args.days if args.raw_days is None else args.raw_days
    return (
        f"{'Quick run' if args.quick else 'Run'}: {args.days:g} stationary days per dataset "
        f"({', '.join(datasets)}) and rate ({raw_days:g} of them scored by the raw-data detectors exact_mmd and "
        f"ks_chi2, evaluated every {cfg.raw_every} buckets), {args.trials} seeded trials per change kind and rate, "
        f"horizon {args.horizon:g} s, m = {cfg.m}, pool of {cfg.pool} rows; wall time {wall:.0f} s with "
        f"{args.jobs} process(es). Windows {cfg.recent:g} s recent vs {cfg.reference:g} s reference, "
        f"{cfg.bucket:g} s buckets.\n\n"
        "At each detector's smallest threshold with ≤ 1 false alarm per simulated day on every stationary stream: "
        "median delay after the change (over the trials that alarmed within the horizon) and miss rate. Curves "
        "over all thresholds in docs/bench/drift_eval.json, plot in docs/img/drift_eval.png; streams, changes and "
        "detectors are described in the module docstring of bench/drift_eval.py.\n\n"
        + operating_table(result, kinds) + "\n"
    )

if __name__ == "__main__":
    main()
