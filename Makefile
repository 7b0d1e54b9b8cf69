# Tillstream: `make run` starts the whole system, `make test` runs the suite.
# Every install happens here, into .venv, from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak fuzz install clean catalog

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A developer's machine: the test payment gateway is allowed (shared/safety.py).
run: $(STAMP)
	TILLSTREAM_DEVELOPMENT=true $(PY) -m tillstream.run

# The linter first: a suite that passes on code the linter refuses is not green.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# A longer fuzzing of both dialects than the suite's (schemathesis, from /openapi.json).
fuzz: $(STAMP)
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-150} $(PY) -m pytest -q -s tests/test_fuzzing.py $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# 8 concurrent Solidus checkouts for SOAK_S seconds (10 minutes), minute by minute.
soak: $(STAMP)
	$(PY) -m bench.run --soak $${SOAK_S:-600} $(BENCH_ARGS)

catalog: $(STAMP)
	$(PY) -m tillstream.catalog

clean:
	rm -rf .data
