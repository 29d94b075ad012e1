"""How large must the sketch be? MMD ratio against m for the paper's datasets and a 10-d mixture.

For each dataset (spiral, 2-D Gaussian mixture, circle — N = 10⁵ points in the unit ball — and
a 10-d mixture of five Gaussians, N = 10⁵) and each m, the data is sketched with the defaults of
``sketchgen sketch`` except m (adapted-radius law, σ estimated on standardised data) and the
default generator is trained for a fixed number of annealed steps (``--steps``, the ``sketchgen
fit`` recipe on a step budget, so every m gets the same optimisation). The model is scored by the
MMD ratio of 3000 samples against 3000 fresh points of the true law, beside the ratio of a
second fresh sample (the noise level). Steps per second are reported too: a step costs more as m
grows, which is the price of a larger sketch.

Run: ``.venv/bin/python bench/sketch_size.py`` (defaults reproduce docs/beyond_paper.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._beyond import IMG, TORCH_THREADS, design_spec, ratio, setup_torch, train_sketch  # noqa: E402
from bench._report import markdown_table, write_report  # noqa: E402
from sketch_store.pilot import DEFAULT_M  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402
from sketchgen.datasets import gmm, make_dataset  # noqa: E402

N_DATA = 100_000
N_EVAL = 3000
DATASETS = ("spiral", "gmm", "circle", "gmm10")


def draw(name: str, n: int, seed: int) -> np.ndarray:
    """``n`` points of ``name``; ``gmm10`` is :func:`sketchgen.datasets.gmm` in d = 10 (same mixture each call)."""
    if name == "gmm10":
        return gmm(n, np.random.default_rng(seed), d=10)
    return make_dataset(name, n, seed=seed)


def run_one(name: str, m: int, steps: int, data: np.ndarray, fresh: np.ndarray) -> dict[str, float]:
    """Sketch ``data`` at size ``m``, train, and score against ``fresh``."""
    spec = design_spec(data, m)
    sketch = Sketch.from_data(spec, data)
    t0 = time.perf_counter()
    trainer = train_sketch(spec, sketch, steps)
    seconds = time.perf_counter() - t0
    return {"m": m, "sigma": float(spec.sigma), "ratio": ratio(fresh, trainer.sample(N_EVAL, seed=1), N_EVAL),
            "steps_per_s": steps / seconds}


def plot(results: dict[str, list[dict[str, float]]], noise: dict[str, float], path: Path) -> None:
    """MMD ratio against m, one line per dataset, noise levels dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for name, rows in results.items():
        line, = ax.plot([r["m"] for r in rows], [r["ratio"] for r in rows], "o-", label=name)
        ax.axhline(noise[name], color=line.get_color(), ls=":", lw=1)
    ax.axvline(DEFAULT_M, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sketch size m (frequencies)")
    ax.set_ylabel("MMD ratio vs fresh data (dotted: two fresh samples)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--ms", default="100,300,1000,3000", help="sketch sizes (the docs add 10000)")
    parser.add_argument("--steps", type=int, default=1500, help="annealed training steps per run")
    args = parser.parse_args()
    setup_torch()
    ms = [int(v) for v in args.ms.split(",")]
    results: dict[str, list[dict[str, float]]] = {}
    noise: dict[str, float] = {}
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        data, fresh = draw(name, N_DATA, 0), draw(name, N_EVAL, 1000)
        noise[name] = ratio(fresh, draw(name, N_EVAL, 2000), N_EVAL)
        results[name] = []
        for m in ms:
            results[name].append(run_one(name, m, args.steps, data, fresh))
            print(name, results[name][-1], file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    IMG.mkdir(parents=True, exist_ok=True)
    plot(results, noise, IMG / "sketch_size.png")
    (ROOT / "docs" / "bench" / "sketch_size.json").write_text(json.dumps({"results": results, "noise": noise}))
    table = markdown_table(
        ["dataset", "noise level", *[f"m = {m}" for m in ms]],
        [[name, f"{noise[name]:.2f}", *[f"{r['ratio']:.2f}" for r in rows]] for name, rows in results.items()],
    )
    speed = markdown_table(
        ["dataset", "σ", *[f"m = {m}" for m in ms]],
        [[name, f"{rows[0]['sigma']:.3g}", *[f"{r['steps_per_s']:.0f}" for r in rows]]
         for name, rows in results.items()],
    )
    body = (
        f"{args.steps} annealed steps per run, batch 1000, 128-128-128 generator, torch threads = {TORCH_THREADS}. "
        f"Whole run: {total / 60:.1f} min.\n\n## MMD ratio against 3000 fresh points\n\n{table}\n\n"
        f"## Training steps per second\n\n{speed}\n\nPlot: `docs/img/sketch_size.png`."
    )
    write_report("sketch_size", "Quality against sketch size m", body, "python bench/sketch_size.py "
                 + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
