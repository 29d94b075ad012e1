"""The serving load bench (bench/serving_load.py): one smoke run through the real embedded stack.

d = 2, 3 000 records, one OpenMP setting, 4 clients, 4 s windows: every window probes the learner's steps at both
ends, the loaded windows get answers from the clients (200 or 429, each from its own process), the learner stops
cleanly, and the markdown and JSON are written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import serving_load


def test_phases_load_every_client_or_none() -> None:
    phases = serving_load.phases(16)
    assert [p.name for p in phases] == ["unloaded", "sample", "unloaded 2", "sample+density", "sample, no wait",
                                        "unloaded 3"]
    assert [len(p.endpoints) for p in phases] == [0, 16, 0, 16, 16, 0]
    assert phases[3].endpoints.count("density") == 8 and not phases[4].polite


@pytest.mark.slow
def test_smoke_run_measures_every_window(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SKETCHGEN_KAFKA", "127.0.0.1:1")  # the bench points its subprocesses at its own stack
    monkeypatch.setenv("SKETCHGEN_REDIS", "redis://127.0.0.1:1")
    out = tmp_path / "out"
    code = serving_load.main(["--dims", "2", "--threads", "1", "--records", "3000", "--window", "4", "--warmup", "2",
                              "--clients", "4", "--out-dir", str(out), "--workdir", str(tmp_path / "work")])
    assert code == 0
    figures = json.loads((out / "serving_load.json").read_text())
    (dim,) = figures["dims"]
    assert dim["d"] == 2 and dim["openmp"] == "1" and dim["learner_exit_code"] == 0
    assert len(dim["windows"]) == 6 and dim["windows"][0]["phase"] == "unloaded" and dim["unloaded_steps_per_s"] > 0
    for w in dim["windows"]:
        assert w["learner"]["seconds"] > 3 and w["learner"]["learner_cpu_per_s"] >= 0
        if w["phase"].startswith("unloaded"):
            assert w["clients"] == 0 and w["endpoints"] == {}
            continue
        assert w["clients"] == w["distinct_processes"] == 4
        answers = sum(sum(e["codes"].values()) for e in w["endpoints"].values())
        assert answers > 0 and all(set(e["codes"]) <= {"200", "429"} for e in w["endpoints"].values()), w
    assert {c["torch_threads"] for c in dim["costs"]} >= {1}
    text = (out / "serving_load.md").read_text()
    assert "| 2 | 1 | unloaded |" in text and "shared" in text and "--clients 4" in text
