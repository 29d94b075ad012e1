"""How close generated records are to held-out ones: SDMetrics' quality report, the MMD ratio and a classifier AUC.

:func:`quality_scores` compares two lists of records of one :class:`~sketch_store.schema.Schema`
(docs/learner.md, "Quality report"):

* **SDMetrics** (the optional ``report`` extra): ``column_shapes`` averages, over fields, one minus the
  Kolmogorov–Smirnov statistic (numbers) or one minus the total variation distance (categories,
  booleans); ``column_pair_trends`` averages, over pairs of fields, one minus half the difference of their
  correlations (numbers) or of their contingency tables; ``overall`` is the mean of both. 1 is a perfect copy.
* **MMD ratio** (:func:`learner.evaluation.mmd_ratio`) on the records' encoded rows (standardised numbers,
  scaled one-hot categories: docs/design.md §1, "Typed records"): about 1 means indistinguishable at these
  sample sizes.
* **Classifier AUC** (:func:`learner.evaluation.classifier_auc`) of gradient boosting telling the two sets
  apart from the encoded rows: 0.5 means it cannot.

Example
-------
>>> from sketch_store.schema import Field, Schema
>>> import random
>>> schema = Schema((Field("x", "float"), Field("c", "category", categories=("a", "b"))))
>>> rnd = random.Random(0)
>>> rows = [{"x": rnd.gauss(0, 1), "c": rnd.choice("ab")} for _ in range(400)]
>>> scores = quality_scores(rows[:200], rows[200:], schema)
>>> scores["sdmetrics"]["overall"] > 0.8
True
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence

import numpy as np

from learner.evaluation import classifier_auc, mmd_ratio
from sketch_store.errors import DataError, SketchgenError
from sketch_store.schema import Field, Schema
from sketch_store.typed_encoding import Encoder, EncodingStats, fit_encoding_stats, lookup

log = logging.getLogger(__name__)

Record = Mapping[str, object]

TABLE = "records"  # SDMetrics' reports take named tables; ours is the one table of the schema
SDTYPES = {"float": "numerical", "int": "numerical", "bool": "boolean", "category": "categorical"}


class MissingExtraError(SketchgenError):
    """SDMetrics is not installed."""


def _sdmetrics_report():
    try:
        from sdmetrics.reports import QualityReport
    except ImportError:
        raise MissingExtraError("sketchgen report needs the optional SDMetrics extra: "
                                 "pip install 'sketchgen[report]'") from None
    return QualityReport


def numeric_schema(d: int) -> Schema:
    """The schema of plain vectors: float fields ``x0 … x{d-1}``."""
    return Schema(tuple(Field(f"x{j}", "float") for j in range(d)))


def vectors_as_records(x: np.ndarray, schema: Schema) -> list[dict[str, object]]:
    """Rows of a numeric array as records of ``schema``'s float fields (in order)."""
    names = schema.names
    return [dict(zip(names, map(float, row), strict=True)) for row in np.asarray(x, dtype=np.float64)]


def _subsample(records: Sequence[Record], max_rows: int, seed: int) -> list[Record]:
    if len(records) <= max_rows:
        return list(records)
    return random.Random(seed).sample(list(records), max_rows)


def _frame(records: Sequence[Record], schema: Schema):
    """A pandas DataFrame with one column per field, typed as SDMetrics reads them (nulls as missing)."""
    import pandas as pd

    columns = {}
    for f in schema.fields:
        values = [lookup(r, f.name) for r in records]
        if f.type in ("float", "int"):
            columns[f.name] = pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
        elif f.type == "bool":
            columns[f.name] = pd.Series(values, dtype="boolean")
        else:
            columns[f.name] = pd.Series([None if v is None else str(v) for v in values], dtype="object")
    return pd.DataFrame(columns)


def sdmetrics_scores(real: Sequence[Record], synthetic: Sequence[Record], schema: Schema) -> dict[str, object]:
    """SDMetrics' quality report: overall, column shapes, column pair trends, and one score per field."""
    report = _sdmetrics_report()()
    metadata = {"tables": {TABLE: {"columns": {f.name: {"sdtype": SDTYPES[f.type]} for f in schema.fields}}}}
    report.generate({TABLE: _frame(real, schema)}, {TABLE: _frame(synthetic, schema)}, metadata, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes")
    columns = [{"field": str(row["Column"]), "metric": str(row["Metric"]), "score": _num(row["Score"])}
               for _, row in shapes.iterrows()]
    pair = props.get("Column Pair Trends")
    return {"overall": _num(report.get_score()), "column_shapes": _num(props.get("Column Shapes")),
            "column_pair_trends": None if pair is None else _num(pair), "columns": columns}


def _num(value: object) -> float | None:
    """A float, or None for SDMetrics' NaN (a score it could not compute)."""
    v = float(value)  # type: ignore[arg-type]
    return v if np.isfinite(v) else None


def _encoder(schema: Schema, real: Sequence[Record], encoder: Encoder | None) -> Encoder:
    """The model's encoder, else one fitted to the real records (numbers standardised on them)."""
    if encoder is not None:
        return encoder
    if schema.is_numeric:
        x = np.array([[float(lookup(r, n)) for n in schema.names] for r in real])  # type: ignore[arg-type]
        std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        return Encoder(schema, EncodingStats({n: (float(mu), float(s))
                                              for n, mu, s in zip(schema.names, x.mean(axis=0), std, strict=True)}))
    return Encoder(schema, fit_encoding_stats(schema, real, unknown="other"))


def quality_scores(real: list[dict], synthetic: list[dict], schema: Schema, *, seed: int = 0,
                   max_rows: int = 5000, encoder: Encoder | None = None) -> dict:
    """All scores of ``synthetic`` against ``real`` records (module docstring), as a JSON-safe dict.

    Both sides are subsampled to ``max_rows`` (seeded). ``encoder`` (the model's) encodes both for the MMD
    ratio and the AUC; without it, one is fitted to ``real``.
    """
    if not real or not synthetic:
        raise DataError(f"a quality report needs records on both sides, got {len(real)} real and "
                        f"{len(synthetic)} synthetic")
    real_s, synth_s = _subsample(real, max_rows, seed), _subsample(synthetic, max_rows, seed + 1)
    sdm = sdmetrics_scores(real_s, synth_s, schema)
    enc = _encoder(schema, real_s, encoder)
    a, b = enc.encode_many(real_s), enc.encode_many(synth_s)
    log.info("scored %d synthetic against %d real records: overall %.3f", len(synth_s), len(real_s), sdm["overall"])
    return {"sdmetrics": sdm, "mmd_ratio": float(mmd_ratio(a, b, seed=seed).ratio),
            "classifier_auc": classifier_auc(a, b, seed=seed), "n_real": len(real_s), "n_synthetic": len(synth_s)}
