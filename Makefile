# The two commands a newcomer runs: `make lab` and `make test`. Both set up .venv when needed.
#
# torch is installed first, on its own, so that no other requirement pulls a multi-GB CUDA build onto
# a CPU machine. On this project's machines `pip install torch==2.13.0` takes a local CPU build.
# Elsewhere: CPU users add TORCH_INDEX=https://download.pytorch.org/whl/cpu, GPU users pick the
# build for their CUDA version, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128.

PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install

.PHONY: lab test lint format bench bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e ".[test,lab]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/01_quickstart.ipynb

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/core_speed.py --json benchmarks/results/core_speed.json

# Against pyDVL and Captum, in a separate environment so that their requirements never touch .venv.
# torch first, on its own, as for .venv: pip then keeps it, since both peers accept torch 2.13.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.stamp-install

$(PEERS)/bin/python:
	$(PYTHON) -m venv $(PEERS)

$(PEERS_STAMP): pyproject.toml | $(PEERS)/bin/python
	$(PEERS)/bin/python -c "import torch" 2>/dev/null || \
		$(PEERS)/bin/pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PEERS)/bin/pip install --quiet -e . "pydvl[influence]==0.10.0" "captum==0.9.0"
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	$(PEERS)/bin/python benchmarks/peers.py --json benchmarks/results/peers.json

# Binder: binder/runtime.txt's Python resolves every pin (PyPI), then, where python3 is that
# version, a fresh venv from binder/ runs postBuild and every notebook under Binder's memory,
# recording each notebook's peak in benchmarks/results/binder.json. Slow (minutes); CI runs it.
.PHONY: binder-check
binder-check:
	$(PYTHON) scripts/binder_check.py --json benchmarks/results/binder.json

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache .ruff_cache
