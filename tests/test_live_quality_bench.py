"""The live quality bench (bench/live_quality.py): one smoke run through the real embedded stack.

moons, 3 000 records, samples at t0 + 5 s and 10 s: every point gets samples from ``/sample`` with a finite MMD
ratio and a step count that grows, both processes stop cleanly, and the markdown and JSON are written.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import live_quality


def test_stream_rows_repeat_a_short_table_evenly() -> None:
    train = np.arange(190.0)[:, None]  # distinct rows, as many as faithful's training rows
    sp = live_quality.Splits(train, [train], [(train, train)], None, real=True)
    rows = live_quality.stream_rows(sp, 1000, seed=0)
    assert rows.shape == (1000, 1)
    _, counts = np.unique(rows, return_counts=True)
    assert len(counts) == 190 and set(counts) == {5, 6}  # 1000 = 5 × 190 + 50
    assert not np.array_equal(rows[:190], train)  # shuffled


@pytest.mark.slow
def test_smoke_run_scores_samples_at_each_point(tmp_path, monkeypatch) -> None:
    # the bench points its subprocesses at its own stack through these; restored afterwards
    monkeypatch.setenv("SKETCHGEN_KAFKA", "127.0.0.1:1")
    monkeypatch.setenv("SKETCHGEN_REDIS", "redis://127.0.0.1:1")
    out = tmp_path / "out"
    code = live_quality.main(["--only", "moons", "--records", "3000", "--points", "5,10", "--out-dir", str(out),
                              "--workdir", str(tmp_path / "work")])
    assert code == 0
    figures = json.loads((out / "live_quality.json").read_text())
    (row,) = figures["datasets"]
    assert row["name"] == "moons" and row["d"] == 2 and row["records"] == 3000 and row["n_samples"] == 12_500
    assert row["exit_codes"] == {"learn": 0, "ingest": 0} and row["ingest_seconds"] > 0
    assert [p["at"] for p in row["points"]] == [5.0, 10.0]
    for point in row["points"]:
        assert point["ratio"] is not None and math.isfinite(point["ratio"]) and point["ratio"] > 0, point
        assert np.load(point["samples"]).shape == (12_500, 2)
    assert 0 < row["points"][0]["steps"] <= row["points"][1]["steps"]
    assert row["pass"] is None  # no point at 60 s
    text = (out / "live_quality.md").read_text()
    assert "| moons | 2 |" in text and "shared" in text and "--records 3000" in text
