"""Cost against N: sketchgen vs exact minibatch MMD (GMMN) vs full-data MMD, same machine, one run.

For N records of the spiral (2-D), each (method, N) runs in its own child process, so the
peak resident set size (``getrusage``) belongs to that run alone:

* **sketch** (sketchgen): one pass over the stream in chunks of 10⁵ records (generated, sketched,
  dropped; m = 1000, adapted-radius law, σ estimated on a 5000-row pilot), then the ``sketchgen fit``
  recipe (128-128-128 generator, batch 1000, Adam lr 3·10⁻³ cosine-annealed, smoothed start).
* **gmmn**: the data is kept (float32, standardised like the sketch); each step draws b = 256
  real rows and b generated ones (``--batch-gmmn``; b = 1000 was 20× slower per step and worse
  at equal time, see docs/beyond_paper.md) and descends the biased MMD² with the evaluation's mixture of five
  Gaussian kernels; same generator, Adam and schedule.
* **full**: each step compares *all* N real rows with b_full generated ones (chunked exact
  gradient, no graph kept), same kernels. Trained only up to ``--full-max``; above it one step is
  timed (``--probe-steps``) and the time to the target extrapolated from the steps the largest
  trained N needed.

Every run trains for ``--budget`` seconds of wall time; the clock stops while the model is
scored (MMD ratio of 2000 samples against 2000 fresh points of the true law) every ``--every``
seconds. Reported: the data pass (generate + sketch, or generate + store), time per step,
training time to MMD ratio ≤ ``--target``, peak RSS above the process's RSS after imports, and
a plot of ratio against wall time (data pass + training) per N.

Run: ``.venv/bin/python bench/vs_exact_mmd.py`` (defaults reproduce docs/beyond_paper.md;
``--ns 100000 --budget 20`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._beyond import (  # noqa: E402
    BATCH,
    IMG,
    LR,
    TORCH_THREADS,
    Curve,
    adam_step,
    bandwidths,
    full_data_surrogate,
    generator_config,
    mixture_mmd2,
    peak_rss_bytes,
    ratio,
    rss_bytes,
    setup_torch,
    train_timed,
)
from bench._report import markdown_table, write_report  # noqa: E402
from learner.generator import Generator  # noqa: E402
from learner.trainer import TrainConfig, Trainer  # noqa: E402
from sketch_store.pilot import spec_from_pilot  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402
from sketchgen.datasets import make_dataset  # noqa: E402

DATASET = "spiral"
CHUNK = 100_000
METHODS = ("sketch", "gmmn", "full")
SCHEDULE = TrainConfig(batch=BATCH, lr=LR, anneal=True)  # the cosine learning rate all three methods follow
MB = 1024 * 1024


def chunks(n: int):
    """The N-record stream as chunks of at most :data:`CHUNK` rows (chunk k drawn from seed k)."""
    for k, start in enumerate(range(0, n, CHUNK)):
        yield make_dataset(DATASET, min(CHUNK, n - start), seed=k)


def pilot_spec() -> SketchSpec:
    """The spec every method shares (standardisation; σ for the sketch) from the first 5000 rows."""
    return spec_from_pilot(make_dataset(DATASET, 5000, seed=0), m=1000, seed=0)


def evaluator(sample: Callable[[int], np.ndarray]) -> Callable[[], float]:
    """``evaluate()`` scoring ``sample(n)`` (original units) against fresh points of the true law."""
    reference = make_dataset(DATASET, 2000, seed=999_999)
    return lambda: ratio(reference, sample(2000))


def sketch_trainer(spec: SketchSpec, n: int):
    """``(data pass s, RSS after it, step(progress), sample(k))`` for sketchgen: one pass, data dropped."""
    t0 = time.perf_counter()
    sketch = Sketch.empty(spec)
    for x in chunks(n):
        sketch = sketch.merge(Sketch.from_data(spec, x))
    data_s, data_rss = time.perf_counter() - t0, rss_bytes()
    trainer = Trainer(spec, generator_config(2), TrainConfig(batch=BATCH, lr=LR, seed=0, anneal=True))
    trainer.set_target(sketch)

    def step(progress: float) -> None:
        trainer._set_lr(SCHEDULE.lr_at(progress))
        trainer.step(SCHEDULE.tau_at(progress))

    return data_s, data_rss, step, lambda k: trainer.sample(k, seed=1)


def load_data(spec: SketchSpec, n: int) -> torch.Tensor:
    """The N records, standardised, stored as one float32 tensor (what (b) and (c) must keep)."""
    data = torch.empty(n, spec.d, dtype=torch.float32)
    start = 0
    for x in chunks(n):
        data[start : start + len(x)] = torch.from_numpy(spec.standardize(x).astype(np.float32))
        start += len(x)
    return data


def exact_trainer(spec: SketchSpec, n: int, batch_gen: int, full: bool):
    """``(data pass s, RSS after it, step(progress), sample(k))`` for GMMN (``full=False``) or full-data MMD."""
    t0 = time.perf_counter()
    data = load_data(spec, n)
    data_s, data_rss = time.perf_counter() - t0, rss_bytes()
    h = bandwidths(data[:5000].numpy().astype(np.float64))
    torch.manual_seed(0)
    generator = Generator(generator_config(spec.d))
    optimizer = torch.optim.Adam(generator.parameters(), lr=LR)
    rng = torch.Generator().manual_seed(1)

    def step(progress: float) -> None:
        y = generator(torch.randn(batch_gen, generator.config.latent, generator=rng))
        if full:
            loss = full_data_surrogate(data, y, h)
        else:
            x = data[torch.randint(n, (batch_gen,), generator=rng)]
            loss = mixture_mmd2(x, y, h)
        adam_step(generator, optimizer, loss, SCHEDULE.lr_at(progress))

    def sample(k: int) -> np.ndarray:
        with torch.no_grad():
            y = generator.sample(k, generator=torch.Generator().manual_seed(1)).numpy().astype(np.float64)
        return spec.unstandardize(y)

    return data_s, data_rss, step, sample


def child(method: str, n: int, args: argparse.Namespace) -> dict[str, object]:
    """Run one (method, N) and return its measurements (called in a fresh process)."""
    setup_torch()
    spec = pilot_spec()
    base = rss_bytes()
    out: dict[str, object] = {"method": method, "n": n, "base_rss": base}
    full = method == "full"
    if method == "sketch":
        data_s, data_rss, step, sample = sketch_trainer(spec, n)
    else:
        data_s, data_rss, step, sample = exact_trainer(spec, n, args.batch_full if full else args.batch_gmmn, full)
    out["data_rss"] = data_rss - base
    if full and n > args.full_max:
        times = []
        for _ in range(args.probe_steps):
            t0 = time.perf_counter()
            step(0.0)
            times.append(time.perf_counter() - t0)
        curve = Curve(steps=len(times), seconds=sum(times))
        out["probe"] = True
    else:
        curve = train_timed(step, evaluator(sample), args.budget, args.every)
    out.update(data_s=data_s, steps=curve.steps, seconds=curve.seconds, points=curve.points,
               peak_rss=peak_rss_bytes())
    return out


def spawn(method: str, n: int, args: argparse.Namespace) -> dict[str, object]:
    """Run :func:`child` in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, __file__, "--child", method, "--ns", str(n), "--budget", str(args.budget),
           "--every", str(args.every), "--batch-full", str(args.batch_full), "--batch-gmmn", str(args.batch_gmmn),
           "--full-max", str(args.full_max), "--probe-steps", str(args.probe_steps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    print(f"{method:6s} N={n:>9,d}: {result['steps']} steps, data pass {result['data_s']:.1f}s, "
          f"peak RSS {result['peak_rss'] / MB:.0f} MiB, process {result['process_s']:.0f}s", file=sys.stderr)
    return result


def fmt_time(t: float | None) -> str:
    return "not reached" if t is None else f"{t:.1f}"


def rows_for(results: list[dict[str, object]], target: float) -> list[list[object]]:
    """Table rows; a probed full-data run extrapolates from the largest trained full-data run's steps."""
    trained_full = [r for r in results if r["method"] == "full" and not r.get("probe")]
    ref = max(trained_full, key=lambda r: r["n"]) if trained_full else None
    rows = []
    for r in results:
        curve = Curve(points=[tuple(p) for p in r["points"]], steps=r["steps"], seconds=r["seconds"])
        t_target = curve.time_to(target)
        final = f"{curve.points[-1][1]:.2f}" if curve.points else "—"
        if r.get("probe"):
            reach, final = extrapolate(ref, curve.seconds_per_step, target), "(steps timed only)"
        else:
            reach = fmt_time(t_target)
        rows.append([
            r["method"], f"{r['n']:,}", f"{r['data_s']:.1f}", r["steps"], f"{1000 * curve.seconds_per_step:.1f}",
            reach, final, f"{r['data_rss'] / MB:.0f}", f"{r['peak_rss'] / MB:.0f}",
            f"{(r['peak_rss'] - r['base_rss']) / MB:.0f}",
        ])
    return rows


def extrapolate(ref: dict[str, object] | None, seconds_per_step: float, target: float) -> str:
    """Training time to ``target`` at this step time, given the steps the reference full-data run needed."""
    if ref is None:
        return "—"
    ref_curve = Curve(points=[tuple(p) for p in ref["points"]], steps=ref["steps"], seconds=ref["seconds"])
    ref_t = ref_curve.time_to(target)
    if ref_t is None:
        return f"> {ref_curve.steps * seconds_per_step:,.0f} (extrapolated)"
    return f"≈ {ref_t / ref_curve.seconds_per_step * seconds_per_step:,.0f} (extrapolated)"


def plot(results: list[dict[str, object]], ns: list[int], target: float, path: Path) -> None:
    """MMD ratio against wall time (data pass + training), one panel per N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ns), figsize=(4.2 * len(ns), 3.6), sharey=True, squeeze=False)
    colours = {"sketch": "tab:blue", "gmmn": "tab:orange", "full": "tab:green"}
    labels = {"sketch": "sketchgen (sketch, then train)", "gmmn": "minibatch MMD (GMMN)", "full": "full-data MMD"}
    for ax, n in zip(axes[0], ns, strict=True):
        for r in results:
            if r["n"] != n or not r["points"]:
                continue
            t = [r["data_s"] + p[0] for p in r["points"]]
            ax.plot(t, [p[1] for p in r["points"]], "o-", ms=3, color=colours[r["method"]], label=labels[r["method"]])
        ax.axhline(target, color="grey", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("wall time incl. data pass (s)")
        ax.set_title(f"N = {n:,}")
    axes[0][0].set_ylabel("MMD ratio (1 ≈ indistinguishable)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="100000,1000000,10000000", help="comma-separated record counts N")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=float, default=45.0, help="training seconds per run")
    parser.add_argument("--every", type=float, default=5.0, help="training seconds between scorings")
    parser.add_argument("--target", type=float, default=2.0, help="MMD ratio to reach")
    parser.add_argument("--batch-full", type=int, default=256, help="generated rows per full-data MMD step")
    parser.add_argument("--batch-gmmn", type=int, default=256, help="real and generated rows per GMMN step")
    parser.add_argument("--full-max", type=int, default=100_000, help="largest N at which full-data MMD trains")
    parser.add_argument("--probe-steps", type=int, default=1, help="steps timed above --full-max")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    setup_torch()
    ns = [int(float(v)) for v in args.ns.split(",")]
    if args.child:
        print(json.dumps(child(args.child, ns[0], args)))
        return
    t0 = time.perf_counter()
    results = [spawn(method, n, args) for n in ns for method in args.methods.split(",")]
    total = time.perf_counter() - t0
    IMG.mkdir(parents=True, exist_ok=True)
    plot(results, ns, args.target, IMG / "vs_exact_mmd.png")
    (ROOT / "docs" / "bench" / "vs_exact_mmd.json").write_text(json.dumps(results, indent=1))
    body = (
        f"Spiral, b = {args.batch_gmmn} (GMMN), b_full = {args.batch_full} generated rows per full-data step, "
        f"{args.budget:g} s of training per run, torch threads = {TORCH_THREADS}, target MMD ratio ≤ {args.target:g}. "
        f"Whole run: {total / 60:.1f} min.\n\n"
        + markdown_table(
            ["method", "N", "data pass (s)", "steps", "ms / step", f"train s to ratio ≤ {args.target:g}",
             "final ratio", "RSS after data pass − after imports (MiB)", "peak RSS (MiB)",
             "peak − after imports (MiB)"],
            rows_for(results, args.target),
        )
        + "\n\nPlot: `docs/img/vs_exact_mmd.png`; raw curves: `docs/bench/vs_exact_mmd.json`."
    )
    write_report("vs_exact_mmd", "sketchgen vs exact MMD training as N grows", body,
                 "python bench/vs_exact_mmd.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
