#!/usr/bin/env bash
# The GPU check: the device tests and core_speed on CUDA, in one run of at most 8 minutes (each
# step has its own timeout; at most 8 files are written under $OUT, what the device tool returns).
#
# Meant for a lent GPU machine with no network (Python 3.12 with a CUDA torch, numpy, scipy,
# matplotlib, scikit-learn, tqdm and pytest, but no widget stack). First, here, with network:
#     scripts/gpu_wheels.sh            # the missing pure-Python wheels into .gpu-wheels/
# then, on the GPU machine, from the repository root (.gpu-wheels/ carried along):
#     OUT=/some/dir scripts/gpu_check.sh
# (in this workplace: the device tool's run with command scripts/gpu_check.sh, carry
# [".gpu-wheels"] and timeout_s 540; $OUT is set there and its 8 files come back).
# (DEVICE=cpu runs the same steps on a machine without a GPU: a dry run of this script.)
# Outputs under $OUT (default ./gpu-check-out): env.txt, pytest.log, pytest.xml,
# core_speed_cuda.json (digits_lr and naive), core_speed_cuda_cnn.json (cnn), their logs and
# summary.txt. Fashion-MNIST is not there, so core_speed's paper-scale case is left out, and
# core_speed runs with --quick's 20 s query budget (rows past it are extrapolated, as on the CPU);
# its JSON is rewritten after every row, so a step cut off by its timeout keeps the rows it measured.
# The peers benchmark on CUDA is not a step here (these steps take the 8 minutes): it is
# scripts/gpu_peers.sh, a second call.
# The machine's own torch is kept: the wheels go to a separate folder on PYTHONPATH with --no-deps,
# and this repository is imported from its working tree (no pip install of it, so no torch pin).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
source scripts/gpu_setup.sh  # PY, SITE, DEVICE, step(), env.txt, wheels, imports

step pytest 180 "$OUT/pytest.log" "$PY" -m pytest tests/test_devices.py tests/test_core_exact.py \
  -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml"
tail -n 40 "$OUT/pytest.log"

step core_speed 120 "$OUT/core_speed.log" "$PY" benchmarks/core_speed.py --device "$DEVICE" \
  --quick --cases digits_lr,naive --json "$OUT/core_speed_$DEVICE.json"
tail -n 30 "$OUT/core_speed.log"
step core_speed_cnn 90 "$OUT/core_speed_cnn.log" "$PY" benchmarks/core_speed.py \
  --device "$DEVICE" --quick --cases cnn --json "$OUT/core_speed_${DEVICE}_cnn.json"
tail -n 20 "$OUT/core_speed_cnn.log"

cat "$OUT/summary.txt"
exit "$status"
