"""Throughput of the NumPy feature map (vectors/s) against a naive float64 cos/sin baseline.

Baseline: ``P = s(X) @ Ω`` in float64, ``np.cos(P).sum(0)``, ``np.sin(P).sum(0)`` on the
whole array at once. Ours: :meth:`sketch_store.FeatureMap.feature_sum` (chunked, float32
cos/sin, float64 accumulation). Both run in the same process on the same data; the table
reports the best of several repeats and the ratio.

Run: ``.venv/bin/python bench/feature_throughput.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import markdown_table, write_report
from sketch_store.features import FeatureMap
from sketch_store.spec import SketchSpec


def naive_sum(spec: SketchSpec, x: np.ndarray) -> np.ndarray:
    phases = spec.standardize(x) @ spec.omega
    return np.concatenate([np.cos(phases).sum(axis=0), np.sin(phases).sum(axis=0)]) / np.sqrt(spec.m)


def best_rate(fn, x: np.ndarray, repeats: int = 5) -> float:
    fn(x[:1000])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return x.shape[0] / best


def main() -> None:
    rows = []
    for d, n in ((2, 200_000), (64, 50_000)):
        m = 1000
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, d))
        spec = SketchSpec.create(d=d, m=m, law="adapted-radius", sigma=1.0, seed=0)
        fmap = FeatureMap(spec)
        ours = best_rate(lambda a, f=fmap: f.feature_sum(a), x)
        base = best_rate(lambda a, s=spec: naive_sum(s, a), x)
        err = np.max(np.abs(fmap.feature_sum(x)[0] - naive_sum(spec, x))) / n
        rows.append([d, m, n, f"{base:,.0f}", f"{ours:,.0f}", f"{ours / base:.2f}×", f"{err:.1e}"])
    body = markdown_table(
        ["d", "m", "N", "naive float64 (vectors/s)", "FeatureMap (vectors/s)", "ratio", "max abs error of z"], rows
    )
    write_report("feature_throughput", "NumPy feature map throughput", body, "python bench/feature_throughput.py")


if __name__ == "__main__":
    main()
