# Two commands matter: `make demo` and `make test`. Both set up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := demo_out

.PHONY: setup demo test test-all lint typecheck bench gpu-check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	bash scripts/install_tensorrt_stubs.sh $(BIN)/python
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	bash scripts/demo.sh $(DEMO)

test: setup
	$(BIN)/ruff check .
	bash scripts/typecheck.sh $(BIN)/python
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	bash scripts/typecheck.sh $(BIN)/python

bench: setup
	bash scripts/bench.sh

# No `setup` dependency: GPU machines may have no network (docs/gpu_check.md).
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf $(DEMO) .pytest_cache
