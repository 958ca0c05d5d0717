# certfleet — `make demo` runs the main job on a simulated fleet, `make test` runs the checks.
# Both create the virtualenv in .venv/ and install what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test firmware chaos fuzz lint format bench services worker beat listener flower clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m simulator.demo

# The Redis adapters' tests, run a second time on a three-master Redis Cluster.
REDIS_ADAPTER_TESTS = tests/integration/test_batch_scripts.py tests/integration/test_plan_stores.py \
	tests/integration/test_api.py tests/integration/test_redispatch.py tests/integration/test_console_auth.py \
	tests/integration/test_console_rollout.py tests/integration/test_console_fleet.py \
	tests/integration/test_console_plans.py tests/integration/test_console_live.py \
	tests/integration/test_keys_cli.py \
	$(filter-out tests/integration/test_redis_failover.py,$(wildcard tests/integration/test_*redis*.py))

test: install lint
	$(BIN)/pytest
	CERTFLEET_TEST_REDIS=cluster $(BIN)/pytest -q $(REDIS_ADAPTER_TESTS)
	$(MAKE) -C firmware test conformance e2e e2e-identity size

# The C device library's host build: the library, its tests and the certfleet-device binary.
firmware:
	$(MAKE) -C firmware build

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy orchestrator workers simulator
	$(BIN)/lint-imports

chaos: install
	$(BIN)/python -m tests.chaos.run
	CERTFLEET_CHAOS=1 $(BIN)/pytest -q tests/e2e/test_cluster_failover.py

# Property tests at random with many more examples (tests/properties.py), then the C
# library's libFuzzer targets for FUZZ_SECONDS each; a failure found becomes a regression example.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/unit
	$(MAKE) -C firmware fuzz

bench: install
	$(BIN)/python -m tests.bench.run

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

services: install
	$(BIN)/python -m simulator.services

worker: install
	$(BIN)/celery -A workers.app worker -Q control,push,scan --loglevel INFO

beat: install
	$(BIN)/celery -A workers.app beat --loglevel INFO

listener: install
	$(BIN)/certfleet listener

flower: install
	$(BIN)/celery -A workers.app flower --address=127.0.0.1 --port=5555

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
