"""``sketchgen report`` and :func:`sketchgen.quality_report.quality_scores` (docs/learner.md, "Quality report").

The scores are checked on sets whose answer is known: a second draw of the same table scores near a perfect
copy, a table with a shifted number and reshuffled categories scores clearly lower. The command runs for real
in-process on a model fitted (a few hundred steps) from the diamonds-like table of the typed offline tests,
and on a numeric model with an ``.npy`` holdout; its failures are one line and exit 2.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from sketch_store.schema import Schema
from sketchgen.cli import main
from sketchgen.quality_report import numeric_schema, quality_scores, vectors_as_records
from tests.test_typed_offline import make_diamonds, write_csv

SCHEMA_JSON = {"fields": [{"name": "carat", "type": "float"},
                          {"name": "cut", "type": "category", "categories": ["Fair", "Good", "Very Good", "Premium",
                                                                             "Ideal"]},
                          {"name": "price", "type": "int"}, {"name": "certified", "type": "bool"},
                          {"name": "depth", "type": "float", "nullable": True}]}


@pytest.fixture(autouse=True)
def no_default_redis(monkeypatch):
    """A model name that is not a directory would be looked up in Redis: never reach a server not started here."""
    monkeypatch.setenv("SKETCHGEN_REDIS", "redis://127.0.0.1:1/0")


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_json(json.dumps(SCHEMA_JSON))


def distorted(records: list[dict]) -> list[dict]:
    """Carats tripled, cuts drawn uniformly, certified flipped: wrong shapes in three fields."""
    rng = np.random.default_rng(5)
    cuts = SCHEMA_JSON["fields"][1]["categories"]
    return [{**r, "carat": 3 * r["carat"], "cut": str(rng.choice(cuts)), "certified": not r["certified"]}
            for r in records]


def test_a_second_draw_of_the_table_scores_near_a_perfect_copy(schema):
    scores = quality_scores(make_diamonds(1500, seed=1), make_diamonds(1500, seed=2), schema)
    sdm = scores["sdmetrics"]
    assert sdm["overall"] > 0.9 and sdm["column_shapes"] > 0.9 and sdm["column_pair_trends"] > 0.85
    assert {c["field"] for c in sdm["columns"]} == set(schema.names)
    assert scores["mmd_ratio"] < 2.0
    assert 0.4 < scores["classifier_auc"] < 0.6
    assert (scores["n_real"], scores["n_synthetic"]) == (1500, 1500)
    json.dumps(scores)  # JSON-safe


def test_a_distorted_table_scores_clearly_lower(schema):
    real = make_diamonds(1500, seed=1)
    good = quality_scores(real, make_diamonds(1500, seed=2), schema)
    bad = quality_scores(real, distorted(make_diamonds(1500, seed=2)), schema)
    assert bad["sdmetrics"]["column_shapes"] < good["sdmetrics"]["column_shapes"] - 0.2
    assert bad["mmd_ratio"] > 10 * good["mmd_ratio"]
    assert bad["classifier_auc"] > 0.95


def test_both_sides_are_subsampled_to_max_rows(schema):
    scores = quality_scores(make_diamonds(900, seed=1), make_diamonds(700, seed=2), schema, max_rows=500)
    assert (scores["n_real"], scores["n_synthetic"]) == (500, 500)


def test_numeric_vectors_are_scored_as_named_float_fields():
    rng = np.random.default_rng(0)
    s = numeric_schema(3)
    scores = quality_scores(vectors_as_records(rng.normal(size=(800, 3)), s),
                            vectors_as_records(rng.normal(size=(800, 3)) + np.array([0.0, 0.0, 2.0]), s), s)
    assert [c["field"] for c in scores["sdmetrics"]["columns"]] == ["x0", "x1", "x2"]
    assert scores["classifier_auc"] > 0.9


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    write_csv(work / "train.csv", make_diamonds(3000, seed=0))
    write_csv(work / "holdout.csv", make_diamonds(800, seed=9))
    (work / "schema.json").write_text(json.dumps(SCHEMA_JSON))
    assert main(["-q", "sketch", str(work / "train.csv"), "--schema", str(work / "schema.json"), "--out",
                 str(work / "s.npz"), "--m", "300"]) == 0
    assert main(["-q", "fit", str(work / "s.npz"), "--out", str(work / "model"), "--steps", "300"]) == 0
    return work


def test_report_of_a_typed_model_writes_json_html_and_a_summary(typed_model, capsys):
    w = typed_model
    assert main(["-q", "report", str(w / "model"), "--data", str(w / "holdout.csv"), "--out", str(w / "r.json"),
                 "--html", str(w / "r.html")]) == 0
    report = json.loads((w / "r.json").read_text())
    assert report["n_real"] == report["n_synthetic"] == 800
    assert 0.0 <= report["sdmetrics"]["overall"] <= 1.0 and 0.0 <= report["classifier_auc"] <= 1.0
    assert report["mmd_ratio"] > 0
    page = (w / "r.html").read_text()
    assert f"{report['sdmetrics']['overall']:.3f}" in page and "cut" in page and "<script" not in page
    assert "overall (SDMetrics)" in capsys.readouterr().out


def test_report_draws_the_samples_asked_for(typed_model):
    w = typed_model
    assert main(["-q", "report", str(w / "model"), "--data", str(w / "holdout.csv"), "--out", str(w / "r2.json"),
                 "-n", "300", "--seed", "3"]) == 0
    assert json.loads((w / "r2.json").read_text())["n_synthetic"] == 300


def test_report_of_a_numeric_model_reads_an_npy_holdout(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.normal(size=(4000, 2)))
    np.save(tmp_path / "hold.npy", rng.normal(size=(500, 2)))
    assert main(["-q", "sketch", str(tmp_path / "train.npy"), "--out", str(tmp_path / "s.npz"), "--m", "200"]) == 0
    assert main(["-q", "fit", str(tmp_path / "s.npz"), "--out", str(tmp_path / "m"), "--steps", "200"]) == 0
    assert main(["-q", "report", str(tmp_path / "m"), "--data", str(tmp_path / "hold.npy"), "--out",
                 str(tmp_path / "r.json")]) == 0
    assert [c["field"] for c in json.loads((tmp_path / "r.json").read_text())["sdmetrics"]["columns"]] == ["x0", "x1"]


def _fails_with(args: list[str], capsys, message: str) -> None:
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sketchgen: error:") and message in err, err


def test_a_holdout_that_does_not_fit_the_schema_is_one_line(typed_model, tmp_path, capsys):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n3,4\n")
    _fails_with(["report", str(typed_model / "model"), "--data", str(tmp_path / "other.csv"), "--out",
                 str(tmp_path / "r.json")], capsys, "schema")
    assert not (tmp_path / "r.json").exists()


def test_a_holdout_of_the_wrong_dimension_and_a_bad_n_are_one_line(tmp_path, capsys, typed_model):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.normal(size=(3000, 2)))
    np.save(tmp_path / "hold3.npy", rng.normal(size=(50, 3)))
    assert main(["-q", "sketch", str(tmp_path / "train.npy"), "--out", str(tmp_path / "s.npz"), "--m", "100"]) == 0
    assert main(["-q", "fit", str(tmp_path / "s.npz"), "--out", str(tmp_path / "m"), "--steps", "20"]) == 0
    _fails_with(["report", str(tmp_path / "m"), "--data", str(tmp_path / "hold3.npy"), "--out",
                 str(tmp_path / "r.json")], capsys, "3-dimensional")
    _fails_with(["report", str(typed_model / "model"), "--data", str(typed_model / "holdout.csv"), "--out",
                 str(tmp_path / "r.json"), "-n", "1"], capsys, "-n must be >= 2")


def test_without_sdmetrics_the_report_says_which_extra_to_install(typed_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sdmetrics.reports", None)  # makes the import raise ImportError
    _fails_with(["report", str(typed_model / "model"), "--data", str(typed_model / "holdout.csv"), "--out",
                 str(tmp_path / "r.json")], capsys, "pip install 'sketchgen[report]'")
