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
# Extra options for `jupyter lab`, e.g. LAB_ARGS="--no-browser --port=8899". As root (a container,
# a CI runner) JupyterLab refuses to start without --allow-root: it is added only for uid 0.
LAB_ARGS ?=
ALLOW_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab test lint format bench bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e ".[test,lab]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ALLOW_ROOT) $(LAB_ARGS) notebooks/01_quickstart.ipynb

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

# Against pyDVL, Captum and Kronfluence, in a separate environment so that their requirements never
# touch .venv. torch first, on its own, as for .venv: pip then keeps it, since every peer accepts
# torch 2.13. Kronfluence 1.0.1 also declares torchvision, which none of its modules imports and
# whose PyPI builds do not run beside torch 2.13 here (and may pull another torch): so kronfluence
# goes in with --no-deps, after the packages its code does import (accelerate, einops, einconv,
# opt-einsum, safetensors, tqdm), pinned on the line before. dattri 0.3.0 (benchmarks/lds.py) needs
# only numpy, scipy, pyyaml, tqdm and pretty_midi: torch and torchvision are in its test extra.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.stamp-install

$(PEERS)/bin/python:
	$(PYTHON) -m venv $(PEERS)

# Makefile too: a .venv-peers set up before a peer was added here gets it on the next run.
$(PEERS_STAMP): pyproject.toml Makefile | $(PEERS)/bin/python
	$(PEERS)/bin/python -c "import torch" 2>/dev/null || \
		$(PEERS)/bin/pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PEERS)/bin/pip install --quiet -e . "pydvl[influence]==0.10.0" "captum==0.9.0" \
		"accelerate==1.16.0" "einops==0.8.2" "einconv==0.1.0" "opt-einsum==3.4.0" \
		"safetensors==0.8.0" "tqdm==4.70.1" "dattri==0.3.0"
	$(PEERS)/bin/pip install --quiet --no-deps "kronfluence==1.0.1"
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
