"""Training steps per second of ``sketchgen fit``: this checkout against another one, interleaved.

Each measurement is a real ``python -m sketchgen fit SKETCH --out DIR --steps K`` run in a fresh
process (one torch thread), started with the checkout as its working directory so that its own
``sketchgen``/``learner``/``sketch_store`` are imported; steps/s is the ``steps`` over the ``seconds`` of
the JSON summary ``fit`` prints (the training loop alone, not the start-up). The two checkouts take
turns, A B A B …, so a change in the machine's load hits both alike; the table gives the median
steps/s of each and the median of the per-round ratios (this / other).

The sketches are made here with ``sketchgen sketch`` (default m for the dimension) on 100 000 rows:
two moons (d = 2, m = 1000) and a 10-D mixture of 5 Gaussians (m = 3000).

Run (compare with the commit before a change, in a worktree)::

    git worktree add /tmp/old HEAD~1
    nice -n 10 .venv/bin/python bench/fit_step.py --other /tmp/old --rounds 5 --steps 300
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._quality_data import DATASETS  # noqa: E402
from bench._report import markdown_table  # noqa: E402

ROWS = 100_000


def mixture10(n: int, seed: int) -> np.ndarray:
    """Five unit Gaussians in 10-D with centres ``~ N(0, 9 I)``."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(5, 10))
    return centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 10))


def run(tree: Path, *argv: str) -> str:
    """``python -m sketchgen ARGV`` with ``tree`` as the working directory (its code is imported); stdout."""
    proc = subprocess.run([sys.executable, "-m", "sketchgen", *argv], cwd=tree, capture_output=True, text=True,
                          check=False, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: sketchgen {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-400:]}")
    return proc.stdout


def steps_per_second(tree: Path, sketch: Path, steps: int, work: Path, extra: list[str]) -> float:
    """One ``fit --steps`` run of ``tree``'s code: steps over training seconds from its JSON summary."""
    out = run(tree, "fit", str(sketch), "--out", str(work / "model"), "--steps", str(steps), *extra)
    summary = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
    return summary["steps"] / summary["seconds"]


def make_sketches(work: Path) -> list[tuple[str, Path]]:
    """Sketch files (this checkout's ``sketch`` command, default m) of the two datasets."""
    out = []
    for name, x in (("moons (d=2)", DATASETS["moons"].draw(ROWS, 0)), ("mixture (d=10)", mixture10(ROWS, 0))):
        data, sketch = work / f"{len(out)}.npy", work / f"{len(out)}.npz"
        np.save(data, x)
        run(ROOT, "sketch", str(data), "--out", str(sketch))
        out.append((name, sketch))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", required=True, type=Path, help="the checkout to compare with (e.g. a worktree)")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds per sketch (default 5)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per fit run (default 300)")
    parser.add_argument("--fit-args", default="", help="extra flags for both fits, one string")
    args = parser.parse_args()
    extra = args.fit_args.split()
    from learner.generator import GeneratorConfig  # noqa: F401  (fail early outside the venv)
    from sketch_store.sketch import load_sketch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, sketch in make_sketches(work):
            spec, _ = load_sketch(sketch)
            this, other = [], []
            for _ in range(args.rounds):
                other.append(steps_per_second(args.other.resolve(), sketch, args.steps, work, extra))
                this.append(steps_per_second(ROOT, sketch, args.steps, work, extra))
            ratios = [a / b for a, b in zip(this, other, strict=True)]
            rows.append([name, spec.m, statistics.median(other), statistics.median(this), statistics.median(ratios),
                         f"{min(ratios):.3f}–{max(ratios):.3f}"])
            print(f"{name}: other {other}, this {this}", file=sys.stderr)
    print(markdown_table(["sketch", "m", f"steps/s {args.other}", "steps/s this checkout", "ratio (median)",
                          "ratio min–max"], rows))


if __name__ == "__main__":
    main()
