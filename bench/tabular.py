"""sketchgen against SDV on mixed-type tables shipped in wheels (bench/_tabular_data.py).

For each table, a seeded 80/20 train/holdout split, then three methods, each in its own subprocess (so its
wall time and peak resident memory are its own; every process on one thread):

* **ours**: exactly what a user types — ``sketchgen sketch TRAIN.csv --out S.npz`` (schema inferred from the
  training rows), ``sketchgen fit S.npz --out M --seconds T`` (no other flag), ``sketchgen sample M -n H``;
* **GaussianCopula**: SDV's ``GaussianCopulaSynthesizer`` with its defaults, fitted on the whole training table;
* **CTGAN**: SDV's ``CTGANSynthesizer`` at equal wall time: one epoch is timed (on the preprocessed table),
  and the epochs are chosen so its fit takes about our sketch + fit time (capped at SDV's default, 300), with one
  corrected refit if the fit misses that time by over 25 %.

SDV gets metadata written from the same schema ours infers (category → categorical, bool → boolean, int/float
→ numerical), so every method models the same field types. Each method samples as many rows as the holdout,
and is scored against the holdout by :func:`sketchgen.quality_report.quality_scores` (same schema, same seed;
docs/learner.md, "Quality report"). What each keeps: our sketch file vs the training table as CSV (SDV's fitted
model is also saved and its size recorded). Outputs: a printed table, docs/bench/tabular.md and docs/bench/tabular.json.

Run: ``nice -n 19 .venv/bin/python bench/tabular.py`` (about 30–40 min at T = 180 s; needs the ``tabular``
and ``report`` extras). In two steps: ``--train-only --workdir W`` then ``--score-only --workdir W``
(``--redo ctgan --workdir W`` reruns one method). Smoke run:
``.venv/bin/python bench/tabular.py --quick --tables penguins --out-dir /tmp/t``.
"""

from __future__ import annotations

import os

# One thread everywhere, set before torch/NumPy load (inherited by every subprocess).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._tabular_data import DEFAULT_TABLES, TABLES, split, write_csv  # noqa: E402
from sketch_store.schema import Schema  # noqa: E402

log = logging.getLogger("bench.tabular")

METHODS = ("ours", "gaussian_copula", "ctgan")
LABELS = {"ours": "ours (sketch)", "gaussian_copula": "SDV GaussianCopula", "ctgan": "SDV CTGAN"}
DEFAULT_SECONDS = 180.0
QUICK_SECONDS = 3.0
#: Most CTGAN epochs the equal-time calibration may choose (SDV's default epochs).
CTGAN_MAX_EPOCHS = 300
SDTYPES = {"category": {"sdtype": "categorical"}, "bool": {"sdtype": "boolean"},
           "int": {"sdtype": "numerical"}, "float": {"sdtype": "numerical"}}


# -- the worker: one method, in its own process -------------------------------------------------------------


def cli(*argv: str) -> float:
    """Run ``python -m sketchgen ARGV`` (this interpreter, the repo's code); its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sketchgen", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"sketchgen {' '.join(argv)} exited {proc.returncode}: {tail}")
    return time.perf_counter() - t0


def run_ours(job: dict) -> dict:
    """Sketch, fit and sample with the CLI defaults; the kept artefact is the sketch file."""
    work = Path(job["work"])
    sketch, model, samples = work / "S.npz", work / "M", work / "F.csv"
    t_sketch = cli("sketch", job["train"], "--out", str(sketch))
    t_fit = cli("fit", str(sketch), "--out", str(model), "--seconds", f"{job['seconds']:g}")
    t_sample = cli("sample", str(model), "-n", str(job["n"]), "--out", str(samples), "--seed", str(job["seed"]))
    return {"fit_seconds": t_sketch + t_fit, "sketch_seconds": t_sketch, "sample_seconds": t_sample,
            "kept_bytes": sketch.stat().st_size, "samples": str(samples)}


def sdv_metadata(schema_file: str):
    """SDV single-table metadata with the field types of our schema (docs/bench/tabular.md, "Setup")."""
    from sdv.metadata import Metadata

    schema = Schema.load(schema_file)
    columns = {f.name: dict(SDTYPES[f.type]) for f in schema.fields}
    return Metadata.load_from_dict({"tables": {"table": {"columns": columns}}})


def timed_epochs(synth_factory, processed, epochs: int) -> float:
    """Seconds of ``fit_processed_data`` for a fresh CTGAN of ``epochs`` epochs on preprocessed data."""
    synth = synth_factory(epochs)
    synth.preprocess(processed["raw"])
    t0 = time.perf_counter()
    synth.fit_processed_data(processed["table"])
    return time.perf_counter() - t0


def ctgan_epochs(synth_factory, data: dict, target_seconds: float) -> tuple[int, dict[str, float]]:
    """Epochs for a CTGAN fit of about ``target_seconds``, from timed fits of one and three epochs.

    After one untimed warm-up epoch, ``e = (t₃ − t₁) / 2`` (one epoch) and ``c = t₁ − e`` (set-up);
    ``epochs = clip(round((target − pre − c) / e), 1, CTGAN_MAX_EPOCHS)``, ``pre`` being the preprocessing time.
    """
    probe = synth_factory(1)
    t0 = time.perf_counter()
    processed = {"raw": data, "table": probe.preprocess(data)}
    t_pre = time.perf_counter() - t0
    timed_epochs(synth_factory, processed, 1)  # warm-up: the first fit in a process pays torch's start-up
    t1, t3 = timed_epochs(synth_factory, processed, 1), timed_epochs(synth_factory, processed, 3)
    t_epoch = (t3 - t1) / 2 if t3 > t1 else t1
    setup = max(0.0, t1 - t_epoch)
    epochs = round((target_seconds - t_pre - setup) / t_epoch)
    timings = {"calibration_preprocess_seconds": t_pre, "calibration_epoch_seconds": t_epoch,
               "calibration_setup_seconds": setup}
    return max(1, min(CTGAN_MAX_EPOCHS, epochs)), timings


def timed_fit(synth, data: dict) -> float:
    """Seconds of ``synth.fit(data)``."""
    t0 = time.perf_counter()
    synth.fit(data)
    return time.perf_counter() - t0


def fit_ctgan(metadata, data: dict, job: dict) -> tuple[object, float, dict]:
    """A CTGAN fitted at ``job["epochs"]``, else at equal wall time: (synthesizer, fit seconds, what was chosen).

    The calibrated epochs (:func:`ctgan_epochs`) are corrected once if the fit missed the target by over 25 %
    (the machine is shared, so one epoch's timing drifts): ``epochs × target / seconds``, refitted.
    """
    from sdv.single_table import CTGANSynthesizer

    def factory(epochs: int) -> CTGANSynthesizer:
        return CTGANSynthesizer(metadata, epochs=epochs, verbose=False)

    if job.get("epochs") is not None:
        synth = factory(job["epochs"])
        return synth, timed_fit(synth, data), {"epochs": job["epochs"]}
    target = job["target_seconds"]
    epochs, extra = ctgan_epochs(factory, data, target)
    synth = factory(epochs)
    t_fit = timed_fit(synth, data)
    corrected = max(1, min(CTGAN_MAX_EPOCHS, round(epochs * target / t_fit)))
    if abs(t_fit / target - 1.0) > 0.25 and corrected != epochs:
        extra["first_fit"] = {"epochs": epochs, "seconds": t_fit}
        epochs, synth = corrected, factory(corrected)
        t_fit = timed_fit(synth, data)
    return synth, t_fit, {**extra, "epochs": epochs}


def run_sdv(job: dict) -> dict:
    """Fit an SDV synthesizer on the training table, sample the holdout's row count, save model and samples."""
    import numpy as np
    import torch
    from sdv.single_table import GaussianCopulaSynthesizer

    torch.set_num_threads(1)
    np.random.seed(job["seed"])
    torch.manual_seed(job["seed"])
    train, _ = split(TABLES[job["table"]].load(), job["seed"])
    data = {"table": train}  # SDV 2 takes and returns a dict of tables, even for one
    metadata = sdv_metadata(job["schema"])
    if job["method"] == "gaussian_copula":
        synth, extra = GaussianCopulaSynthesizer(metadata), {}
        t_fit = timed_fit(synth, data)
    else:
        synth, t_fit, extra = fit_ctgan(metadata, data, job)
    t0 = time.perf_counter()
    synthetic = synth.sample(num_rows=job["n"])["table"]
    t_sample = time.perf_counter() - t0
    work = Path(job["work"])
    samples, model = work / "F.csv", work / "model.pkl"
    write_csv(synthetic[list(train.columns)], samples)
    synth.save(str(model))
    return {"fit_seconds": t_fit, "sample_seconds": t_sample, "model_bytes": model.stat().st_size,
            "kept_bytes": job["train_csv_bytes"], "samples": str(samples), **extra}


def worker(job_file: str) -> int:
    """Run the method of a job file; write its result and the process's peak RSS next to it."""
    import resource

    job = json.loads(Path(job_file).read_text())
    result = run_ours(job) if job["method"] == "ours" else run_sdv(job)
    usage = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    kib = max(u.ru_maxrss for u in usage)  # the worker or its largest child (the CLI commands), KiB
    result["peak_rss_mb"] = kib / 1024
    Path(job["result"]).write_text(json.dumps(result))
    return 0


def run_worker(job: dict) -> dict:
    """The method of ``job`` in a fresh process (``tabular.py --worker JOB``); its result dict."""
    work = Path(job["work"])
    work.mkdir(parents=True, exist_ok=True)
    job = {**job, "result": str(work / "result.json")}
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(job_file)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{job['method']} on {job['table']} exited {proc.returncode}: {tail}")
    result = json.loads(Path(job["result"]).read_text())
    result["process_seconds"] = time.perf_counter() - t0
    return result


# -- one table: split, three methods, scores ----------------------------------------------------------------


def fitting_records(path: Path, schema) -> tuple[list[dict], int]:
    """The records of a CSV that fit ``schema`` (text cells parsed) and how many did not (e.g. a category unseen)."""
    from sketch_store.typed_encoding import RecordError, parse_text_record
    from sketchgen.records_files import read_records
    from sketchgen.typed_files import probe_encoder

    probe, kept, refused = probe_encoder(schema), [], 0
    for record in read_records(path):
        try:
            value = parse_text_record(schema, record)
            probe.read_record(value)
        except RecordError:
            refused += 1
            continue
        kept.append(value)
    return kept, refused


def prepare(table: str, work: Path, seed: int) -> dict:
    """Split ``table``, write train/holdout CSVs and the schema inferred from the training rows; their facts."""
    from sketchgen.records_files import infer_schema_from_file

    work.mkdir(parents=True, exist_ok=True)
    train, holdout = split(TABLES[table].load(), seed)
    train_csv, holdout_csv, schema_file = work / "train.csv", work / "holdout.csv", work / "schema.json"
    train_bytes = write_csv(train, train_csv)
    write_csv(holdout, holdout_csv)
    schema = infer_schema_from_file(train_csv)
    schema.save(schema_file)
    return {"train": str(train_csv), "holdout": str(holdout_csv), "schema": str(schema_file),
            "train_csv_bytes": train_bytes, "n_train": len(train), "n_holdout": len(holdout),
            "fields": {t: sum(f.type == t for f in schema.fields) for t in ("float", "int", "bool", "category")},
            "nullable_fields": sum(f.nullable for f in schema.fields)}


def score(facts: dict, samples: str, seed: int) -> dict:
    """quality_scores of the samples against the holdout (both read under the training schema)."""
    from sketchgen.quality_report import quality_scores

    schema = Schema.load(facts["schema"])
    real, _ = fitting_records(Path(facts["holdout"]), schema)
    synthetic, invalid = fitting_records(Path(samples), schema)
    scores = quality_scores(real, synthetic, schema, seed=seed)
    return {"scores": scores, "invalid_samples": invalid}


def train_table(table: str, work: Path, seconds: float, seed: int, ctgan_epochs: int | None = None,
                methods: tuple[str, ...] = METHODS) -> dict:
    """Split ``table`` and run every method of ``methods`` in its own process; the row (also in ``work/row.json``).

    CTGAN's epochs are ``ctgan_epochs`` if given, else calibrated to ours' sketch + fit time (or ``seconds``).
    """
    facts = prepare(table, work, seed)
    _, refused = fitting_records(Path(facts["holdout"]), Schema.load(facts["schema"]))
    row: dict = {"table": table, "source": TABLES[table].source, "seed": seed, "seconds": seconds,
                 "holdout_rows_refused": refused, **facts}
    row["methods"] = {}
    for method in methods:
        run_method(row, method, work, ctgan_epochs)
    return row


def run_method(row: dict, method: str, work: Path, ctgan_epochs: int | None = None) -> dict:
    """Run ``method`` on a prepared table's ``row`` in its own process; stored in the row and ``work/row.json``.

    CTGAN's wall-time target is ours' sketch + fit time if the row has it, else the budget ``row["seconds"]``.
    """
    results = row["methods"]
    target = results["ours"]["fit_seconds"] if "ours" in results else row["seconds"]
    job = {"table": row["table"], "seed": row["seed"], "n": row["n_holdout"], "schema": row["schema"],
           "train": row["train"], "train_csv_bytes": row["train_csv_bytes"], "seconds": row["seconds"],
           "method": method, "work": str(work / method), "epochs": ctgan_epochs, "target_seconds": target}
    log.info("%s: %s ...", row["table"], method)
    results[method] = run_worker(job)
    log.info("%s: %s fitted in %.1f s", row["table"], method, results[method]["fit_seconds"])
    (work / "row.json").write_text(json.dumps(row))
    return results[method]


def sketch_vector_bytes(path: Path) -> int:
    """Bytes of a sketch file's data-dependent part: the sum of features (the rest is the spec, mostly ω)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return int(z["sketch_sum"].nbytes)


def out_of_range_share(train_csv: str, samples_csv: str, schema: Schema) -> float:
    """Share of the samples' non-null numeric cells outside the training rows' [min, max] of their field."""
    import pandas as pd

    names = [f.name for f in schema.fields if f.type in ("int", "float")]
    if not names:
        return 0.0
    train, samples = pd.read_csv(train_csv, usecols=names), pd.read_csv(samples_csv, usecols=names)
    outside = (samples < train.min()) | (samples > train.max())
    return float(outside.to_numpy().sum() / max(1, samples.notna().to_numpy().sum()))


def scoring_available() -> bool:
    """Whether :mod:`sketchgen.quality_report` (the scores) can be imported."""
    import importlib.util

    return importlib.util.find_spec("sketchgen.quality_report") is not None


def score_row(row: dict) -> dict:
    """``row`` with every method's scores against the holdout added (under the training schema, the row's seed).

    Without :mod:`sketchgen.quality_report` the scores are left out (logged; the report shows them as pending).
    """
    scored = scoring_available()
    if not scored:
        log.warning("sketchgen.quality_report is not available: %s is reported without scores", row["table"])
    schema = Schema.load(row["schema"])
    for method, result in row["methods"].items():
        if scored:
            result.update(score(row, result["samples"], row["seed"]))
            log.info("%s: %s: %s", row["table"], method, headline(result))
        result["out_of_range"] = out_of_range_share(row["train"], result["samples"], schema)
        if method == "ours":
            result["sketch_vector_bytes"] = sketch_vector_bytes(Path(result["samples"]).parent / "S.npz")
    return row


def run_table(table: str, work: Path, seconds: float, seed: int, ctgan_epochs: int | None = None,
              methods: tuple[str, ...] = METHODS) -> dict:
    """The per-table pipeline: :func:`train_table` then :func:`score_row`."""
    return score_row(train_table(table, work, seconds, seed, ctgan_epochs, methods))


def headline(result: dict) -> str:
    """One line of a method's result for the log."""
    s = result["scores"]
    return (f"overall {s['sdmetrics']['overall']:.3f}, MMD ratio {s['mmd_ratio']:.3g}, AUC {s['classifier_auc']:.3f}, "
            f"fit {result['fit_seconds']:.0f}s, {result['peak_rss_mb']:.0f} MB")


# -- report -------------------------------------------------------------------------------------------------


HEADERS = ["table", "rows (train/holdout)", "method", "overall", "shapes", "pair trends", "MMD ratio", "AUC",
           "out of range", "fit s", "sample s", "peak MB", "keeps (bytes)", "note"]
PENDING = "pending"


def score_cells(result: dict) -> list[object]:
    """overall, shapes, pair trends, MMD ratio and AUC of a result (``pending`` if it was not scored)."""
    if "scores" not in result:
        return [PENDING] * 5
    s = result["scores"]
    return [s["sdmetrics"]["overall"], s["sdmetrics"]["column_shapes"], s["sdmetrics"]["column_pair_trends"],
            s["mmd_ratio"], s["classifier_auc"]]


def table_rows(rows: list[dict]) -> list[list[object]]:
    """The printed/markdown table: one line per table and method."""
    out = []
    for row in rows:
        for method, r in row["methods"].items():
            note = f"{r['epochs']} epochs" if "epochs" in r else ""
            if method != "ours":
                note = (note + "; " if note else "") + f"model {r['model_bytes']:,} B"
            elif "sketch_vector_bytes" in r:
                note = f"sketch vector {r['sketch_vector_bytes']:,} B, the rest is the spec"
            if r.get("invalid_samples"):
                note += f"; {r['invalid_samples']} invalid rows"
            out.append([row["table"], f"{row['n_train']}/{row['n_holdout']}", LABELS[method], *score_cells(r),
                        f"{100 * r.get('out_of_range', 0.0):.1f} %", r["fit_seconds"], r["sample_seconds"],
                        round(r["peak_rss_mb"]), f"{r['kept_bytes']:,}", note])
    return out


SETUP = """## Setup

Each table is split 80/20 with the seed; every method trains on the same training rows and samples as many rows as the
holdout has. Ours runs the CLI with its defaults (`sketchgen sketch train.csv`, schema inferred from the training
rows; `sketchgen fit --seconds T`; `sketchgen sample`). SDV's synthesizers get metadata written from that same schema
(category → categorical, bool → boolean, int and float → numerical), GaussianCopula with its defaults and CTGAN with
its defaults except the epochs, chosen from timed one- and three-epoch fits so that its fit lasts about our sketch +
fit time (at most 300; if the fit misses that time by over 25 % — the machine is shared — the epochs are scaled by the
miss and it is refitted once; the note gives the epochs used). Every method runs in its own process on one thread;
"fit s" is ours' sketch + fit wall time (the CLI processes, start-up included) and SDV's `fit` call; "peak MB" is the
largest resident set of the method's processes. "keeps" is what a method holds to learn from: our sketch file, or the
training table as CSV for SDV (its fitted model's size is in the note). Scores
(`sketchgen.quality_report.quality_scores`, docs/learner.md "Quality report") compare the samples with the holdout
under the training schema: SDMetrics' quality report (overall, column shapes, column pair trends; higher is
better, 1 is best), the MMD ratio (1 is as close as a second draw of the real data; lower is better) and a
classifier's AUC telling real from
synthetic (0.5 is indistinguishable; lower is better). "out of range" is the share of the samples' numeric cells
outside the training rows' [min, max] of their field (SDV clips to that range by default; ours does not)."""


def markdown_body(rows: list[dict], seconds: float) -> str:
    """The setup, the budget and the results table."""
    from bench._report import markdown_table

    return (f"{SETUP}\n\n## Results\n\nBudget T = {seconds:g} s for `sketchgen fit`.\n\n"
            + markdown_table(HEADERS, table_rows(rows)))


def kept_reading(path: Path) -> str:
    """The hand-written ``## Reading`` section of an existing report (kept across runs), else empty."""
    if not path.exists():
        return ""
    text = path.read_text()
    start = text.find("\n## Reading")
    return text[start:] if start >= 0 else ""


def write_outputs(rows: list[dict], args: argparse.Namespace, command: str) -> None:
    """Print the table; write ``tabular.md`` (keeping its ``## Reading`` section) and ``tabular.json``."""
    from bench._report import machine, markdown_table

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = markdown_body(rows, args.seconds)
    report = out / "tabular.md"
    text = f"# sketchgen vs SDV on mixed-type tables\n\nMeasured with `{command}` on {machine()}.\n\n{body}\n"
    text += kept_reading(report)
    print(markdown_table(HEADERS, table_rows(rows)))
    report.write_text(text)
    public = [{k: v for k, v in row.items() if k not in ("train", "holdout", "schema")} for row in rows]
    (out / "tabular.json").write_text(json.dumps({"machine": machine(), "command": command, "rows": public},
                                                 indent=2, default=float))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags (see the module docstring)."""
    from bench._report import DOCS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="our fit budget T (default 180)")
    p.add_argument("--tables", default=",".join(DEFAULT_TABLES), help=f"comma-separated subset of {', '.join(TABLES)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the sampling and the scores (default 0)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: T = {QUICK_SECONDS:g} s and CTGAN 1 epoch")
    p.add_argument("--out-dir", default=str(DOCS), help="where tabular.md/.json go (default docs/bench)")
    p.add_argument("--workdir", help="working files (default: a temporary directory)")
    p.add_argument("--score-only", action="store_true", help="score the runs already in --workdir (no training)")
    p.add_argument("--redo", choices=METHODS, help="rerun one method on the tables already in --workdir")
    p.add_argument("--train-only", action="store_true", help="train and sample into --workdir, score later")
    args = p.parse_args(argv)
    if (args.score_only or args.train_only or args.redo) and not args.workdir:
        p.error("--score-only, --train-only and --redo need --workdir")
    if not args.seconds > 0:
        p.error(f"--seconds must be > 0, got {args.seconds}")
    unknown = [t for t in args.tables.split(",") if t not in TABLES]
    if unknown:
        p.error(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}")
    if args.quick:
        args.seconds = QUICK_SECONDS
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench over ``--tables`` and write the report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tabular-"))
    tables = args.tables.split(",")
    if args.redo:
        for t in tables:
            row = json.loads((work / t / "row.json").read_text())
            run_method(row, args.redo, work / t)
        return 0
    if args.train_only:
        for t in tables:
            train_table(t, work / t, args.seconds, args.seed, ctgan_epochs=1 if args.quick else None)
        return 0
    if args.score_only:
        rows = [score_row(json.loads((work / t / "row.json").read_text())) for t in tables]
    else:
        rows = [run_table(t, work / t, args.seconds, args.seed, ctgan_epochs=1 if args.quick else None)
                for t in tables]
    command = "nice -n 19 .venv/bin/python bench/tabular.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_outputs(rows, args, command.strip())
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2]))
    sys.exit(main())
