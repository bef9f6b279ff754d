# Two commands a new user needs: `make run` and `make test`. Both build their own .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bridge serve

test: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench

bench: $(STAMP)
	$(BIN)/python bench/bench_resampler.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
