"""Drift per field: how often each weighting ranks the changed field first (docs/design.md §1, "Drift per field").

For d = 2, 5, 10, 20 a spec is drawn from a standard-normal pilot exactly as the product does
(:func:`sketch_store.pilot.spec_from_pilot`: multi-scale adapted-radius law), at ``--m`` frequencies. Each trial
sketches a fresh reference window (``--n-ref`` rows of N(0, I)) and a fresh recent window (``--n-recent`` rows) in
which one field (trial number mod d) changed: its mean moved by δ, or its standard deviation was multiplied by
a factor. For every weighting ``w_kj = r_kj^p`` (p = 1, 2, 3, 4, 8) and the arg-max indicator
(``w_kj = 1`` where j holds the largest share of ``ω_k``) the table gives the share of trials whose top field
is the changed one, beside the mean stream score (:func:`learner.drift.drift_score`) of the same windows.

Run: ``.venv/bin/python bench/drift_fields_ranking.py [--trials 50] [--m 1000]``
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from learner.drift import drift_score  # noqa: E402
from learner.drift_fields import column_shares, frequency_terms, weighted_ratio  # noqa: E402
from sketch_store.pilot import spec_from_pilot  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402

log = logging.getLogger("bench.drift_fields_ranking")

POWERS = (1, 2, 3, 4, 8)
CHANGES = (("mean", 0.05), ("mean", 0.1), ("mean", 0.2), ("mean", 0.4), ("std", 1.05), ("std", 1.1), ("std", 1.25),
           ("std", 1.5))


def weightings(shares: np.ndarray) -> dict[str, np.ndarray]:
    """The candidate weight matrices (m × d): ``r^p`` per power, and the arg-max indicator."""
    out = {f"p={p}": shares**p for p in POWERS}
    out["argmax"] = (shares == shares.max(axis=1, keepdims=True)).astype(np.float64)
    return out


def changed_rows(rng: np.random.Generator, n: int, d: int, field: int, kind: str, size: float) -> np.ndarray:
    """``n`` rows of N(0, I) with field ``field``'s mean moved by ``size`` or its std multiplied by it."""
    x = rng.normal(size=(n, d))
    if kind == "mean":
        x[:, field] += size
    else:
        x[:, field] *= size
    return x


def run(d: int, m: int, trials: int, n_ref: int, n_recent: int) -> list[dict[str, object]]:
    """One row per change: hit share per weighting and the mean stream score."""
    rng = np.random.default_rng(d)
    spec = spec_from_pilot(rng.normal(size=(3000, d)), m=m, seed=d)
    candidates = weightings(column_shares(spec.omega))
    rows = []
    for kind, size in CHANGES:
        hits = dict.fromkeys(candidates, 0)
        stream = []
        for t in range(trials):
            field = t % d
            reference = Sketch.from_data(spec, rng.normal(size=(n_ref, d)))
            recent = Sketch.from_data(spec, changed_rows(rng, n_recent, d, field, kind, size))
            terms = frequency_terms(recent, reference)
            stream.append(drift_score(recent, reference))
            for name, w in candidates.items():
                hits[name] += int(np.argmax(weighted_ratio(w, terms)) == field)
        rows.append({"d": d, "change": f"{kind} {'+' if kind == 'mean' else '×'}{size:g}",
                     "stream": float(np.mean(stream)), **{k: v / trials for k, v in hits.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--n-ref", type=int, default=5000)
    parser.add_argument("--n-recent", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 5, 10, 20])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [f"p={p}" for p in POWERS] + ["argmax"]
    log.info("| d | change | stream score | %s |", " | ".join(names))
    log.info("|---|---|---|%s", "---|" * len(names))
    totals = dict.fromkeys(names, 0.0)
    count = 0
    for d in args.dims:
        for row in run(d, args.m, args.trials, args.n_ref, args.n_recent):
            log.info("| %d | %s | %.1f | %s |", row["d"], row["change"], row["stream"],
                     " | ".join(f"{row[k]:.2f}" for k in names))
            count += 1
            for k in names:
                totals[k] += float(row[k])
    log.info("| all | mean share | | %s |", " | ".join(f"{totals[k] / count:.3f}" for k in names))


if __name__ == "__main__":
    main()
