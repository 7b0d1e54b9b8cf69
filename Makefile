# Tillstream: `make run` starts the whole system, `make test` runs the suite.
# Every install happens here, into .venv, from requirements.lock: each package pinned, with
# its hashes, so nothing unchecked is installed or run (pyproject.toml says what the lock is made from).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run demo test lint audit browser bench soak fuzz install clean catalog

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# A developer's machine: the test payment gateway is allowed (shared/safety.py).
run: $(STAMP)
	TILLSTREAM_DEVELOPMENT=true $(PY) -m tillstream.run

# A Solidus and a GetCandy checkout against the system `make run` started, step by step.
demo: $(STAMP)
	$(PY) -m examples.checkout $(DEMO_ARGS)

# The linter and the type checker first: a suite that passes on code they refuse is not green.
# mypy checks the files pyproject.toml's [tool.mypy] names.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint browser
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# Debian's Chromium, for the test that renders /docs and /redoc with the network cut. Where it
# cannot be installed (not root, not Debian), that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium is not installed: tests/test_api_docs.py will skip its browser test"


# Known vulnerabilities in what the lock installs, from PyPI's advisory data (its per-release JSON API):
# a package it cannot look up is reported, not failed; AUDIT_ARGS=--strict fails on it too.
audit: $(STAMP)
	$(VENV)/bin/pip-audit --disable-pip --no-deps -r requirements.lock $(AUDIT_ARGS)

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
