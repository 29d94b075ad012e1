"""The offline commands: ``sketch``, ``fit``, ``sample`` and ``plot``.

``sketch`` and ``sample`` also take typed records (:mod:`sketchgen.typed_files`, docs/design.md §1).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from learner.checkpoint import MODEL_FILE, Checkpoint, load_checkpoint, load_model_dir, save_model_dir
from learner.generator import GeneratorConfig, parse_hidden
from learner.trainer import TrainConfig, Trainer
from sketch_store.errors import DataError, SketchgenError
from sketch_store.features import FeatureMap
from sketch_store.frequency_laws import LAWS
from sketch_store.pilot import (
    DEFAULT_KERNEL,
    DEFAULT_LAW,
    DEFAULT_M,
    DEFAULT_M_HIGH_DIM,
    KERNELS,
    LOW_DIM,
    spec_from_pilot,
)
from sketch_store.redis_store import StreamNotFoundError
from sketch_store.sketch import Sketch, load_sketch, save_sketch
from sketchgen.datafiles import load_data, save_samples
from sketchgen.plotting import plot_histograms
from sketchgen.settings import Connections, add_connection_args
from sketchgen.typed_files import reads_records, typed_sketch_input, write_records

log = logging.getLogger("sketchgen")

#: Defaults of ``sketchgen fit`` (see docs/results.md for the experiment behind them).
DEFAULT_FIT_SECONDS = 60.0
DEFAULT_HIDDEN = "128,128,128"
DEFAULT_LATENT = 10
DEFAULT_BATCH = 1000
DEFAULT_LR = 3e-3
#: ``fit`` starts an annealed budget at this fraction of ``--batch`` latents per step (docs/learner.md).
DEFAULT_BATCH_START = 0.25
PROGRESS_ROWS = 200_000


def add_offline_commands(sub: argparse._SubParsersAction) -> None:
    """Register the offline sub-commands on an argparse sub-parser collection."""
    p = sub.add_parser("sketch", help="sketch a data file (.npy, .csv or .jsonl) into SKETCH.npz")
    p.add_argument("data", help="N×d data (.npy or numeric .csv, optional header row), or typed records "
                   "(.csv with a header row, .jsonl)")
    p.add_argument("--schema", metavar="FILE", help="schema of the records (from `sketchgen schema`; default: "
                   "inferred from the data)")
    p.add_argument("--out", required=True, help="output sketch file (.npz)")
    p.add_argument("--m", type=int, help=f"number of frequencies (default {DEFAULT_M} for d <= {LOW_DIM}, "
                   f"{DEFAULT_M_HIGH_DIM} above: docs/beyond_paper.md)")
    p.add_argument("--law", choices=LAWS, default=DEFAULT_LAW, help=f"frequency law (default {DEFAULT_LAW})")
    p.add_argument("--sigma", type=float, help="scale σ in standardised units (default: estimated from the data)")
    p.add_argument("--kernel", choices=KERNELS, default=DEFAULT_KERNEL,
                   help=f"a ladder of scales read off the data, or one σ (default {DEFAULT_KERNEL}: docs/design.md §1)")
    p.add_argument("--no-standardize", action="store_true", help="use the data's raw units (no mean/std scaling)")
    p.add_argument("--no-clip", action="store_true", help="typed records: let generated numbers leave the data's "
                   "[min, max] (default: clipped to it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frequency draw (default 0)")
    add_connection_args(p, kafka=False, redis=False)
    p.set_defaults(func=cmd_sketch)

    p = sub.add_parser("fit", help="train a generator from a sketch file only")
    p.add_argument("sketch", help="sketch file written by `sketchgen sketch` or `sketchgen export`")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument(
        "--seconds", type=float, help=f"training time budget (default {DEFAULT_FIT_SECONDS:g} s unless --steps)"
    )
    p.add_argument("--steps", type=int, help="training step budget")
    p.add_argument("--latent", type=int, default=DEFAULT_LATENT, help=f"latent size k (default {DEFAULT_LATENT})")
    p.add_argument("--hidden", default=DEFAULT_HIDDEN, help=f"hidden widths (default {DEFAULT_HIDDEN})")
    p.add_argument("--slope", type=float, default=0.2, help="LeakyReLU slope (default 0.2)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"latents per step (default {DEFAULT_BATCH})")
    p.add_argument("--batch-start", type=float, default=DEFAULT_BATCH_START,
                   help=f"fraction of --batch the annealed budget starts with, growing linearly to --batch "
                   f"(default {DEFAULT_BATCH_START:g}; 1 = constant)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"initial Adam learning rate (default {DEFAULT_LR:g})")
    p.add_argument("--no-anneal", action="store_true", help="keep the learning rate constant")
    p.add_argument("--resume", action="store_true", help="warm-start from the model already in --out")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_connection_args(p, kafka=False, redis=False)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("sample", help="draw samples from a trained model (a directory, or a stream's in Redis)")
    p.add_argument("model", help="model directory written by `sketchgen fit`, or a stream name (latest checkpoint)")
    p.add_argument("-n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output file (.npy or .csv; a model of typed records: .csv or "
                   ".jsonl), or - for CSV on stdout")
    p.add_argument("--seed", type=int, help="seed (default: random)")
    add_connection_args(p, kafka=False)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("plot", help="2-D histograms of data and samples side by side (PNG)")
    p.add_argument("data", help="data file (.npy or .csv)")
    p.add_argument("samples", help="samples file (.npy or .csv)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--dims", default="0,1", help="pair of coordinates to show (default 0,1)")
    p.add_argument("--bins", type=int, default=100, help="histogram bins per axis (default 100)")
    add_connection_args(p, kafka=False, redis=False)
    p.set_defaults(func=cmd_plot)


def sketch_rows(spec_fmap: FeatureMap, x: np.ndarray, fingerprint: str, progress: bool = True) -> Sketch:
    """Sketch ``x`` in blocks of rows, with a progress bar on large inputs."""
    total = np.zeros(2 * spec_fmap.m)
    blocks = range(0, x.shape[0], PROGRESS_ROWS)
    show = progress and x.shape[0] > PROGRESS_ROWS
    for start in tqdm(blocks, desc="sketching", unit="block", disable=not show):
        part, _ = spec_fmap.feature_sum(x[start : start + PROGRESS_ROWS], validate=False)
        total += part
    return Sketch(total, x.shape[0], fingerprint)


def cmd_sketch(args: argparse.Namespace) -> int:
    if args.m is not None and args.m < 1:
        raise DataError(f"--m must be >= 1, got {args.m}")
    if args.sigma is not None and not args.sigma > 0:
        raise DataError(f"--sigma must be > 0, got {args.sigma}")
    if reads_records(args.data, args.schema):
        start = time.perf_counter()
        spec, x = typed_sketch_input(args.data, args.schema, m=args.m, law=args.law, sigma=args.sigma,
                                     seed=args.seed, kernel=args.kernel, standardize=not args.no_standardize,
                                     keep_ranges=not args.no_clip)
    else:
        x = load_data(args.data)
        start = time.perf_counter()
        spec = spec_from_pilot(
            x, m=args.m, law=args.law, sigma=args.sigma, seed=args.seed,
            standardize=not args.no_standardize, name=Path(args.data).stem, kernel=args.kernel,
        )
    sketch = sketch_rows(FeatureMap(spec), x, spec.fingerprint)
    save_sketch(args.out, spec, sketch)
    log.info("sketched %d rows in %.2fs: %s -> %s", x.shape[0], time.perf_counter() - start, spec.describe(), args.out)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise DataError(f"--steps must be >= 1, got {args.steps}")
    if args.seconds is not None and not args.seconds > 0:
        raise DataError(f"--seconds must be > 0, got {args.seconds}")
    seconds = args.seconds if (args.seconds is not None or args.steps is not None) else DEFAULT_FIT_SECONDS
    spec, sketch = load_sketch(args.sketch)
    if sketch.count == 0:
        raise SketchgenError(f"{args.sketch}: the sketch holds no records")
    gconf = GeneratorConfig(latent=args.latent, hidden=parse_hidden(args.hidden), output=spec.d, slope=args.slope)
    tconf = TrainConfig(batch=args.batch, lr=args.lr, seed=args.seed, anneal=not args.no_anneal,
                        batch_start=args.batch_start)
    trainer = Trainer(spec, gconf, tconf)
    if args.resume:
        from learner.checkpoint import restore_trainer

        restore_trainer(trainer, load_model_dir(args.out, expected_fingerprint=spec.fingerprint))
        log.info("resumed from %s at step %d", args.out, trainer.steps)
    trainer.set_target(sketch)
    last_log = [time.perf_counter()]

    def report(step: int, value) -> None:
        now = time.perf_counter()
        if now - last_log[0] >= 5.0:
            last_log[0] = now
            log.info("step %d  loss %.3e  (floor %.1e)", step, value.loss, value.floor)

    result = trainer.train(steps=args.steps, seconds=seconds, callback=report)
    summary = {
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "loss": result.loss,
        "loss_minus_floor": result.corrected_loss,
        "floor": result.floor,
        "sketch_records": sketch.count,
    }
    save_model_dir(args.out, trainer, extra={"training": summary})
    log.info("trained %d steps in %.1fs, loss %.3e (floor %.1e) -> %s", result.steps, result.seconds,
             result.loss, result.floor, args.out)
    print(json.dumps(summary))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise DataError(f"-n must be >= 1, got {args.n}")
    ckpt = load_model(args)
    samples = ckpt.sample(args.n, seed=args.seed)
    if ckpt.encoder is not None:
        write_records(args.out, ckpt.encoder, samples)
    else:
        save_samples(args.out, samples)
    return 0


def load_model(args: argparse.Namespace) -> Checkpoint:
    """The model ``args.model`` names: a model file or a directory holding one, else a stream's latest checkpoint.

    A directory without a model (say ``bench/`` beside a stream named ``bench``) does not hide the stream.
    """
    path = Path(args.model)
    return load_model_dir(path) if path.is_file() or (path / MODEL_FILE).is_file() else stream_checkpoint(args)


def stream_checkpoint(args: argparse.Namespace) -> Checkpoint:
    """The latest checkpoint of stream ``args.model`` in Redis, verified against the stream's spec."""
    from sketch_store.leadership import CheckpointStore
    from sketchgen.streaming import open_store

    conn = Connections.from_args(args)
    try:
        store = open_store(conn)
        spec = store.get_spec(args.model)
    except StreamNotFoundError:
        raise SketchgenError(f"no model found at {args.model}: not a model directory, nor a stream in Redis") from None
    except SketchgenError as exc:  # Redis unreachable or misconfigured
        raise SketchgenError(f"no model found at {args.model}: not a model directory ({exc})") from None
    stored = CheckpointStore(store.client, args.model).load()
    if stored is None:
        raise SketchgenError(f"stream {args.model!r} has no model checkpoint yet (is a learner running?)")
    if stored.incarnation != store.incarnation(args.model):
        raise SketchgenError(f"the checkpoint of stream {args.model!r} was trained before the stream was recreated; "
                             "wait for the learner's first checkpoint of the new stream")
    return load_checkpoint(stored.model, expected_fingerprint=spec.fingerprint)


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        dims = tuple(int(v) for v in args.dims.split(","))
    except ValueError:
        raise DataError(f"--dims must be two integers like 0,1, got {args.dims!r}") from None
    if len(dims) != 2 or min(dims) < 0:
        raise DataError(f"--dims must be two non-negative integers like 0,1, got {args.dims!r}")
    data = load_data(args.data)
    samples = load_data(args.samples)
    if data.shape[1] != samples.shape[1]:
        raise DataError(f"data have dimension {data.shape[1]} but samples {samples.shape[1]}")
    plot_histograms([("data", data), ("generated", samples)], args.out, dims=(dims[0], dims[1]), bins=args.bins)
    log.info("wrote %s", args.out)
    return 0
