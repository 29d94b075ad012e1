"""Does warm start pay when the stream changes distribution?

A learner has been fitted to one distribution (``--before``, default spiral) when the
stream switches to another (``--after``, default circle). We compare, on the same spec
(the stream's, from a pilot of the *first* distribution, as in production):

* **warm**: the service's generator and Adam state after ``--pretrain`` steps on the
  first distribution, then trained on the sketch of the second;
* **scratch**: a fresh generator trained on the sketch of the second.

Both use the learner service's defaults (generator 10 → 3×128 → d, batch 1000, Adam
lr 3·10⁻³, no annealing) and are trained ``--budget`` steps. The *target loss* is the
loss the from-scratch run reaches at the end of its budget (the mean of its last
``--window`` steps' floor-corrected loss); we report the first step at which each run's
running mean over ``--window`` steps is at or below it, and the ratio of the two.
MMD ratios against fresh points of the second distribution are reported at both
crossings and at the end, so "reached the loss" also means "as good a model".

Run: ``.venv/bin/python bench/warm_start.py [--seeds 3] [--pretrain 3000] [--budget 3000]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import markdown_table, write_report  # noqa: E402
from learner.evaluation import mmd_ratio  # noqa: E402
from learner.generator import GeneratorConfig  # noqa: E402
from learner.service import LearnConfig  # noqa: E402
from learner.trainer import Trainer  # noqa: E402
from sketch_store.pilot import spec_from_pilot  # noqa: E402
from sketch_store.sketch import Sketch  # noqa: E402
from sketch_store.spec import SketchSpec  # noqa: E402
from sketchgen.datasets import DATASETS, make_dataset  # noqa: E402

N_DATA = 100_000
N_EVAL = 3000


def service_trainer(spec: SketchSpec, seed: int) -> Trainer:
    """A trainer configured exactly as ``sketchgen learn`` builds one (see LearnerService)."""
    train = LearnConfig(stream="bench").train
    gconf = GeneratorConfig(latent=10, hidden=(128, 128, 128), output=spec.d)
    return Trainer(spec, gconf, dataclasses.replace(train, seed=seed))


def loss_curve(trainer: Trainer, budget: int, chunk: int = 50) -> np.ndarray:
    """Floor-corrected loss of every step of a ``budget``-step run (chunks of ``chunk`` steps)."""
    losses: list[float] = []
    while len(losses) < budget:
        trainer.train(steps=min(chunk, budget - len(losses)),
                      callback=lambda _step, value: losses.append(value.corrected))
    return np.array(losses)


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of ``x[i − window + 1 : i + 1]`` for every ``i ≥ window − 1``."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[window:] - c[:-window]) / window


def first_reach(curve: np.ndarray, level: float, window: int) -> int | None:
    """First step (1-based) whose running mean over ``window`` steps is ≤ ``level``, or None."""
    hits = np.nonzero(running_mean(curve, window) <= level)[0]
    return int(hits[0]) + window if hits.size else None


def run_seed(before: str, after: str, seed: int, pretrain: int, budget: int, window: int) -> dict[str, object]:
    spec = spec_from_pilot(make_dataset(before, 5000, seed=100 + seed), name="bench", seed=seed)
    first = Sketch.from_data(spec, make_dataset(before, N_DATA, seed=200 + seed))
    second = Sketch.from_data(spec, make_dataset(after, N_DATA, seed=300 + seed))
    fresh = make_dataset(after, N_EVAL, seed=400 + seed)

    warm = service_trainer(spec, seed)
    warm.set_target(first)
    t0 = time.perf_counter()
    warm.train(steps=pretrain)
    pretrain_s = time.perf_counter() - t0
    warm_before = mmd_ratio(fresh, warm.sample(N_EVAL, seed=1)).ratio  # the old model judged on the new law
    warm.set_target(second)
    scratch = service_trainer(spec, seed + 1000)
    scratch.set_target(second)
    curves = {"warm": loss_curve(warm, budget), "scratch": loss_curve(scratch, budget)}
    target = float(np.mean(curves["scratch"][-window:]))
    return {
        "seed": seed,
        "target": target,
        "warm_steps": first_reach(curves["warm"], target, window),
        "scratch_steps": first_reach(curves["scratch"], target, window),
        "warm_end": float(np.mean(curves["warm"][-window:])),
        "mmd_warm_before": warm_before,
        "mmd_warm_end": mmd_ratio(fresh, warm.sample(N_EVAL, seed=2)).ratio,
        "mmd_scratch_end": mmd_ratio(fresh, scratch.sample(N_EVAL, seed=2)).ratio,
        "pretrain_seconds": pretrain_s,
        "curves": curves,
    }


def plot(results: list[dict[str, object]], window: int, before: str, after: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(results):
        for kind, color in (("warm", "tab:blue"), ("scratch", "tab:orange")):
            curve = running_mean(r["curves"][kind], window)
            ax.plot(np.arange(window, window + curve.size), curve, color=color, alpha=0.8,
                    label=f"{kind} start" if i == 0 else None)
        ax.axhline(r["target"], color="gray", lw=0.6, ls="--", label="from-scratch final loss" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel(f"steps after the switch {before} → {after}")
    ax.set_ylabel(f"loss − floor (running mean, {window} steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", choices=DATASETS, default="spiral")
    ap.add_argument("--after", choices=DATASETS, default="circle")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain", type=int, default=3000)
    ap.add_argument("--budget", type=int, default=3000)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for seed in range(args.seeds):
        r = run_seed(args.before, args.after, seed, args.pretrain, args.budget, args.window)
        results.append(r)
        print(f"seed {seed}: warm {r['warm_steps']} vs scratch {r['scratch_steps']} steps", flush=True)

    def ratio(r: dict[str, object]) -> object:
        w, s = r["warm_steps"], r["scratch_steps"]
        return "–" if w is None or s is None else round(s / w, 2)

    rows = [[r["seed"], f"{r['target']:.3g}", r["warm_steps"] or f"> {args.budget}", r["scratch_steps"],
             ratio(r), f"{r['warm_end']:.3g}", f"{r['mmd_warm_before']:.1f}", f"{r['mmd_warm_end']:.2f}",
             f"{r['mmd_scratch_end']:.2f}"] for r in results]
    img = ROOT / "docs" / "img" / f"warm_start_{args.before}_{args.after}.png"
    plot(results, args.window, args.before, args.after, img)
    body = (
        f"Stream switches {args.before} → {args.after}; spec from a pilot of {args.before}; the warm learner had "
        f"{args.pretrain} steps on {args.before}. Target = the from-scratch run's loss after {args.budget} steps "
        f"(mean of its last {args.window}); *steps* = first step whose {args.window}-step running mean of the "
        f"floor-corrected loss reaches it. MMD ratios against {N_EVAL} fresh {args.after} points "
        f"(≈ 1: indistinguishable).\n\n"
        + markdown_table(
            ["seed", "target loss", "warm: steps", "scratch: steps", "scratch / warm", "warm loss at end",
             "MMD warm, at switch", "MMD warm, end", "MMD scratch, end"],
            rows,
        )
        + f"\n\n![loss after the switch](../img/{img.name})\n"
    )
    write_report(f"warm_start_{args.before}_{args.after}", "Warm start after a distribution switch", body,
                 "python bench/warm_start.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
