# The one list of commands. Every target works from a fresh clone with only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench torture torture-proof fuzz clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/schedctl serve --schedules schedules

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The torture suite's short version runs after the rest, its scenarios side by side.
test: lint
	$(BIN)/pytest -m "not torture_short"
	$(BIN)/pytest tests/torture -m torture_short -n 5

# The full torture suite (tests/torture, about 11 minutes, its scenarios side by side): tables in .torture/.
torture: $(STAMP)
	TORTURE=full $(BIN)/pytest tests/torture -m torture_full -n 5

# The claim-off proof: the replica scenario must catch runs fired twice.
torture-proof: $(STAMP)
	TORTURE=proof $(BIN)/pytest tests/torture -m torture_proof

# The loader and `validate` fuzzed (tests/test_fuzz_loader.py): FUZZ_EXAMPLES cases per
# property, two properties side by side (100,000 cases in all; `make test` runs 2,000).
FUZZ_EXAMPLES ?= 50000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_fuzz_loader.py -n 2 --hypothesis-show-statistics

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .engine .torture .pytest_cache .mypy_cache .ruff_cache
