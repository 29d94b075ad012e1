"""Quality suite: generators trained from a sketch with the DEFAULT commands, against GMMN and the previous defaults.

For each dataset (bench/_quality_data.py: 13 synthetic laws including the paper's three, and 5
real tables shipped in wheels) the suite trains three generators for the same training wall time
``T`` (60 s for d ≤ 5, 180 s for 5 < d ≤ 50), every process on one torch thread:

* **default** (ours): exactly what a user types, as subprocesses —
  ``sketchgen sketch TRAIN.npy --out S.npz``, ``sketchgen fit S.npz --out M --seconds T``,
  ``sketchgen sample M -n N --out F.npy`` (no other flags);
* **previous** defaults: ``sketch ... --kernel single`` (only if ``sketch --help`` lists
  ``--kernel``) and ``fit ... --hidden 128,128,128 --latent 10 --batch 1000 --lr 0.003``;
* **GMMN** (minibatch MMD, in-process): the default model's generator architecture, Adam at
  1e-3, 256 data rows + 256 generated rows per step, loss = biased MMD² with the Gaussian mixture
  kernel at (1/8 … 2) × the median distance (bench/_beyond.py's ``mixture_mmd2``/``bandwidths``),
  on data standardised with the training rows' mean and std. It sees the data; ours sees only the sketch.

Each model's samples are judged against fresh draws of the law (synthetic) or the held-out 30 %
of the table (real) by the MMD ratio and a classifier's AUC (bench/_quality_metrics.py), in the
units of the training rows standardised. Outputs: docs/bench/quality.md (tables + pass/fail
against the targets), docs/bench/quality.json, docs/img/quality.png (data / ours / GMMN /
previous, first two coordinates), or all three under ``--out-dir``. Working files (data, sketches,
models, samples, one result.json per dataset) stay in ``--workdir``.

Run: ``.venv/bin/python bench/quality.py`` (full suite, about 1.5 h on one core; needs the
``bench`` extra: ``pip install -e .[bench]``). Quick check:
``.venv/bin/python bench/quality.py --only moons,ring --seconds-low 10 --skip-gmmn --out-dir /tmp/q``.
"""

from __future__ import annotations

import os

# One thread everywhere, set before torch/NumPy load (inherited by the CLI subprocesses too).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._quality_data import DATASETS, HELD_FRACTION, Splits, splits  # noqa: E402
from bench._quality_metrics import FACTORS, classifier_auc, mmd_ratio, standardise  # noqa: E402
from bench._report import DOCS, machine, markdown_table, write_report  # noqa: E402

METHODS = ("default", "gmmn", "previous")
LABELS = {"default": "ours (defaults)", "gmmn": "GMMN", "previous": "previous defaults"}
#: The previous ``sketchgen fit`` defaults, passed explicitly.
PREVIOUS_FIT = ["--hidden", "128,128,128", "--latent", "10", "--batch", "1000", "--lr", "0.003"]
GMMN_LR = 1e-3
GMMN_BATCH = 256
#: Targets on the default's MMD ratio (at 60 s for d ≤ 5, 180 s for 5 < d ≤ 50), its median, the 2-D AUC.
TARGET_LOW, TARGET_HIGH, TARGET_MEDIAN, TARGET_AUC_2D = 1.5, 2.0, 1.2, 0.6
STANDARD_SECONDS = (60.0, 180.0)


# -- the CLI, as a user runs it ---------------------------------------------------------------------


def cli(*argv: str) -> tuple[str, float]:
    """Run ``python -m sketchgen ARGV`` (this interpreter, the repo's code); (stdout, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sketchgen", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"sketchgen {' '.join(argv)} exited {proc.returncode}: {tail}")
    return proc.stdout, wall


def kernel_flag_supported() -> bool:
    """Whether ``sketchgen sketch --help`` lists ``--kernel`` (the previous defaults then pass ``single``)."""
    return "--kernel" in cli("sketch", "--help")[0]


def sketch_scales(path: Path) -> dict[str, object]:
    """m and the kernel scales of a sketch file: ``spec.scales`` if the spec has them, else σ (min–max if per-dim)."""
    from sketch_store.sketch import load_sketch

    spec, _ = load_sketch(path)
    scales = getattr(spec, "scales", None)
    if scales is not None:
        return {"m": int(spec.m), "scales": [float(v) for v in np.ravel(scales)], "scale_kind": "scales"}
    sigma = np.asarray(spec.sigma, dtype=np.float64)
    if sigma.ndim == 0:
        return {"m": int(spec.m), "scales": [float(sigma)], "scale_kind": "sigma"}
    return {"m": int(spec.m), "scales": [float(sigma.min()), float(sigma.max())], "scale_kind": "sigma per-dim"}


def fit_summary(stdout: str) -> dict[str, object]:
    """The JSON line ``sketchgen fit`` prints (steps, seconds, loss, …); empty if absent."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def run_cli_method(method: str, data: Path, work: Path, seconds: float, n: int, kernel_flag: bool) -> dict:
    """Sketch, fit and sample with the CLI (``default`` or ``previous`` flags); the samples go to ``work/F.npy``."""
    work.mkdir(parents=True, exist_ok=True)
    sketch_extra = ["--kernel", "single"] if method == "previous" and kernel_flag else []
    fit_extra = PREVIOUS_FIT if method == "previous" else []
    sketch_file, model, samples = work / "S.npz", work / "M", work / "F.npy"
    _, t_sketch = cli("sketch", str(data), "--out", str(sketch_file), *sketch_extra)
    out, t_fit = cli("fit", str(sketch_file), "--out", str(model), "--seconds", f"{seconds:g}", *fit_extra)
    _, t_sample = cli("sample", str(model), "-n", str(n), "--out", str(samples))
    summary = fit_summary(out)
    return {**sketch_scales(sketch_file), "train_seconds": summary.get("seconds"), "steps": summary.get("steps"),
            "wall": {"sketch": t_sketch, "fit": t_fit, "sample": t_sample},
            "flags": {"sketch": sketch_extra, "fit": fit_extra}, "model": str(model)}


# -- GMMN (minibatch MMD on the data) ---------------------------------------------------------------


def architecture(model_dir: str | None) -> tuple[tuple[int, ...], int]:
    """(hidden widths, latent size) of a trained model directory's generator; the old defaults without one."""
    if model_dir is None:
        return (128, 128, 128), 10
    from learner.checkpoint import load_model_dir

    config = load_model_dir(model_dir).generator_config
    return tuple(int(h) for h in config.hidden), int(config.latent)


def run_gmmn(train: np.ndarray, seconds: float, n: int, hidden: tuple[int, ...], latent: int,
             seed: int = 0) -> tuple[np.ndarray, dict]:
    """GMMN for ``seconds`` of stepping: Adam(1e-3) on ``mixture_mmd2`` of 256 data vs 256 generated rows.

    Data standardised with its own mean/std, samples unstandardised; see the module docstring.
    """
    import torch

    from bench._beyond import adam_step, bandwidths, mixture_mmd2, setup_torch
    from learner.generator import Generator, GeneratorConfig

    setup_torch()
    mean, std = train.mean(axis=0), train.std(axis=0)
    y = standardise(train, mean, std)
    x = torch.tensor(y, dtype=torch.float32)
    h = bandwidths(y, seed=seed)
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(latent=latent, hidden=hidden, output=train.shape[1]))
    opt = torch.optim.Adam(gen.parameters(), lr=GMMN_LR)
    rng = torch.Generator().manual_seed(seed)
    steps, spent = 0, 0.0
    t0 = time.perf_counter()
    while spent < seconds:
        batch = x[torch.randint(len(x), (GMMN_BATCH,), generator=rng)]
        fake = gen(torch.randn(GMMN_BATCH, latent, generator=rng))
        adam_step(gen, opt, mixture_mmd2(batch, fake, h), GMMN_LR)
        steps += 1
        spent = time.perf_counter() - t0
    samples = gen.sample(n, generator=rng).numpy().astype(np.float64)
    std_safe = np.where(std > 0, std, 1.0)
    return samples * std_safe + mean, {"train_seconds": spent, "steps": steps, "hidden": list(hidden),
                                       "latent": latent}


# -- one dataset ------------------------------------------------------------------------------------


def _std(sp: Splits, x: np.ndarray) -> np.ndarray:
    return standardise(x, sp.train.mean(axis=0), sp.train.std(axis=0))


def evaluate(sp: Splits, samples: np.ndarray) -> dict:
    """MMD ratio (``n_sets`` generated sets) and classifier AUC (the first set vs the first reference) of
    ``samples``, in the training rows' standardised units."""
    refs = [_std(sp, r) for r in sp.references]
    cands = [_std(sp, samples[k * sp.n_candidate : (k + 1) * sp.n_candidate]) for k in range(sp.n_sets)]
    controls = [(_std(sp, a), _std(sp, b)) for a, b in sp.controls]
    r = mmd_ratio(refs, cands, controls)
    return {"ratio": r.ratio, "ratio_per_bandwidth": list(r.per_bandwidth), "mmd2": r.mmd2, "null_mmd2": r.null,
            "bandwidths": list(r.bandwidths), "auc": classifier_auc(refs[0], cands[0])}


def controls(sp: Splits) -> dict:
    """What a perfect generator scores: the stand-in sets' ratio (synthetic only) and a control set's AUC."""
    ref = _std(sp, sp.references[0])
    if sp.stand_ins is None:  # real: training rows vs held-out rows (the ratio's denominator itself)
        return {"ratio": None, "auc": classifier_auc(ref, _std(sp, sp.controls[0][0]))}
    refs = [_std(sp, r) for r in sp.references]
    cands = [_std(sp, c) for c in sp.stand_ins]
    return {"ratio": mmd_ratio(refs, cands, [(_std(sp, a), _std(sp, b)) for a, b in sp.controls]).ratio,
            "auc": classifier_auc(ref, cands[0])}


def seconds_for(d: int, low: float, high: float) -> float:
    """The training budget: ``low`` for d ≤ 5, ``high`` above."""
    return low if d <= 5 else high


def run_dataset(name: str, opts: dict) -> dict:
    """Train and judge every requested method on dataset ``name``; also writes ``workdir/name/result.json``."""
    from bench._beyond import setup_torch

    setup_torch()
    ds = DATASETS[name]
    sp = splits(ds, n_train=opts["n_train"], n_eval=opts["n_eval"])
    work = Path(opts["workdir"]) / name
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train.npy"
    np.save(data, sp.train)
    np.save(work / "reference.npy", sp.references[0])
    seconds = seconds_for(sp.d, opts["seconds_low"], opts["seconds_high"])
    n_samples = sp.n_sets * sp.n_candidate
    result: dict = {"name": name, "description": ds.description, "real": ds.real, "d": sp.d,
                    "n_train": len(sp.train), "n_reference": len(sp.references[0]), "n_references": len(sp.references),
                    "n_candidate": sp.n_candidate, "n_sets": sp.n_sets, "n_control_pairs": len(sp.controls),
                    "seconds": seconds, "control": controls(sp), "methods": {}}
    for method in ("default", "previous"):
        if method == "previous" and opts["skip_previous"]:
            continue
        try:
            info = run_cli_method(method, data, work / method, seconds, n_samples, opts["kernel_flag"])
            info.update(evaluate(sp, np.load(work / method / "F.npy")))
        except (RuntimeError, OSError, ValueError) as exc:
            info = {"error": str(exc)}
        result["methods"][method] = info
        print(f"[quality] {name} {method}: {summary_line(info)}", file=sys.stderr, flush=True)
    if not opts["skip_gmmn"]:
        hidden, latent = architecture(result["methods"].get("default", {}).get("model"))
        samples, info = run_gmmn(sp.train, seconds, n_samples, hidden, latent)
        (work / "gmmn").mkdir(exist_ok=True)
        np.save(work / "gmmn" / "F.npy", samples)
        info.update(evaluate(sp, samples))
        result["methods"]["gmmn"] = info
        print(f"[quality] {name} gmmn: {summary_line(info)}", file=sys.stderr, flush=True)
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


def summary_line(info: dict) -> str:
    """``ratio … AUC … steps …`` (or the error) for the progress log."""
    if "error" in info:
        return f"ERROR {info['error']}"
    return f"ratio {info['ratio']:.3g}  AUC {info['auc']:.3f}  steps {info.get('steps')}  m {info.get('m', '-')}"


# -- report -----------------------------------------------------------------------------------------


def fmt_scales(info: dict) -> str:
    """Scales as text: a short list, or min–max (with the count) for many / per-dim σ."""
    if "scales" not in info:
        return "-"
    s = info["scales"]
    if info.get("scale_kind") == "sigma per-dim":
        return f"σ {s[0]:.3g}–{s[1]:.3g} (per dim)"
    if len(s) <= 4:
        return ", ".join(f"{v:.3g}" for v in s)
    return f"{len(s)} scales {min(s):.3g}–{max(s):.3g}"


def metric(result: dict, method: str, key: str) -> float | None:
    """``result['methods'][method][key]`` or None if the method was skipped or failed."""
    info = result["methods"].get(method)
    return None if info is None or "error" in info else info.get(key)


def cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def target_for(d: int) -> float:
    """The default's ratio target: 1.5 for d ≤ 5, 2 for 5 < d ≤ 50."""
    return TARGET_LOW if d <= 5 else TARGET_HIGH


def setup_table(results: list[dict]) -> str:
    """Per dataset: kind, d, the rows on each side, T, m and scales of both sketches."""
    rows = []
    for r in results:
        dflt, prev = r["methods"].get("default", {}), r["methods"].get("previous", {})
        kind = f"real ({round(100 * HELD_FRACTION)} % held out)" if r["real"] else "synthetic"
        refs = f"{r['n_references']} × {r['n_reference']}"
        gen = f"{r['n_sets']} × {r['n_candidate']}"
        rows.append([r["name"], kind, r["d"], r["n_train"], refs, gen, r["n_control_pairs"], f"{r['seconds']:g}",
                     dflt.get("m", "-"), fmt_scales(dflt), prev.get("m", "-"), fmt_scales(prev)])
    return markdown_table(["dataset", "kind", "d", "train rows", "reference rows (sets × rows)",
                           "generated rows judged (sets × rows)", "control pairs", "T (s)", "m (default)",
                           "scales (default)", "m (previous)", "scales (previous)"], rows)


def results_table(results: list[dict]) -> str:
    """Per dataset: MMD ratio and AUC of the three methods and of the control, training time used, pass/fail."""
    rows = []
    for r in results:
        ratio = metric(r, "default", "ratio")
        ok = "-" if ratio is None else ("pass" if ratio <= target_for(r["d"]) else "FAIL")
        times = " / ".join(cell(metric(r, m, "train_seconds")) for m in METHODS)
        steps = " / ".join(str(metric(r, m, "steps") or "-") for m in METHODS)
        rows.append([r["name"], r["d"], *(cell(metric(r, m, "ratio")) for m in METHODS), cell(r["control"]["ratio"]),
                     *(cell(metric(r, m, "auc"), 3) for m in METHODS), cell(r["control"]["auc"], 3), times, steps,
                     f"{ok} (≤ {target_for(r['d']):g})"])
    return markdown_table(["dataset", "d", "ratio default", "ratio GMMN", "ratio previous", "ratio control",
                           "AUC default", "AUC GMMN", "AUC previous", "AUC control", "train s (def / GMMN / prev)",
                           "steps (def / GMMN / prev)", "default vs target"], rows)


def errors_text(results: list[dict]) -> str:
    """One line per failed run."""
    lines = [f"- {r['name']} {m}: {info['error']}" for r in results for m, info in r["methods"].items()
             if "error" in info]
    return ("\n\n**Failed runs**\n\n" + "\n".join(lines)) if lines else ""


def summary(results: list[dict], low: float, high: float) -> dict:
    """The headline figures: medians, ours ≤ GMMN, and pass/fail against the targets."""
    def ratios(method: str) -> list[float]:
        return [v for r in results if (v := metric(r, method, "ratio")) is not None]

    both = [(metric(r, "default", "ratio"), metric(r, "gmmn", "ratio")) for r in results]
    both = [(a, b) for a, b in both if a is not None and b is not None]
    per_ds = [(r["name"], v, target_for(r["d"])) for r in results if (v := metric(r, "default", "ratio")) is not None]
    auc2 = [(r["name"], v) for r in results if r["d"] == 2 and (v := metric(r, "default", "auc")) is not None]
    med = {m: (statistics.median(v) if (v := ratios(m)) else None) for m in METHODS}
    return {
        "median_ratio": med,
        "ours_le_gmmn": (sum(a <= b for a, b in both), len(both)),
        "per_dataset_fail": [n for n, v, t in per_ds if v > t],
        "per_dataset_count": len(per_ds),
        "median_pass": med["default"] is not None and med["default"] <= TARGET_MEDIAN,
        "auc2_fail": [n for n, v in auc2 if v > TARGET_AUC_2D],
        "auc2_count": len(auc2),
        "standard_budget": (low, high) == STANDARD_SECONDS,
    }


def summary_text(s: dict) -> str:
    """The summary lines of the report."""
    med = s["median_ratio"]
    won, total = s["ours_le_gmmn"]
    budget = "" if s["standard_budget"] else (
        "\n\n**Budgets differ from the targets' 60 s / 180 s: the pass/fail lines below are indicative only.**")
    fail = ", ".join(s["per_dataset_fail"]) or "none"
    auc_fail = ", ".join(s["auc2_fail"]) or "none"
    return (
        f"**Summary**{budget}\n\n"
        f"- median MMD ratio: default **{cell(med['default'])}**, GMMN {cell(med['gmmn'])}, "
        f"previous {cell(med['previous'])}\n"
        + (f"- ours ≤ GMMN (MMD ratio): {won} of {total} datasets ({won / total:.0%})\n" if total
           else "- ours ≤ GMMN: n/a (GMMN not run)\n") +
        f"- per-dataset target (ratio ≤ {TARGET_LOW:g} for d ≤ 5 at 60 s, ≤ {TARGET_HIGH:g} for 5 < d ≤ 50 at 180 s): "
        f"{'PASS' if not s['per_dataset_fail'] else 'FAIL'} — {s['per_dataset_count'] - len(s['per_dataset_fail'])} "
        f"of {s['per_dataset_count']} pass; failing: {fail}\n"
        f"- median target (≤ {TARGET_MEDIAN:g}): {'PASS' if s['median_pass'] else 'FAIL'}\n"
        f"- AUC ≤ {TARGET_AUC_2D:g} on the 2-D sets: {'PASS' if not s['auc2_fail'] else 'FAIL'} — "
        f"{s['auc2_count'] - len(s['auc2_fail'])} of {s['auc2_count']}; failing: {auc_fail}"
    )


METHOD_TEXT = f"""\
**How to read it.** Every model trains for the same wall time T (60 s for d ≤ 5, 180 s for
5 < d ≤ 50 unless overridden), one torch thread per process. *default* = `sketchgen sketch
TRAIN.npy --out S.npz`, `sketchgen fit S.npz --out M --seconds T`, `sketchgen sample M -n N
--out F.npy` (no other flags); *previous* = the same with `--kernel single` on sketch (when the
CLI has that flag) and `{" ".join(PREVIOUS_FIT)}` on fit; *GMMN* = minibatch MMD on the data
(Adam {GMMN_LR:g}, {GMMN_BATCH} data + {GMMN_BATCH} generated rows, the default model's
architecture, mixture kernel at 1/8…2 × median distance). Its "train s" counts stepping only.

All metrics are computed in the training rows' standardised units. **MMD ratio** =
mean over 5 generated sets of the V-statistic MMD²(generated set, reference set) / mean over
the control pairs of the V-statistic MMD²(control pair), every MMD² averaged over Gaussian
kernels at {", ".join(f"{f:g}" for f in FACTORS)} × the first reference set's median pairwise distance
(bench/_quality_metrics.py). *Synthetic sets*: each generated set has its own reference set of
fresh draws; the denominator averages 5 pairs of further independent fresh draws; *ratio
control* scores 5 more fresh sets as if generated, i.e. what a perfect generator gets (≈ 1, its
spread is the metric's noise). *Real tables*: a random {round(100 * HELD_FRACTION)} % of the rows
is held out (no bootstrap); the reference is the held-out rows (at most 2500), every generated
set (as many rows as the training subsets below) is compared with it, and the denominator is
training rows against the held-out rows at the same sizes (5 random subsets of the training
rows, or all of them once when there are no more than needed): 1 ≈ as close to unseen rows as
the training rows themselves; there is no ratio control. **AUC**: out-of-fold ROC AUC (5-fold)
of scikit-learn's HistGradientBoostingClassifier telling the first generated set from the first
reference set; *AUC control* is the same test on a stand-in set (synthetic) or the training
rows (real): the AUC's own noise at these sizes. 0.5 = indistinguishable."""


def plot_grid(results: list[dict], workdir: Path, path: Path) -> None:
    """One row per dataset: reference data / ours / GMMN / previous, first two coordinates, scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 4, figsize=(10, 2.4 * len(results)), squeeze=False)
    for row, r in zip(axes, results, strict=True):
        ref = np.load(workdir / r["name"] / "reference.npy")
        lo, hi = np.percentile(ref[:, :2], 0.5, axis=0), np.percentile(ref[:, :2], 99.5, axis=0)
        pad = 0.15 * (hi - lo) + 1e-12
        sets = [("data (reference)", ref, None)] + [
            (LABELS[m], workdir / r["name"] / m / "F.npy", r["methods"].get(m)) for m in METHODS]
        for ax, (label, source, info) in zip(row, sets, strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            if (info is not None and "error" in info) or (isinstance(source, Path) and not source.exists()):
                ax.text(0.5, 0.5, "failed" if info else "skipped", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(label, fontsize=8)
                continue
            pts = (source if isinstance(source, np.ndarray) else np.load(source))[: r["n_candidate"]]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=float(np.clip(500 / len(pts), 0.1, 0.8)), lw=0)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            title = f"{r['name']} (d={r['d']})" if info is None else (
                f"{label}: ratio {info['ratio']:.3g}, AUC {info['auc']:.2f}")
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_outputs(results: list[dict], args: argparse.Namespace, command: str, total: float) -> None:
    """quality.md, quality.json and quality.png (docs/ or ``--out-dir``)."""
    s = summary(results, args.seconds_low, args.seconds_high)
    kernel = "listed, so *previous* passed `--kernel single`" if args.kernel_flag else (
        "not listed yet, so *previous* sketched with the current default kernel")
    body = (f"{METHOD_TEXT}\n\n`sketchgen sketch --help`: `--kernel` {kernel}. Whole run: {total / 60:.1f} min, "
            f"workdir `{args.workdir}`, jobs {args.jobs}.\n\n"
            f"{summary_text(s)}\n\n**Results**\n\n{results_table(results)}\n\n**Setup: rows, m and scales**\n\n"
            f"{setup_table(results)}{errors_text(results)}\n\n![data vs samples](../img/quality.png)")
    figures = {"command": command, "machine": machine(), "kernel_flag": args.kernel_flag,
               "seconds_low": args.seconds_low,
               "seconds_high": args.seconds_high, "summary": s, "datasets": results}
    if args.out_dir is None:
        write_report("quality", "Quality suite: default sketch + fit vs GMMN and the previous defaults", body, command)
        json_path, png_path = DOCS / "quality.json", ROOT / "docs" / "img" / "quality.png"
    else:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = f"# Quality suite\n\nMeasured with `{command}` on {machine()}.\n\n{body}\n"
        print(text)
        (out / "quality.md").write_text(text.replace("../img/quality.png", "quality.png"))
        json_path, png_path = out / "quality.json", out / "quality.png"
    json_path.write_text(json.dumps(figures, indent=1))
    plot_grid(results, Path(args.workdir), png_path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated dataset names (default: all): " + ",".join(DATASETS))
    parser.add_argument("--seconds-low", type=float, default=STANDARD_SECONDS[0], help="T for d <= 5 (default 60)")
    parser.add_argument("--seconds-high", type=float, default=STANDARD_SECONDS[1], help="T for d > 5 (default 180)")
    parser.add_argument("--jobs", type=int, default=1, help="datasets run in parallel, one thread each (default 1)")
    parser.add_argument("--skip-gmmn", action="store_true")
    parser.add_argument("--skip-previous", action="store_true")
    parser.add_argument("--workdir", help="working directory (data, sketches, models, samples; default a new temp dir)")
    parser.add_argument("--out-dir", help="write quality.md/json/png here instead of docs/")
    parser.add_argument("--n-train", type=int, default=100_000, help="training rows of a synthetic law")
    parser.add_argument("--n-eval", type=int, default=2500, help="reference / generated rows judged (max)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    args.names = names
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="sketchgen-quality-")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python bench/quality.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    opts = {"n_train": args.n_train, "n_eval": args.n_eval, "workdir": args.workdir, "seconds_low": args.seconds_low,
            "seconds_high": args.seconds_high, "skip_gmmn": args.skip_gmmn, "skip_previous": args.skip_previous,
            "kernel_flag": kernel_flag_supported()}
    args.kernel_flag = opts["kernel_flag"]
    print(f"[quality] workdir {args.workdir}; --kernel on sketch: {opts['kernel_flag']}", file=sys.stderr)
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_dataset, args.names, [opts] * len(args.names)))
    else:
        results = [run_dataset(name, opts) for name in args.names]
    write_outputs(results, args, command, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
