#!/usr/bin/env bash
# Download, here, the wheels that scripts/gpu_check.sh installs on a GPU machine without network.
#
# That machine (see README "GPU users") has Python 3.12 with a CUDA torch, numpy, scipy,
# matplotlib, scikit-learn, tqdm, pytest and pytest-timeout, but not the widget stack this package
# imports: anywidget, ipywidgets and IPython with their dependencies, listed here one by one, pinned
# to the versions this project's .venv runs. No torch: the machine's own CUDA build is used.
# Also two of the peers of benchmarks/peers.py, for scripts/gpu_peers.sh: Captum 0.9.0 (its other
# dependencies are on that machine) and Kronfluence 1.0.1 with what its modules import (the
# Makefile's PEERS line; accelerate's own imports: psutil, pyyaml; torchvision and
# huggingface_hub are declared but not imported on that path), about 2.5 MB. pyDVL 0.10.0 is left
# out: what its influence module imports (pandas, dask, distributed, zarr 3 with numcodecs < 0.16,
# ...) came to 31 MB of wheels on 2026-12-02 before its resolution was even consistent, and it
# pins numpy < 2 where that machine's torch stack has its own numpy; gpu_peers.sh runs it only
# where it already imports.
# Usage, from the repository root: scripts/gpu_wheels.sh   (writes .gpu-wheels/, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-python3 -m pip}
DEST=.gpu-wheels
WHEELS=(
  anywidget==0.11.0 psygnal==0.16.1
  ipywidgets==8.1.9 comm==0.2.3 jupyterlab_widgets==3.0.17 widgetsnbextension==4.0.16
  traitlets==5.16.1
  ipython==9.18.1 ipython_pygments_lexers==1.1.1 jedi==0.20.1 parso==0.8.7
  matplotlib-inline==0.2.2 pexpect==4.9.0 ptyprocess==0.7.0 prompt_toolkit==3.0.53
  wcwidth==0.9.4 stack_data==0.6.3 executing==2.3.0 asttokens==3.0.2 pure_eval==0.2.4
  captum==0.9.0
  kronfluence==1.0.1 accelerate==1.16.0 einops==0.8.2 einconv==0.1.0 opt-einsum==3.4.0
  safetensors==0.8.0 psutil==7.2.2 pyyaml==6.0.4
)
mkdir -p "$DEST"
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$DEST" "${WHEELS[@]}"
ls -1 "$DEST"
du -sh "$DEST"
