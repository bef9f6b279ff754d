# Two commands a new user needs: `make run` and `make test`. Both build their own .venv.
SHELL  := bash
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

# The suite needs a real PostgreSQL server, headless Chromium, sipp and HAProxy: all come from apt (sudo
# when not root). BRIDGE_SKIP_POSTGRES=1 / BRIDGE_SKIP_BROWSER=1 / BRIDGE_SKIP_SIP=1 /
# BRIDGE_SKIP_REPLICAS=1 skip those tests instead.
test: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	[ -n "$$BRIDGE_SKIP_BROWSER" ] || bash .ci/chromium.sh
	[ -n "$$BRIDGE_SKIP_SIP" ] || bash .ci/sipp.sh
	[ -n "$$BRIDGE_SKIP_REPLICAS" ] || bash .ci/haproxy.sh
	if [ -z "$$BRIDGE_SKIP_POSTGRES" ]; then source .ci/postgres.sh; fi; $(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench

bench: $(STAMP)
	$(BIN)/python bench/bench_resampler.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
