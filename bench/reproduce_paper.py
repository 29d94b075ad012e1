"""Reproduce the paper's experiment (docs/results.md) and measure our default configuration.

For each of the three datasets (spiral, Gaussian mixture, circle; N = 10⁵ points in the
unit ball):

* **paper settings**: m = 10 000 frequencies, folded-Gaussian law, σ² = 10⁻³, raw units;
  generator k = 10, seven hidden layers of 10 units, LeakyReLU(0.2); batches of 1000;
  Adam. Run twice for ``--seconds`` (default 60): with the authors' Adam defaults
  (lr 10⁻³, constant) and with our schedule (lr 3·10⁻², cosine-annealed, smoothed start).
  We log the paper's loss form, the unsquared ‖z_X − ẑ_batch‖ at batch 1000, and the
  wall time at which its running mean (50 steps) first reaches the authors' "good run"
  level 0.04.
* **our defaults**: exactly ``sketchgen sketch DATA --out S.npz`` then
  ``sketchgen fit S.npz --out MODEL --seconds 60``, run through the command line.

Every model is judged on 5000 fresh samples of the true law: the MMD ratio (≈ 1 means
indistinguishable, see learner.evaluation) and the sliced Wasserstein distance, next to
the same numbers for a second fresh sample of the data (the noise level). Fig. 2-style
PNGs go to docs/img/.

Run: ``.venv/bin/python bench/reproduce_paper.py [--seconds 60] [--datasets spiral,gmm,circle]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import markdown_table, write_report  # noqa: E402
from learner.checkpoint import load_model_dir  # noqa: E402
from learner.evaluation import mmd_ratio, sliced_wasserstein  # noqa: E402
from learner.generator import GeneratorConfig  # noqa: E402
from learner.trainer import TrainConfig, Trainer  # noqa: E402
from sketch_store.sketch import Sketch, load_sketch  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402
from sketchgen.datasets import make_dataset  # noqa: E402
from sketchgen.plotting import plot_histograms  # noqa: E402

IMG = ROOT / "docs" / "img"
N_DATA = 100_000
N_EVAL = 5000
GOOD_RUN = 0.04
PAPER_GENERATOR = GeneratorConfig(latent=10, hidden=(10,) * 7, output=2, slope=0.2)
PAPER_RUNS = {
    "paper, Adam defaults": TrainConfig(batch=1000, lr=1e-3, seed=0),
    "paper, our schedule": TrainConfig(batch=1000, lr=3e-2, seed=0, anneal=True, smooth_tau=0.0),
}


def paper_spec() -> SketchSpec:
    return SketchSpec.create(d=2, m=10_000, law="folded-gaussian", sigma=np.sqrt(1e-3), seed=0)


def batch_loss(trainer: Trainer, batches: int = 20) -> float:
    """Mean unsquared ‖z_X − ẑ_batch‖ over fresh batches (no training)."""
    values = []
    with torch.no_grad():
        for _ in range(batches):
            y = trainer.generator.sample(trainer.config.batch, generator=trainer.rng)
            values.append(float(torch.linalg.vector_norm(trainer._z_data - trainer.fmap.batch_sketch(y))))
    return float(np.mean(values))


def run_paper(name: str, x: np.ndarray, config: TrainConfig, seconds: float) -> dict[str, object]:
    spec = paper_spec()
    start = time.perf_counter()
    sketch = Sketch.from_data(spec, x)
    sketch_seconds = time.perf_counter() - start
    trainer = Trainer(spec, PAPER_GENERATOR, config)
    trainer.set_target(sketch)
    recent: deque[float] = deque(maxlen=50)
    reached: list[float] = []
    t0 = time.perf_counter()

    def watch(step: int, value) -> None:
        recent.append(value.unsquared)
        if not reached and len(recent) == recent.maxlen and np.mean(recent) <= GOOD_RUN:
            reached.append(time.perf_counter() - t0)

    result = trainer.train(seconds=seconds, callback=watch)
    return {
        "sketch_s": sketch_seconds,
        "train_s": result.seconds,
        "steps": result.steps,
        "loss": batch_loss(trainer),
        "t_good": reached[0] if reached else None,
        "samples": trainer.sample(N_EVAL, seed=1),
    }


def run_defaults(name: str, x: np.ndarray, seconds: float, workdir: Path) -> dict[str, object]:
    data = workdir / f"{name}.npy"
    np.save(data, x)
    cli = [sys.executable, "-m", "sketchgen", "-q"]
    t0 = time.perf_counter()
    subprocess.run([*cli, "sketch", str(data), "--out", str(workdir / f"{name}.npz")], check=True)
    sketch_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run(
        [*cli, "fit", str(workdir / f"{name}.npz"), "--out", str(workdir / name), "--seconds", str(seconds)],
        check=True, stdout=subprocess.DEVNULL,
    )
    fit_seconds = time.perf_counter() - t1
    spec, _ = load_sketch(workdir / f"{name}.npz")
    ckpt = load_model_dir(workdir / name)
    return {
        "sketch_s": sketch_seconds,
        "train_s": fit_seconds,
        "steps": ckpt.steps,
        "m": spec.m,
        "law": spec.law,
        "sigma": float(spec.sigma),
        "samples": ckpt.sample(N_EVAL, seed=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--datasets", default="spiral,gmm,circle")
    args = parser.parse_args()
    IMG.mkdir(parents=True, exist_ok=True)
    paper_rows, default_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            x = make_dataset(name, N_DATA, seed=0)
            fresh = make_dataset(name, N_EVAL, seed=1000)
            noise = make_dataset(name, N_EVAL, seed=2000)
            null_ratio = mmd_ratio(fresh, noise).ratio
            null_sw = sliced_wasserstein(fresh, noise)
            panels = [("data", fresh)]
            for label, config in PAPER_RUNS.items():
                r = run_paper(name, x, config, args.seconds)
                panels.append((label, r["samples"]))
                t_good = r["t_good"]
                paper_rows.append([
                    name, label, f"{r['sketch_s']:.1f}", f"{r['train_s']:.0f}", r["steps"],
                    f"{r['loss']:.4f}", "not reached" if t_good is None else f"{t_good:.1f}",
                    f"{mmd_ratio(fresh, r['samples']).ratio:.2f}", f"{sliced_wasserstein(fresh, r['samples']):.4f}",
                    f"{null_ratio:.2f} / {null_sw:.4f}",
                ])
            r = run_defaults(name, x, args.seconds, Path(tmp))
            panels.append(("our defaults", r["samples"]))
            default_rows.append([
                name, r["m"], r["law"], f"{r['sigma']:.3g}", f"{r['sketch_s']:.1f}", f"{r['train_s']:.0f}",
                r["steps"], f"{mmd_ratio(fresh, r['samples']).ratio:.2f}",
                f"{sliced_wasserstein(fresh, r['samples']):.4f}", f"{null_ratio:.2f} / {null_sw:.4f}",
            ])
            plot_histograms(panels, IMG / f"paper_{name}.png")
    body = (
        "## Paper settings (m = 10 000, folded Gaussian, σ² = 10⁻³, 7×10 generator, batch 1000)\n\n"
        + markdown_table(
            ["dataset", "optimiser", "sketch (s)", "train (s)", "steps", "‖z − ẑ_batch‖ at end",
             f"time to ≤ {GOOD_RUN} (s)", "MMD ratio", "sliced W₂", "noise: ratio / SW₂"],
            paper_rows,
        )
        + "\n\n## Our defaults (`sketchgen sketch` then `sketchgen fit --seconds "
        + f"{args.seconds:g}`)\n\n"
        + markdown_table(
            ["dataset", "m", "law", "σ (standardised)", "sketch (s)", "fit (s)", "steps", "MMD ratio", "sliced W₂",
             "noise: ratio / SW₂"],
            default_rows,
        )
        + "\n\nFig. 2-style histograms: " + ", ".join(f"`docs/img/paper_{n}.png`" for n in args.datasets.split(","))
    )
    write_report("reproduce_paper", "Reproducing the paper", body, "python bench/reproduce_paper.py")


if __name__ == "__main__":
    main()
