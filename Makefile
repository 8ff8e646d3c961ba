# Two entry points that work on a fresh machine with Python 3.11, git and make:
#   make demo   -> install into .venv and run the showcase scenario, ending in a report
#   make test   -> install into .venv, lint, type-check and run the test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly: the CPU wheel on local disk, never a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/swarm-tune sim run scenarios/quickstart.yaml --out runs_out/quickstart
	$(BIN)/swarm-tune sim baseline scenarios/quickstart.yaml --out runs_out/quickstart-baseline
	$(BIN)/swarm-tune report runs_out/quickstart --baseline runs_out/quickstart-baseline \
		--out runs_out/quickstart-report

lint: $(STAMP)
	$(BIN)/ruff check runtime sim analysis tests benchmarks
	$(BIN)/ruff format --check runtime sim analysis tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy -p swarm_tune
	$(BIN)/mypy --explicit-package-bases benchmarks

# Both sets run on both cores (pytest-xdist): first the fast set, then the slow set (real node
# swarms, network namespaces, browsers) two tests at a time, never beside the CPU-bound fast
# tests. Its tests wait on conditions with deadlines, so they hold on a busy box (.ci/busy).
# Last, the tests marked `alone` (sim-to-real calibration) with the box to themselves: they
# compare a model of this machine's spare CPU with what real nodes got, and another test's
# training that grabs whatever the nodes leave idle is not a machine the model describes.
pytest: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n 2
	$(BIN)/python -m pytest -q -m "slow and not alone" -n 2
	$(BIN)/python -m pytest -q -m alone

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_wire.py
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_net.py

clean:
	rm -rf $(VENV) runs_out .mypy_cache .pytest_cache .ruff_cache
