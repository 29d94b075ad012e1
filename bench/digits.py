"""Data beyond 2-D: learning scikit-learn's bundled 8×8 digits (d = 64) from a sketch.

The 1797 images (pixel values 0–16, no download) are split at random into 1257 for the
sketch and 540 held out. Each configuration sketches the 1257 training images (standardised
per pixel, as ``sketchgen sketch`` does) and trains the default generator for ``--steps``
annealed steps (the ``sketchgen fit`` recipe on a step budget); the model is scored by the MMD
ratio of 540 generated images against the held-out ones, beside the ratio of the training images
against the held-out ones (two samples of one law: the noise level) and the ratio of the generated
images against the training images (a memorising model would score lower there than on held-out).

Configurations: m grows (adapted-radius law at the estimated σ), then at ``--probe-m`` σ is
scaled by ½ and 2 and the Gaussian law replaces the adapted-radius one. The best configuration's
samples go to ``docs/img/digits.png`` beside held-out images.

Run: ``.venv/bin/python bench/digits.py`` (needs the ``bench`` extra: ``pip install -e .[bench]``).
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
from sketch_store.sketch import Sketch  # noqa: E402

N_TRAIN = 1257
GRID = 10


def load_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training images, held-out images) as float64 rows of 64 pixels."""
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float64)
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[:N_TRAIN]], x[order[N_TRAIN:]]


def run_config(train: np.ndarray, held: np.ndarray, m: int, law: str, factor: float,
               steps: int) -> dict[str, object]:
    """Sketch, train and score one configuration; keeps the samples for the grid."""
    spec = design_spec(train, m, law=law, sigma_factor=factor)
    t0 = time.perf_counter()
    trainer = train_sketch(spec, Sketch.from_data(spec, train), steps)
    seconds = time.perf_counter() - t0
    samples = trainer.sample(len(held), seed=1)
    return {"m": m, "law": law, "sigma_factor": factor, "sigma": float(spec.sigma), "train_s": seconds,
            "ratio_held": ratio(held, samples, len(held)), "ratio_train": ratio(train, samples, len(held)),
            "samples": samples}


def tile(images: np.ndarray) -> np.ndarray:
    """A GRID × GRID mosaic of 8×8 images with one-pixel gaps, values clipped to [0, 16]."""
    out = np.full((GRID * 9 + 1, GRID * 9 + 1), np.nan)
    for k, img in enumerate(images[: GRID * GRID]):
        r, c = divmod(k, GRID)
        out[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = np.clip(img.reshape(8, 8), 0, 16)
    return out


def plot_grid(real: np.ndarray, generated: np.ndarray, title: str, path: Path) -> None:
    """Held-out real digits beside generated ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    for ax, images, name in ((axes[0], real, "held-out real digits"), (axes[1], generated, title)):
        ax.imshow(tile(images), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def configs(ms: list[int], probe_m: int) -> list[tuple[int, str, float]]:
    """(m, law, σ factor): the m sweep, then σ × ½, × 2 and the Gaussian law at ``probe_m``."""
    sweep = [(m, "adapted-radius", 1.0) for m in ms]
    return [*sweep, (probe_m, "adapted-radius", 0.5), (probe_m, "adapted-radius", 2.0), (probe_m, "gaussian", 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", default="300,1000,3000,10000")
    parser.add_argument("--probe-m", type=int, default=1000, help="m at which σ and the law are varied")
    parser.add_argument("--steps", type=int, default=1500, help="annealed training steps per configuration")
    args = parser.parse_args()
    setup_torch()
    train, held = load_split()
    noise = ratio(held, train, len(held))
    t0 = time.perf_counter()
    runs = []
    for m, law, factor in configs([int(v) for v in args.ms.split(",")], args.probe_m):
        runs.append(run_config(train, held, m, law, factor, args.steps))
        print({k: v for k, v in runs[-1].items() if k != "samples"}, file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    best = min(runs, key=lambda r: r["ratio_held"])
    IMG.mkdir(parents=True, exist_ok=True)
    plot_grid(held, best["samples"], f"generated from a sketch (m = {best['m']}, {best['law']},\n"
              f"σ × {best['sigma_factor']:g}); MMD ratio vs held-out {best['ratio_held']:.2f}", IMG / "digits.png")
    rows = [[r["m"], r["law"], f"{r['sigma_factor']:g} × → {r['sigma']:.3g}", f"{r['train_s']:.0f}",
             f"{r['ratio_held']:.2f}", f"{r['ratio_train']:.2f}"] for r in runs]
    (ROOT / "docs" / "bench" / "digits.json").write_text(
        json.dumps({"noise": noise, "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs]}))
    body = (
        f"{N_TRAIN} training images sketched, {len(held)} held out; {args.steps} annealed steps per configuration, "
        f"batch 1000, 128-128-128 generator, torch threads = {TORCH_THREADS}. Whole run: {total / 60:.1f} min.\n\n"
        f"Noise level (training images vs held-out images): MMD ratio **{noise:.2f}**.\n\n"
        + markdown_table(["m", "law", "σ (factor × estimate)", "train (s)", "MMD ratio vs held-out",
                          "MMD ratio vs training images"], rows)
        + "\n\nGrid of the best configuration: `docs/img/digits.png`."
    )
    command = "python bench/digits.py " + " ".join(sys.argv[1:])
    write_report("digits", "8×8 digits (d = 64) from a sketch", body, command)


if __name__ == "__main__":
    main()
