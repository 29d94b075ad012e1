# sketchgen developer commands. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv test lint bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when the project's dependencies change.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest sketch_store ingest learner sketchgen tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python bench/feature_throughput.py
	$(BIN)/python bench/ingest_throughput.py --json-records 600000
	$(BIN)/python bench/reproduce_paper.py
	$(BIN)/python bench/warm_start.py
	$(BIN)/python bench/drift.py --hours 8 --exact-hours 2
	$(BIN)/python bench/vs_exact_mmd.py
	$(BIN)/python bench/digits.py
	$(BIN)/python bench/sketch_size.py

DEMO_ARGS ?= --duration 90 --out demo.png

demo: $(STAMP)
	$(BIN)/sketchgen demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
