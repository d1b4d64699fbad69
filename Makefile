# Two commands matter: `make demo` and `make test`. Both set up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := demo_out

.PHONY: setup demo test test-all lint typecheck bench gpu-check mutation clean

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

# Mutation testing of the code that decides scores and exactly-once (docs/testing.md). Slow: not part of
# `make test`; run it when those functions change. The good-model fixtures are built once and cached.
MUTATION_BUDGET ?= 3600
MUTANTS = 'lenstrt.metrics.*' 'lenstrt.runtime.ensemble.*' 'lenstrt.serve.ledger.*' \
	'lenstrt.serve.pipeline.xǁRunǁcommit*' 'lenstrt.serve.pipeline.x_prepare*' 'lenstrt.serve.pipeline.x_catalog_columns*' \
	'lenstrt.serve.pipeline.xǁBusyTimeǁ*' \
	'lenstrt.export.validate.x_agreement*' 'lenstrt.export.validate.x_within*' \
	'lenstrt.export.pipeline.x_auc_drop_fails*' 'lenstrt.export.pipeline.x_gate_failure*' 'lenstrt.export.tolerances.*'
define MUTATION_REPORT
import collections, fnmatch, json, pathlib, sys
stat = {1: "killed", 3: "killed", 0: "survived", None: "not run", 33: "no tests", 5: "no tests"}
res, bad, low = collections.defaultdict(collections.Counter), [], []
for meta in sorted(pathlib.Path("mutants").rglob("*.py.meta")):
    for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        if any(fnmatch.fnmatch(key, p) for p in sys.argv[1:]):
            s = stat.get(code, "timeout" if code in (24, -24, 36, 152, 255) else f"exit {code}")
            res[str(meta.relative_to("mutants"))[:-5]][s] += 1
            bad += [f"  {s}: {key}"] if s not in ("killed", "not run") else []
for mod, c in res.items():
    n = sum(c.values()) - c["not run"]
    print(f"{mod:28} {c['killed']:4} of {n:4} killed ({100 * c['killed'] / max(n, 1):5.1f}%)  {dict(c)}")
    low += [mod] if c["killed"] < 0.9 * n or not n else []
print("not killed (see docs/testing.md):", *bad, sep="\n")
sys.exit(f"mutation score under 90%: {low}" if low or not res else 0)
endef
export MUTATION_REPORT

mutation: setup
	rm -rf mutants
	LENSTRT_TEST_CACHE=$(CURDIR)/mutants/fixtures $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_oracle_calibration.py::test_bundle_carries_the_checkpoint_temperatures_and_enforces_the_auc_gate
	-LENSTRT_TEST_CACHE=$(CURDIR)/mutants/fixtures timeout $(MUTATION_BUDGET) $(BIN)/mutmut run --max-children 2 \
		$(MUTANTS) > mutants/run.log 2>&1
	$(BIN)/python -c "$$MUTATION_REPORT" $(MUTANTS)

clean:
	rm -rf $(DEMO) .pytest_cache
