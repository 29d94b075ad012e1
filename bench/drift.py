"""Drift detection: false alarms on stationary streams, delay after a change, and cost.

A stream of ``--rate`` records/s is simulated bucket by bucket, exactly as the Redis store
keeps it: every ``--bucket`` seconds (10 s, the store's fine resolution) the bucket's
feature sum and count are added. At every bucket boundary the learner's drift score is
computed with :func:`learner.drift.drift_score` from the last ``--recent`` seconds of
buckets against the ``--reference`` seconds before them (defaults 60 s vs 600 s, the
service's defaults), and compared with the service's default threshold (5). A *false
alarm* is a rising edge of ``sketchgen_drift_detected`` (0 → 1) on a stationary stream;
they are counted per simulated hour.

The baseline is a **sliding-window exact-MMD detector** on the same streams and
windows: it keeps raw records (a uniform subsample of ``--exact-recent`` records of the
recent window and ``--exact-reference`` of the reference window, because the exact
statistic is quadratic in the number of records) and computes the V-statistic MMD² with
a mixture of five Gaussian kernels over its null expectation
(:func:`learner.evaluation.mmd_ratio`, bandwidths fixed once from a pilot), with the same
threshold. Both scores are ≈ 1 under no change by construction.

Change scenarios (after ``--warmup`` seconds of the first law, so both windows are full):
spiral → circle (abrupt), spiral rotated by 15°, spiral shifted by 0.05 (5 % of the data
radius), and 20 % of records from the Gaussian mixture mixed into the spiral. The
*delay* is the time from the change to the first score above the threshold.

Run: ``.venv/bin/python bench/drift.py [--hours 3] [--exact-hours 1] [--rate 1000]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import markdown_table, write_report  # noqa: E402
from learner.drift import drift_score  # noqa: E402
from learner.evaluation import BANDWIDTH_FACTORS, mmd_ratio  # noqa: E402
from sketch_store.features import FeatureMap  # noqa: E402
from sketch_store.pilot import spec_from_pilot  # noqa: E402
from sketch_store.scale import median_heuristic  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402
from sketchgen.datasets import make_dataset  # noqa: E402

Source = Callable[[int, np.random.Generator], np.ndarray]
THRESHOLD = 5.0


def dataset(name: str) -> Source:
    """Rows of one of the demo datasets (fresh seed per call)."""
    return lambda n, rng: make_dataset(name, n, seed=int(rng.integers(2**31)))


def rotated(source: Source, degrees: float) -> Source:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    rot = np.array([[c, -s], [s, c]])
    return lambda n, rng: source(n, rng) @ rot.T


def shifted(source: Source, delta: float) -> Source:
    return lambda n, rng: source(n, rng) + np.array([delta, 0.0])


def mixed(source: Source, other: Source, fraction: float) -> Source:
    def draw(n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.binomial(n, fraction)
        rows = np.concatenate([source(n - k, rng), other(k, rng)])
        return rows[rng.permutation(n)]
    return draw


@dataclasses.dataclass
class Trace:
    """Scores of both detectors at every bucket boundary (NaN before both windows are full)."""

    times: np.ndarray
    sketch: np.ndarray
    exact: np.ndarray
    sketch_update_seconds: float
    exact_update_seconds: float
    ingest_seconds_per_record: float


class WindowedDetectors:
    """The sketch detector (bucket sums) and the exact-MMD baseline (bucket subsamples) side by side."""

    def __init__(self, spec: SketchSpec, args: argparse.Namespace, bandwidths: tuple[float, ...],
                 rng: np.random.Generator) -> None:
        self.fmap = FeatureMap(spec)
        self.spec, self.args, self.bandwidths, self.rng = spec, args, bandwidths, rng
        self.n_recent = round(args.recent / args.bucket)
        self.n_reference = round(args.reference / args.bucket)
        size = self.n_recent + self.n_reference
        self.sums: deque[tuple[np.ndarray, int]] = deque(maxlen=size)
        self.rows: deque[np.ndarray] = deque(maxlen=size)
        self.ingest_seconds = 0.0
        self.records = 0

    def add_bucket(self, rows: np.ndarray, keep: int) -> None:
        start = time.perf_counter()
        total, n = self.fmap.feature_sum(rows, validate=False)
        self.ingest_seconds += time.perf_counter() - start
        self.records += n
        self.sums.append((total, n))
        self.rows.append(rows[: min(keep, len(rows))])  # rows are i.i.d. in random order: a uniform subsample

    @property
    def full(self) -> bool:
        return len(self.sums) == self.sums.maxlen

    def sketch_score(self) -> float:
        buckets = list(self.sums)
        ref, recent = buckets[: self.n_reference], buckets[self.n_reference :]
        fp = self.spec.fingerprint
        as_sketch = lambda part: Sketch(sum(t for t, _ in part), sum(c for _, c in part), fp)  # noqa: E731
        score = drift_score(as_sketch(recent), as_sketch(ref))
        return float("nan") if score is None else score

    def exact_score(self) -> float:
        rows = list(self.rows)
        ref = np.concatenate(rows[: self.n_reference])
        recent = np.concatenate(rows[self.n_reference :])
        return mmd_ratio(ref, recent, bandwidths=self.bandwidths,
                         max_points=max(self.args.exact_reference, self.args.exact_recent), seed=None).ratio


def simulate(spec: SketchSpec, before: Source, after: Source | None, seconds: float, change_at: float,
             args: argparse.Namespace, bandwidths: tuple[float, ...], seed: int, exact: bool) -> Trace:
    """Run both detectors over ``seconds`` of stream; the law switches to ``after`` at ``change_at``."""
    rng = np.random.default_rng(seed)
    det = WindowedDetectors(spec, args, bandwidths, rng)
    per_bucket = args.rate * args.bucket
    keep = max(1, int(np.ceil(max(args.exact_recent / det.n_recent, args.exact_reference / det.n_reference))))
    times, s_scores, e_scores = [], [], []
    s_cost = e_cost = 0.0
    n_updates = n_exact = 0
    t = 0.0
    while t < seconds:
        t += args.bucket
        source = after if (after is not None and t > change_at) else before
        det.add_bucket(source(int(rng.poisson(per_bucket)), rng), keep)
        if not det.full:
            continue
        start = time.perf_counter()
        s_scores.append(det.sketch_score())
        s_cost += time.perf_counter() - start
        n_updates += 1
        if exact:
            start = time.perf_counter()
            e_scores.append(det.exact_score())
            e_cost += time.perf_counter() - start
            n_exact += 1
        else:
            e_scores.append(float("nan"))
        times.append(t)
    return Trace(np.array(times), np.array(s_scores), np.array(e_scores), s_cost / max(n_updates, 1),
                 e_cost / max(n_exact, 1), det.ingest_seconds / max(det.records, 1))


def rising_edges(scores: np.ndarray, threshold: float) -> int:
    """Number of 0 → 1 transitions of ``score > threshold``."""
    above = np.nan_to_num(scores, nan=0.0) > threshold
    return int(above[0]) + int(np.sum(above[1:] & ~above[:-1]))


def first_alarm_delay(trace: Trace, scores: np.ndarray, change_at: float, threshold: float) -> float | None:
    hits = np.nonzero((trace.times > change_at) & (np.nan_to_num(scores) > threshold))[0]
    return float(trace.times[hits[0]] - change_at) if hits.size else None


def fmt_delay(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    text = "–" if not got else f"{np.median(got):.0f} s (max {max(got):.0f})"
    return text + (f", missed {missed}/{len(values)}" if missed else "")


def setup(name: str, args: argparse.Namespace) -> tuple[SketchSpec, tuple[float, ...]]:
    """The stream's spec (as `sketchgen create` makes it from a pilot) and the exact detector's bandwidths."""
    pilot = make_dataset(name, 5000, seed=7)
    spec = spec_from_pilot(pilot, name=name, seed=0)
    med = median_heuristic(pilot, seed=0)
    return spec, tuple(med * f for f in BANDWIDTH_FACTORS)


def stationary(args: argparse.Namespace) -> tuple[list[list[object]], dict[str, float]]:
    rows, costs = [], {"sketch": [], "exact": [], "ingest": []}
    for name in args.datasets.split(","):
        spec, bw = setup(name, args)
        seconds = args.hours * 3600 + args.recent + args.reference
        trace = simulate(spec, dataset(name), None, seconds, np.inf, args, bw, seed=1, exact=False)
        exact_seconds = args.exact_hours * 3600 + args.recent + args.reference
        etrace = simulate(spec, dataset(name), None, exact_seconds, np.inf, args, bw, seed=2, exact=True)
        s, e = trace.sketch, etrace.exact
        rows.append([
            name, f"{args.hours:g}", f"{np.median(s):.2f}", f"{np.quantile(s, 0.99):.2f}", f"{s.max():.2f}",
            f"{rising_edges(s, THRESHOLD) / args.hours:.2f}",
            f"{args.exact_hours:g}", f"{np.median(e):.2f}", f"{np.quantile(e, 0.99):.2f}", f"{e.max():.2f}",
            f"{rising_edges(e, THRESHOLD) / args.exact_hours:.2f}",
        ])
        costs["sketch"].append(trace.sketch_update_seconds)
        costs["exact"].append(etrace.exact_update_seconds)
        costs["ingest"].append(trace.ingest_seconds_per_record)
        print(f"stationary {name}: sketch alarms {rising_edges(s, THRESHOLD)}, exact {rising_edges(e, THRESHOLD)}",
              flush=True)
    return rows, {k: float(np.median(v)) for k, v in costs.items()}


def changes(args: argparse.Namespace) -> list[list[object]]:
    spiral = dataset("spiral")
    scenarios = {
        "spiral → circle": dataset("circle"),
        "spiral rotated 15°": rotated(spiral, 15.0),
        "spiral shifted 0.05": shifted(spiral, 0.05),
        "20 % Gaussian mixture mixed in": mixed(spiral, dataset("gmm"), 0.2),
    }
    spec, bw = setup("spiral", args)
    change_at = args.recent + args.reference + args.warmup
    seconds = change_at + args.after
    rows = []
    for label, after in scenarios.items():
        delays_s, delays_e, peak_s, peak_e = [], [], [], []
        for seed in range(args.change_seeds):
            tr = simulate(spec, spiral, after, seconds, change_at, args, bw, seed=100 + seed, exact=True)
            delays_s.append(first_alarm_delay(tr, tr.sketch, change_at, THRESHOLD))
            delays_e.append(first_alarm_delay(tr, tr.exact, change_at, THRESHOLD))
            post = tr.times > change_at
            peak_s.append(np.nanmax(tr.sketch[post]))
            peak_e.append(np.nanmax(tr.exact[post]))
        rows.append([label, fmt_delay(delays_s), f"{np.median(peak_s):.3g}", fmt_delay(delays_e),
                     f"{np.median(peak_e):.3g}"])
        print(f"change {label}: sketch {fmt_delay(delays_s)}, exact {fmt_delay(delays_e)}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="spiral,gmm,circle")
    ap.add_argument("--hours", type=float, default=3.0, help="stationary hours per dataset, sketch detector")
    ap.add_argument("--exact-hours", type=float, default=1.0, help="stationary hours per dataset, exact detector")
    ap.add_argument("--rate", type=float, default=1000.0, help="records per second")
    ap.add_argument("--bucket", type=float, default=10.0)
    ap.add_argument("--recent", type=float, default=60.0)
    ap.add_argument("--reference", type=float, default=600.0)
    ap.add_argument("--exact-recent", type=int, default=1000, help="records the exact detector keeps, recent")
    ap.add_argument("--exact-reference", type=int, default=2000, help="records it keeps, reference window")
    ap.add_argument("--warmup", type=float, default=300.0, help="stationary seconds after the windows fill")
    ap.add_argument("--after", type=float, default=300.0, help="seconds simulated after the change")
    ap.add_argument("--change-seeds", type=int, default=3)
    args = ap.parse_args()

    started = time.perf_counter()
    st_rows, costs = stationary(args)
    ch_rows = changes(args)
    window_records = args.rate * (args.recent + args.reference)
    spec, _ = setup("spiral", args)
    n_buckets = round((args.recent + args.reference) / args.bucket)
    body = (
        f"Stream of {args.rate:g} records/s in {args.bucket:g} s buckets; score = last {args.recent:g} s against "
        f"the {args.reference:g} s before, updated every bucket; threshold {THRESHOLD:g} (the service default). "
        f"Exact-MMD baseline on subsamples of {args.exact_recent} recent and {args.exact_reference} reference "
        f"records (the windows hold {window_records:,.0f} records). Total bench time "
        f"{time.perf_counter() - started:.0f} s.\n\n"
        "## Stationary streams\n\n"
        + markdown_table(["data", "hours (sketch)", "median", "p99", "max", "false alarms / h",
                          "hours (exact)", "median", "p99", "max", "false alarms / h"], st_rows)
        + "\n\n## After a change\n\nDelay from the change to the first score above the threshold (median of "
        f"{args.change_seeds} runs, with the largest), and the peak score in the {args.after:g} s after it.\n\n"
        + markdown_table(["change", "sketch: delay", "sketch: peak score", "exact MMD: delay",
                          "exact MMD: peak score"], ch_rows)
        + "\n\n## Cost\n\n"
        + markdown_table(
            ["", "sketch detector", "exact-MMD detector (subsampled)"],
            [["per update (median over datasets)", f"{costs['sketch'] * 1e6:.0f} µs",
              f"{costs['exact'] * 1e3:.0f} ms"],
             ["per record ingested", f"{costs['ingest'] * 1e6:.2f} µs (features, paid once for learning too)",
              "a copy of the record (subsample kept)"],
             ["state", f"{n_buckets} buckets × 2m = {n_buckets * 2 * spec.m * 8 / 1e6:.2f} MB (m = {spec.m})",
              f"{args.exact_recent + args.exact_reference} records × d; all {window_records:,.0f} "
              "records to use the whole window"]])
        + "\n"
    )
    name = "drift" if args.rate == 1000 else f"drift_rate{args.rate:g}"
    write_report(name, f"Drift detection at {args.rate:g} records/s: false alarms, delay, cost", body,
                 "python bench/drift.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
