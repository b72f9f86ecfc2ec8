# calolab front door. `make run` and `make test` set up .venv first (idempotent, quick when done).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.calolab-installed
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

# the default experiment; override e.g. `make run RUN_ARGS="trainer.max_epochs=20"`
RUN_ARGS ?=

.PHONY: setup run test lint ui server bench clean

setup: $(STAMP)

# re-install also when a top-level package appears (the editable install maps packages at install time)
$(STAMP): pyproject.toml constraints.txt $(wildcard */__init__.py hydra_plugins/*/__init__.py)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "calolab: installing into $(VENV) (torch 2.13.0 first, CPU build where available)"
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(BIN)/calolab train experiment=photon_id $(RUN_ARGS)

# two pytest workers (CI and these machines have 2 cores; most of the suite waits on subprocesses,
# process start-up and small trainings); `make test TEST_WORKERS=0` runs it in one process
TEST_WORKERS ?= 2
TEST_ARGS ?=
test: setup
	$(BIN)/python -m pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadfile --durations=30 $(TEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --default-artifact-root $(CURDIR)/mlruns/artifacts --port 5000

# the shared tracking server (PostgreSQL backend, proxied artifacts, basic-auth): the same command as
# docker/compose.yaml; settings from the environment or docker/server.env (see docker/server.env.example)
server: setup
	$(BIN)/python -m calolab.server

bench: setup
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/train_cpu.py
	$(BIN)/python bench/sweep_pruning.py
	$(BIN)/python bench/physics_jets.py

clean:
	rm -rf $(VENV) logs .pytest_cache
