"""``sketchgen report``: score a model's samples against held-out records (docs/learner.md, "Quality report").

``sketchgen report (MODEL_DIR|NAME) --data HOLDOUT --out REPORT.json [--html REPORT.html]`` draws as many
samples as the holdout has rows (``-n`` to choose), scores them with
:func:`sketchgen.quality_report.quality_scores` and writes the scores as JSON (and a self-contained HTML
page); a short table goes to standard output. A typed model reads the holdout as records of its schema
(``.csv``/``.jsonl``); a numeric one reads vectors (``.npy``/``.csv``) of its dimension.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import numpy as np

from learner.checkpoint import Checkpoint
from sketch_store.errors import DataError
from sketch_store.schema import Schema
from sketchgen.datafiles import load_data
from sketchgen.offline import load_model
from sketchgen.quality_report import numeric_schema, quality_scores, vectors_as_records
from sketchgen.settings import add_connection_args
from sketchgen.typed_files import read_checked_records

MAX_SAMPLES = 5000  # the scores subsample both sides to this many rows


def add_report_command(sub: argparse._SubParsersAction) -> None:
    """Register ``report`` on an argparse sub-parser collection."""
    p = sub.add_parser("report", help="quality report of a model's samples against held-out records (SDMetrics)")
    p.add_argument("model", help="model directory written by `sketchgen fit`, or a stream name (latest checkpoint)")
    p.add_argument("--data", required=True, help="held-out records (.csv/.jsonl for a typed model; .npy/.csv "
                   "vectors for a numeric one)")
    p.add_argument("--out", required=True, help="report file (.json)")
    p.add_argument("--html", help="also write the report as a self-contained HTML page")
    p.add_argument("-n", type=int, help=f"samples to draw (default: the holdout's rows, at most {MAX_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and the subsampling (default 0)")
    add_connection_args(p, kafka=False)
    p.set_defaults(func=cmd_report)


def holdout_records(ckpt: Checkpoint, path: Path) -> tuple[list[dict], Schema]:
    """The holdout as records of the model's schema (a numeric model: vectors named x0 … x{d-1})."""
    if ckpt.encoder is not None:
        return read_checked_records(path, ckpt.encoder.schema), ckpt.encoder.schema
    x = load_data(path)
    d = ckpt.generator_config.output
    if x.shape[1] != d:
        raise DataError(f"{path}: holds {x.shape[1]}-dimensional rows, the model generates {d}")
    schema = numeric_schema(d)
    return vectors_as_records(x, schema), schema


def sampled_records(ckpt: Checkpoint, n: int, seed: int, schema: Schema) -> list[dict]:
    """``n`` samples of the model as records (decoded by its encoder, or named vectors)."""
    rows = ckpt.sample(n, seed=seed)
    if not np.all(np.isfinite(rows)):
        raise DataError("the model's samples are not finite: it diverged; retrain it before reporting")
    if ckpt.encoder is not None:
        return ckpt.encoder.decode_many(rows)
    return vectors_as_records(rows, schema)


def summary_lines(scores: dict) -> list[str]:
    """The report's headline scores, one per line."""
    sdm = scores["sdmetrics"]

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return [f"overall (SDMetrics)    {fmt(sdm['overall'])}",
            f"column shapes          {fmt(sdm['column_shapes'])}",
            f"column pair trends     {fmt(sdm['column_pair_trends'])}",
            f"MMD ratio              {scores['mmd_ratio']:.3f}   (about 1: indistinguishable)",
            f"classifier AUC         {scores['classifier_auc']:.3f}   (0.5: indistinguishable)",
            f"records                {scores['n_synthetic']} generated vs {scores['n_real']} held out"]


def report_html(scores: dict, model: str, data: str) -> str:
    """A self-contained HTML page of the scores and the per-field column shapes."""
    head = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(scores))
    rows = "".join(f"<tr><td>{html.escape(c['field'])}</td><td>{html.escape(c['metric'])}</td>"
                   f"<td>{'n/a' if c['score'] is None else format(c['score'], '.3f')}</td></tr>"
                   for c in scores["sdmetrics"]["columns"])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>sketchgen quality report</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}"
            "li{font-family:monospace;white-space:pre}</style></head><body>"
            f"<h1>Quality report</h1><p>model <code>{html.escape(model)}</code> against "
            f"<code>{html.escape(data)}</code></p><ul>{head}</ul><h2>Column shapes</h2>"
            f"<table><tr><th>field</th><th>metric</th><th>score</th></tr>{rows}</table></body></html>\n")


def cmd_report(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 2:
        raise DataError(f"-n must be >= 2, got {args.n}")
    ckpt = load_model(args)
    real, schema = holdout_records(ckpt, Path(args.data))
    if len(real) < 2:
        raise DataError(f"{args.data}: a quality report needs at least 2 held-out records, got {len(real)}")
    n = args.n or min(len(real), MAX_SAMPLES)
    scores = quality_scores(real, sampled_records(ckpt, n, args.seed, schema), schema, seed=args.seed,
                            encoder=ckpt.encoder)
    scores = {"model": args.model, "data": args.data, **scores}
    Path(args.out).write_text(json.dumps(scores, indent=2) + "\n")
    if args.html:
        Path(args.html).write_text(report_html(scores, args.model, args.data))
    print("\n".join(summary_lines(scores)))
    return 0
