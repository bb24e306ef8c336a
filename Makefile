# Two commands do all the set-up on a fresh machine (each installs what it needs):
#   make demo   grade the bundled examples (reference, template, mutants) and print the scores
#   make test   run the project's own tests
# Under root the grader runs student code as an unprivileged uid, which must be able to run the
# venv's Python: prefer the system's /usr/bin/python3 (3.10+) over one under /root (pyenv).
PY ?= $(shell for p in /usr/bin/python3 python3; do $$p -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmgrade-installed
JOBS ?= auto

.PHONY: install demo test test-fast lint format clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first: torch==2.13.0 is what pyproject pins, so pip pulls no CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[tools,course,dev]"
	touch $(STAMP)

# Student code runs in its course's environment (grader/envs.py): one venv per
# test_suites/*/environment.lock, built once into .lmgrade/envs ($$LMGRADE_ENV_CACHE), torch from
# the same CPU wheel. Run every time: it only checks what is already built.
install: $(STAMP)
	$(BIN)/lmgrade env --all --quiet

demo: install
	$(BIN)/lmgrade demo -o demo-out

test: install
	$(BIN)/python -m pytest -n $(JOBS) -q

# The edit-run loop: unit tests of compare, values, the oracle rules, the rubric parser, staging and
# the static rules; no grading, no course environment (under 60 s).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:xdist tests/unit tests/engine/test_staging.py

LINTED := grader tools tests benchmarks lmgrade.py

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

clean:
	rm -rf $(VENV) demo-out .lmgrade
